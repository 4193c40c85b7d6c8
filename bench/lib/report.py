"""Tables of the benchmark (Markdown, printed and appended to BENCHMARKS.md)."""

from __future__ import annotations

import math
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from lib.oe_agent import TracedRun
from lib.peers import PeerResult
from lib.procs import CLK_TCK, kb_to_mb

# The targets of issue 4 ("Keep up with any exec storm").
TARGET_RATE_RATIO = 0.95
TARGET_CPU_US = 25.0
TARGET_RSS_MB = 60.0
# "Flat over a long run": RSS may grow at most this much from a quarter of
# the sustained storm to its end (early growth is warm-up: caches, tables).
TARGET_RSS_GROWTH_MB = 5.0
TARGET_STARTUP_S = 0.5
TARGET_P99_S = 1.5

HEADER = """# Benchmarks

Measured by `bench/run.py` (run as root: `python3 bench/run.py`, `--help` for
options), which appends one section per run below. The storm is `testkit/storm.c`:
2 workers fork+execve `/bin/true` (through a symlink at a unique path), with a
fixed 16-variable environment plus a marker variable; otel-exec exports
OTLP/gRPC to a real collector (rotel on loopback) whose processor counts the
storm's records and their latency. The same run measures bpftrace, forkstat
and auditd on the same storm (`--install-peers` installs them) and a scaling
series (500, 1,000, 2,000 execs/s and unthrottled).

Targets (issue 4), on a 2-core machine with the full field set (argv, env):

- Completeness: 20,000 of 20,000 storm execs arrive at the collector, kernel
  loss counters at zero; the same for a sustained storm of 60 s.
- Overhead: exec rate with the agent at least 0.95 of the untraced rate
  (alternating untraced/traced runs, ratio of medians).
- Agent CPU: at most 25 µs (user + system, all threads) per exec, from storm
  start until the collector has received everything.
- Memory: peak RSS (VmHWM) at most 60 MB; flat over a long run.
- Start-up: launch to probes attached and /proc seeded in at most 0.5 s.
- Latency: kernel event to collector receipt p99 at most 1.5 s with default
  batching; a documented lower-latency setting.

MB is 10^6 bytes. Latencies have 1 ms resolution.
"""


@dataclass
class Results:
    execs: int
    pairs: int
    untraced: list[float] = field(default_factory=list)  # execs/s
    traced: list[TracedRun] = field(default_factory=list)
    # A/B pairs with a collector that counts nothing (no benchmark processor)
    untraced_uncounted: list[float] = field(default_factory=list)
    uncounted: list[TracedRun] = field(default_factory=list)
    startup_s: list[float] = field(default_factory=list)
    low_latency: TracedRun | None = None
    sustained: TracedRun | None = None
    sustained_seconds: float = 0.0
    scaling: list[tuple[float, TracedRun]] = field(default_factory=list)  # (target rate, run); 0: unthrottled
    peers: list[PeerResult] = field(default_factory=list)
    peers_skipped: str | None = None


def percentile_ms(hist: Counter[int], p: float) -> int | None:
    """Nearest-rank percentile of a histogram of millisecond buckets."""
    total = sum(hist.values())
    if not total:
        return None
    rank = max(1, math.ceil(p / 100 * total))
    seen = 0
    for ms in sorted(hist):
        seen += hist[ms]
        if seen >= rank:
            return ms
    raise AssertionError("unreachable: rank <= total")


def _s(ms: int | None) -> str:
    return "n/a" if ms is None else f"{ms / 1000:.3f}"


def _latency(hist: Counter[int]) -> str:
    return f"{_s(percentile_ms(hist, 50))} / {_s(percentile_ms(hist, 99))} / {_s(max(hist) if hist else None)}"


