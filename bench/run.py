#!/usr/bin/env python3
"""otel-exec's performance benchmark (issue 4), in one command: run as root.

    python3 bench/run.py [--pairs N] [--execs N] [--quick] [--install-peers | --no-peers] [--output FILE]

In order, each on loopback with a fresh rotel collector per traced run:
  1. start-up: launch to ready file, a few times, while the machine is idle;
  2. A/B pairs: untraced storm, then traced storm (completeness, kernel loss,
     agent CPU and peak RSS, latency kernel event -> collector);
  2b. A/B pairs again with the collector as a user runs it, without the
     benchmark's counting processor: the exec rate the target is about;
  3. one traced storm with the low-latency setting;
  4. a sustained unthrottled storm (60 s) for completeness and RSS over time;
  5. the scaling series (500, 1,000, 2,000 execs/s and unthrottled, 10 s each);
  6. the peers (bpftrace, forkstat, auditd), A/B against untraced storms.
Then it prints the tables and appends them to BENCHMARKS.md. Every process it
started is stopped on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from lib.oe_agent import Setup, measure_startup, traced_run
from lib.peers import INSTALL_COMMAND, PEERS, PeerResult, install_peers
from lib.procs import BpfStats, Children
from lib.report import (
    HEADER,
    Results,
    peers_table,
    runs_table,
    scaling_table,
    targets_table,
)
from lib.rotel_collector import find_rotel
from lib.storm import Storm

REPO = Path(__file__).resolve().parent.parent
WORKERS = 2
SCALING_RATES = (500.0, 1000.0, 2000.0, 0.0)
SCALING_SECONDS = 10.0
LOW_LATENCY_ENV = {"OTEL_BLRP_SCHEDULE_DELAY": "100"}
LOW_LATENCY_ARGS = ["--poll-interval", "0.02"]
# A/B pairs for each peer: fewer than for otel-exec, to bound the run time.
MAX_PEER_PAIRS = 2
# Above this 1-minute load average the machine is not idle enough to measure.
IDLE_LOAD = 0.5


@dataclass(frozen=True)
class Plan:
    execs: int
    pairs: int
    startup_runs: int
    sustained_seconds: float
    scaling: bool
    peer_pairs: int


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Plan]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, help="untraced/traced pairs (default 3; --quick: 1)")
    parser.add_argument("--execs", type=int, help="execs per A/B storm (default 20000; --quick: 2000)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2,000 execs, 1 pair, 10 s sustained, no scaling series")
    peers = parser.add_mutually_exclusive_group()
    peers.add_argument("--install-peers", action="store_true", help=f"first run: {INSTALL_COMMAND}")
    peers.add_argument("--no-peers", action="store_true", help="skip bpftrace, forkstat and auditd")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md",
                        help="Markdown file the results are appended to (default: BENCHMARKS.md)")
    args = parser.parse_args(argv)
    pairs = args.pairs if args.pairs is not None else (1 if args.quick else 3)
    execs = args.execs if args.execs is not None else (2000 if args.quick else 20000)
    if pairs < 1 or execs < WORKERS:
        parser.error(f"--pairs must be >= 1 and --execs >= {WORKERS}")
    plan = Plan(
        execs=execs,
        pairs=pairs,
        startup_runs=2 if args.quick else 5,
        sustained_seconds=10.0 if args.quick else 60.0,
        scaling=not args.quick,
        peer_pairs=min(pairs, MAX_PEER_PAIRS),
    )
    return args, plan


def agent_python() -> Path:
    venv = REPO / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"bench [{time.monotonic() - _T0:6.1f}s]: {message}", flush=True)


def run_otel_exec(setup: Setup, plan: Plan, results: Results) -> None:
    say(f"start-up: {plan.startup_runs} launches (after one warm-up)")
    results.startup_s = measure_startup(setup, plan.startup_runs)
    say("start-up seconds: " + ", ".join(f"{t:.3f}" for t in results.startup_s))

    for i in range(plan.pairs):
        untraced = setup.storm.run(plan.execs, 0, f"{setup.run_id}-a{i}")
        results.untraced.append(untraced.rate)
        say(f"pair {i + 1}/{plan.pairs}: untraced {untraced.rate:,.0f} execs/s")
        traced = traced_run(setup, f"traced-{i + 1}", plan.execs, 0)
        results.traced.append(traced)
        say(f"pair {i + 1}/{plan.pairs}: traced {traced.storm.rate:,.0f} execs/s, "
            f"{traced.recorded:,} of {plan.execs:,} at the collector, kernel lost {traced.kernel_lost}, "
            f"{traced.agent_us_per_exec:.1f} µs/exec")

    for i in range(plan.pairs):
        untraced = setup.storm.run(plan.execs, 0, f"{setup.run_id}-p{i}")
        results.untraced_uncounted.append(untraced.rate)
        traced = traced_run(setup, f"uncounted-{i + 1}", plan.execs, 0, count=False)
        results.uncounted.append(traced)
        say(f"uncounted pair {i + 1}/{plan.pairs}: untraced {untraced.rate:,.0f}, traced {traced.storm.rate:,.0f} "
            f"execs/s, kernel lost {traced.kernel_lost}, {traced.agent_us_per_exec:.1f} µs/exec")

    results.low_latency = traced_run(setup, "low-latency", plan.execs, 0, LOW_LATENCY_ARGS, LOW_LATENCY_ENV)
    say(f"low-latency: {results.low_latency.recorded:,} of {plan.execs:,}")

    # Sized from the untraced rate so it lasts about sustained_seconds.
    untraced_rate = statistics.median(results.untraced)
    sustained_execs = round(untraced_rate * plan.sustained_seconds)
    say(f"sustained: {sustained_execs:,} execs (~{plan.sustained_seconds:.0f} s)")
    with BpfStats():  # the BPF programs' share of the overhead (report._overhead_budget)
        results.sustained = traced_run(setup, "sustained", sustained_execs, 0)
    results.sustained_seconds = plan.sustained_seconds
    say(f"sustained: {results.sustained.recorded:,} of {sustained_execs:,} in {results.sustained.storm.seconds:.1f} s")

    if plan.scaling:
        for rate in SCALING_RATES:
            total = round((rate or untraced_rate) * SCALING_SECONDS)
            label = f"scale-{rate:.0f}" if rate else "scale-max"
            run = traced_run(setup, label, total, rate)
            results.scaling.append((rate, run))
            say(f"{label}: {run.storm.rate:,.0f} execs/s, {run.recorded:,} of {total:,}, "
                f"{run.agent_us_per_exec:.1f} µs/exec")


def run_peers(setup: Setup, plan: Plan, results: Results) -> None:
    for peer_class in PEERS:
        peer = peer_class(setup.children, setup.workdir, setup.storm)
        result = PeerResult(peer.name)
        results.peers.append(result)
        result.unavailable = peer.unavailable()
        if result.unavailable is not None:
            say(f"{peer.name}: {result.unavailable}")
            continue
        try:
            for i in range(plan.peer_pairs):
                untraced = setup.storm.run(plan.execs, 0, f"{setup.run_id}-{peer.name}-a{i}")
                result.untraced_rates.append(untraced.rate)
                run = peer.traced_run(plan.execs, f"{setup.run_id}-{peer.name}-b{i}")
                result.runs.append(run)
                say(f"{peer.name} pair {i + 1}/{plan.peer_pairs}: untraced {untraced.rate:,.0f}/s, "
                    f"traced {run.rate:,.0f}/s, {run.recorded:,} recorded, {run.cpu_us_per_exec:.1f} µs/exec")
        except Exception as e:  # noqa: BLE001 -- a peer that fails is reported in its row, the run goes on
            setup.children.stop_all()
            result.unavailable = "failed: " + " ".join(str(e).split())[:300]
            say(f"{peer.name}: {result.unavailable}")


def machine() -> str:
    meminfo = Path("/proc/meminfo").read_text().split()
    mem_gb = int(meminfo[meminfo.index("MemTotal:") + 1]) * 1024 / 1e9
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    python = subprocess.run([str(agent_python()), "--version"], capture_output=True, text=True,
                            check=False).stdout.strip()
    load = Path("/proc/loadavg").read_text().split()[0]
    return (f"Linux {platform.release()}, {os.cpu_count()} cores ({model}), {mem_gb:.1f} GB memory, "
            f"{python} (agent), load average {load} at start")


def peer_versions() -> str:
    versions = []
    for argv in (["bpftrace", "--version"], ["forkstat", "-h"], ["auditctl", "-v"]):
        if shutil.which(argv[0]):
            out = subprocess.run(argv, capture_output=True, text=True, check=False)
            versions.append((out.stdout or out.stderr).strip().splitlines()[0])
    return ", ".join(versions)


def render(results: Results, plan: Plan, command: str, started: datetime.datetime, about: str) -> str:
    parts = [
        f"## {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {about}.",
        "",
        "Command (as root, from the repository root):",
        "",
        f"    {command}",
        "",
        (f"Storm: {WORKERS} workers, {plan.execs:,} execs of /bin/true per A/B run, {plan.pairs} A/B pair(s); "
         "collector: rotel on loopback (blackhole exporter, counting processor; the \"uncounted\" pairs "
         "without it), OTLP/gRPC."),
        "",
        "### otel-exec against the targets",
        "",
        targets_table(results),
        "",
        "### otel-exec runs",
        "",
        runs_table(results),
        "",
        "### Peers, same storm, same run",
        "",
    ]
    if results.peers_skipped is not None:
        parts.append(results.peers_skipped)
    else:
        parts += [
            peers_table(results),
            "",
            (f"Peer versions: {peer_versions() or 'none installed'}. Tracer CPU: the tracer's own process "
             "(all threads; auditd with the kauditd kernel thread) from storm start until it had written "
             "everything; kernel work done in the exec'ing task (BPF program, audit hook) shows in the exec "
             f"rate instead. {plan.peer_pairs} A/B pair(s) per peer."),
        ]
    parts += ["", "### Scaling", ""]
    if results.scaling:
        parts.append(scaling_table(results))
    else:
        parts.append("Not run (--quick).")
    return "\n".join(parts) + "\n"


def append_report(path: Path, section: str) -> None:
    existing = path.read_text() if path.exists() else ""
    with path.open("a") as f:
        if not existing:
            f.write(HEADER)
        f.write("\n" + section)


def publish(output: Path, section: str, say: Callable[[str], None]) -> None:
    print()
    print(section)
    append_report(output, section)
    say(f"appended to {output}")


def _exit_on_signal(signum: int, _frame: types.FrameType | None) -> None:
    raise SystemExit(128 + signum)


class Session:
    """What every benchmark script does around its measurements. SIGTERM and
    SIGHUP unwind like Ctrl-C, through the cleanup; SIGINT does too, even
    when started from a shell that ignores it for background jobs. A fresh
    work directory and the processes started for it (children) are all
    stopped at the end; the directory is removed if the run set ok, else
    kept and named after `kept`."""

    def __init__(self, prefix: str, kept: str) -> None:
        self._prefix = prefix
        self._kept = kept
        self.ok = False

    def __enter__(self) -> Self:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _exit_on_signal)
        signal.signal(signal.SIGHUP, _exit_on_signal)
        self.workdir = Path(tempfile.mkdtemp(prefix=self._prefix))
        self.children = Children()
        return self

    def __exit__(self, *exc: object) -> None:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.children.stop_all()
        if self.ok:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print(f"{self._kept} {self.workdir}", file=sys.stderr)


def main(argv: list[str]) -> int:
    args, plan = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root (the agent and the peers need it)", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.UTC)
    command = shlex.join(["python3", "bench/run.py", *argv])
    about = machine()
    load = float(Path("/proc/loadavg").read_text().split()[0])
    if load > IDLE_LOAD:
        say(f"warning: load average {load} > {IDLE_LOAD}: other work on this machine skews every number")
    if args.install_peers:
        say(f"installing peers: {INSTALL_COMMAND}")
        install_peers()

    with Session("oebench-", "bench: did not finish; logs kept in") as session:
        children, workdir = session.children, session.workdir
        storm = Storm(children, workdir, WORKERS)
        setup = Setup(children, agent_python(), REPO, find_rotel(agent_python()), storm, workdir,
                      run_id=started.strftime("%Y%m%dT%H%M%S"))
        results = Results(execs=plan.execs, pairs=plan.pairs)
        say(f"work directory {workdir}; agent: {setup.python} -m otel_exec; collector: {setup.rotel}")
        run_otel_exec(setup, plan, results)
        if args.no_peers:
            results.peers_skipped = (f"Not run (--no-peers). Install them with `{INSTALL_COMMAND}` "
                                     "or run with --install-peers.")
        else:
            run_peers(setup, plan, results)
        publish(args.output, render(results, plan, command, started, about), say)
        session.ok = True
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)  # everything was stopped in main's finally