def _n(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _pairs(n: int) -> str:
    return f"{n} pair" + ("" if n == 1 else "s")


def _other_execs(run: TracedRun) -> int:
    return run.counters.get("exec_seen", 0) - run.storm.execs


def _mark(ok: bool) -> str:
    return "pass" if ok else "**FAIL**"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _complete(run: TracedRun) -> bool:  # counted runs only
    return run.recorded == run.storm.execs and run.kernel_lost == 0


def _rss_growth_mb(run: TracedRun) -> float:
    samples = run.rss_kb
    return kb_to_mb(samples[-1] - samples[len(samples) // 4])


def targets_table(r: Results) -> str:
    rows = []
    runs = r.traced
    rows.append([
        f"Completeness, {_n(r.execs)}-exec storms",
        f"{_n(r.execs)} of {_n(r.execs)}, kernel loss 0",
        "; ".join(f"{_n(t.recorded)} (lost {t.kernel_lost})" for t in runs),
        _mark(all(_complete(t) for t in runs)),
    ])
    if r.sustained is not None:
        s = r.sustained
        rows.append([
            f"Completeness, sustained {r.sustained_seconds:.0f} s unthrottled",
            "all, kernel loss 0",
            f"{_n(s.recorded)} of {_n(s.storm.execs)} in {s.storm.seconds:.1f} s; lost {s.kernel_lost}",
            _mark(_complete(s)),
        ])
    untraced, traced = statistics.median(r.untraced), statistics.median(t.storm.rate for t in runs)
    ratio = traced / untraced
    if r.uncounted:
        plain_untraced = statistics.median(r.untraced_uncounted)
        plain_traced = statistics.median(t.storm.rate for t in r.uncounted)
        plain_ratio = plain_traced / plain_untraced
        rows.append([
            "Overhead: exec rate traced / untraced, collector as users run it",
            f">= {TARGET_RATE_RATIO}",
            (f"{plain_ratio:.3f} ({_n(plain_traced)}/s vs {_n(plain_untraced)}/s, medians of "
             f"{_pairs(len(r.uncounted))}; rotel without the counting processor)"),
            _mark(plain_ratio >= TARGET_RATE_RATIO),
        ])
        rows.append([
            "Overhead with the benchmark's counting collector",
            "info",
            (f"{ratio:.3f} ({_n(traced)}/s vs {_n(untraced)}/s, medians of {_pairs(len(runs))}; "
             "the processor's CPU is taken from the storm too)"),
            "info",
        ])
        rows.append(_overhead_budget(r, plain_untraced, plain_ratio))
    else:
        rows.append([
            "Overhead: exec rate traced / untraced",
            f">= {TARGET_RATE_RATIO}",
            f"{ratio:.3f} ({_n(traced)}/s vs {_n(untraced)}/s, medians of {_pairs(len(runs))})",
            _mark(ratio >= TARGET_RATE_RATIO),
        ])
    cpu = [t.agent_us_per_exec for t in runs]
    rows.append([
        "Agent CPU per exec (user + system)",
        f"<= {TARGET_CPU_US:.0f} µs",
        f"{statistics.median(cpu):.1f} µs median (runs: {', '.join(f'{c:.1f}' for c in cpu)})",
        _mark(statistics.median(cpu) <= TARGET_CPU_US),
    ])
    peak_runs = runs + r.uncounted + ([r.sustained] if r.sustained else [])
    peak = max(kb_to_mb(t.hwm_kb) for t in peak_runs)
    rows.append([
        "Peak RSS (VmHWM)",
        f"<= {TARGET_RSS_MB:.0f} MB",
        f"{peak:.1f} MB (max of {len(peak_runs)} runs)",
        _mark(peak <= TARGET_RSS_MB),
    ])
    if r.sustained is not None:
        s = r.sustained
        growth = _rss_growth_mb(s)
        rows.append([
            "RSS flat over the sustained storm",
            f"growth from 1/4 to end <= {TARGET_RSS_GROWTH_MB:.0f} MB",
            (f"{kb_to_mb(s.rss_kb[len(s.rss_kb) // 4]):.1f} -> {kb_to_mb(s.rss_kb[-1]):.1f} MB "
             f"({len(s.rss_kb)} samples)"),
            _mark(growth <= TARGET_RSS_GROWTH_MB),
        ])
    startup = statistics.median(r.startup_s)
    rows.append([
        "Start-up: launch to ready file, idle machine",
        f"<= {TARGET_STARTUP_S} s",
        f"{startup:.3f} s median of {len(r.startup_s)} ({', '.join(f'{t:.3f}' for t in r.startup_s)})",
        _mark(startup <= TARGET_STARTUP_S),
    ])
    hist: Counter[int] = Counter()
    for t in runs:
        hist.update(t.latency_ms)
    p99 = percentile_ms(hist, 99)
    rows.append([
        "Latency kernel event -> collector, default batching",
        f"p99 <= {TARGET_P99_S} s",
        f"p50 / p99 / max {_latency(hist)} s over {_n(sum(hist.values()))} records",
        _mark(p99 is not None and p99 / 1000 <= TARGET_P99_S),
    ])
    if r.low_latency is not None:
        low = r.low_latency
        rows.append([
            "Latency, OTEL_BLRP_SCHEDULE_DELAY=100 --poll-interval 0.02",
            "documented lower-latency setting",
            (f"p50 / p99 / max {_latency(low.latency_ms)} s; {_n(low.recorded)} of {_n(low.storm.execs)}, "
             f"lost {low.kernel_lost}; {low.agent_us_per_exec:.1f} µs/exec; rate {_n(low.storm.rate)}/s"),
            "info",
        ])
    return table(["target", "goal", "measured", "result"], rows)


def _kernel_us_per_exec(run: TracedRun | None) -> float | None:
    """Time in the agent's BPF programs (exec, exit, prepare_exec) per
    storm exec, if the run had kernel.bpf_stats_enabled on."""
    if run is None or not run.bpf_ns:
        return None
    return run.bpf_ns / run.storm.execs / 1000


def _overhead_budget(r: Results, untraced_rate: float, measured_ratio: float) -> list[str]:
    """Where the storm's lost rate goes: every µs of CPU the agent, the
    collector or the BPF programs use comes out of the storm's, since the
    storm keeps both cores busy."""
    budget = (os.cpu_count() or 1) * 1e6 / untraced_rate
    # The counted runs' agent CPU: measured up to the moment the collector
    # had everything, not over a fixed drain.
    agent = statistics.median(t.agent_us_per_exec for t in r.traced)
    collector = statistics.median(t.collector_us_per_exec for t in r.uncounted)
    kernel = _kernel_us_per_exec(r.sustained)
    used = agent + collector + (kernel or 0)
    parts = [f"agent {agent:.1f} µs", f"collector {collector:.1f} µs",
             f"BPF programs {kernel:.1f} µs" if kernel is not None else "BPF programs not measured"]
    return [
        "Where the overhead goes (per exec)",
        "info",
        (f"untraced, the storm uses {budget:.0f} µs of CPU per exec (both cores busy); tracing adds "
         f"{', '.join(parts)} (agent: counted runs; collector: uncounted runs; BPF: sustained run, "
         f"kernel.bpf_stats_enabled) = {used:.1f} µs, so a ratio of {budget / (budget + used):.3f} is expected "
         f"from CPU alone (measured {measured_ratio:.3f}). The collector's share alone caps the ratio at "
         f"{budget / (budget + collector):.3f}; at the 25 µs agent target, {budget / (budget + TARGET_CPU_US + collector + (kernel or 0)):.3f}"),
        "info",
    ]


def runs_table(r: Results) -> str:
    runs = list(r.traced) + list(r.uncounted)
    runs += [t for t in (r.low_latency, r.sustained) if t is not None]
    runs += [t for _, t in r.scaling]
    rows = [[
        t.label,
        _n(t.storm.execs),
        _n(t.storm.rate),
        _n(t.recorded),
        str(t.kernel_lost),
        str(t.export_lost),
        f"{t.agent_us_per_exec:.1f}",
        f"{kb_to_mb(t.hwm_kb):.1f}",
        _latency(t.latency_ms),
        f"{t.settle_seconds:.1f}",
        f"{t.collector_us_per_exec:.1f} ({t.processor_us_per_exec:.1f})",
        _n(_other_execs(t)),
    ] for t in runs]
    untraced = ", ".join(_n(rate) for rate in r.untraced)
    if r.uncounted:
        untraced += "; before the uncounted runs: " + ", ".join(_n(rate) for rate in r.untraced_uncounted)
    return (table(["run", "execs", "execs/s", "at collector", "kernel lost", "export lost",
                   "agent µs/exec", "peak RSS MB", "latency p50/p99/max s", "drain s", "rotel µs/exec (processor)", "other execs"], rows)
            + f"\n\nUntraced storm rates (execs/s): {untraced}. \"drain\": storm end until the collector "
            "had all it got; agent CPU counts until then. Kernel lost: sum of lost_* counters; export lost: "
            "logs_failed + logs_queue_overflow + logs_unsent. rotel: the collector's CPU over the same span "
            "(in parentheses, the part spent in the benchmark's counting processor). Other execs: execs the "
            "agent saw (exec_seen) besides the storm's, while it ran; more than a handful means other work "
            "on the machine, whose execs the agent and the collector also handled (and which the CPU per "
            "storm exec includes). \"uncounted\" runs: the collector without the counting processor, so "
            "nothing is counted there (n/a) and the agent's CPU is taken 7 s after the storm (its last spans "
            "wait up to 5 s).")


def peers_table(r: Results) -> str:
    rows = []
    runs = r.traced
    rate_runs, rate_untraced = (r.uncounted, r.untraced_uncounted) if r.uncounted else (runs, r.untraced)
    rows.append([
        "otel-exec (full field set, OTLP/gRPC)",
        f"{statistics.median(t.storm.rate for t in rate_runs) / statistics.median(rate_untraced):.3f}",
        ", ".join(_n(t.recorded) for t in runs),
        f"{statistics.median(t.agent_us_per_exec for t in runs):.1f} µs",
        f"{max(kb_to_mb(t.hwm_kb) for t in runs + r.uncounted):.1f} MB",
        (f"{_pairs(len(runs))}" + (f" counted, {_pairs(len(r.uncounted))} for the rate (collector without the "
                                   "counting processor)" if r.uncounted else "")
         + f"; other execs seen: {', '.join(_n(_other_execs(t)) for t in runs)}"),
    ])
    for p in r.peers:
        if p.unavailable is not None:
            rows.append([p.name, p.unavailable, "", "", "", ""])
            continue
        notes = [_pairs(len(p.runs)), "other execs seen: " + ", ".join(_n(max(0, run.seen - r.execs)) for run in p.runs)]
        notes += [n for run in p.runs for n in run.notes]
        rows.append([
            p.name,
            f"{statistics.median(run.rate for run in p.runs) / statistics.median(p.untraced_rates):.3f}",
            ", ".join(_n(run.recorded) for run in p.runs),
            f"{statistics.median(run.cpu_us_per_exec for run in p.runs):.1f} µs",
            f"{max(run.hwm_mb for run in p.runs):.1f} MB",
            "; ".join(dict.fromkeys(notes)),
        ])
    return table(["tracer", "exec rate vs untraced", f"storm execs recorded of {_n(r.execs)}",
                  "tracer CPU per exec", "peak RSS", "notes"], rows)


def scaling_table(r: Results) -> str:
    rows = []
    for target, t in r.scaling:
        busy = t.storm.seconds + t.settle_seconds
        rows.append([
            "unthrottled" if target == 0 else _n(target),
            _n(t.storm.rate),
            _n(t.storm.execs),
            _n(t.recorded),
            str(t.kernel_lost),
            f"{t.agent_us_per_exec:.1f}",
            f"{100 * t.agent_ticks / busy / CLK_TCK:.1f}",
            f"{kb_to_mb(t.hwm_kb):.1f}",
            _n(_other_execs(t)),
        ])
    return table(["target execs/s", "achieved execs/s", "execs", "at collector", "kernel lost",
                  "agent µs/exec", "agent % of a core", "peak RSS MB", "other execs"], rows)

