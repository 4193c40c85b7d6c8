#!/usr/bin/env python3
"""otel-exec's performance benchmark (issue 14), in one command: run as root.

    python3 bench/run.py [--pairs N] [--execs N] [--quick] [--only SECTION,...] [--soak SECONDS]
                         [--storm-only] [--install-peers | --no-peers] [--output FILE]

Sections, in order, each traced run on loopback with a fresh rotel collector:
  startup    launch to ready file, a few times, while the machine is idle;
  pairs      A/B pairs: untraced storm, then traced storm (completeness and
             argv, kernel and export loss, agent CPU, bytes on the wire,
             peak RSS, latency kernel event -> collector); the A/B pairs again
             with the collector as a user runs it, without the benchmark's
             counting processor (the exec rate the target is about); one
             traced storm with the low-latency setting;
  sustained  an unthrottled storm of 60 s: completeness, RSS over time, the
             BPF programs' run time;
  scaling    agent CPU per exec against the exec rate (100, 500, 1,000/s,
             unthrottled), the environment (1, 50, 300 variables), the argv
             (1 KiB, 100 KiB), the live processes (1,000 and 60,000, held
             sleeping from before the agent starts) and compression (gzip);
  peers      bpftrace (execsnoop with argv), forkstat, auditd and a psutil
             poller, A/B against untraced storms, checked against the storm's
             own command line;
  soak       with --soak SECONDS: a storm at 1,000 execs/s that long, RSS
             sampled every second (flat within 5 %).
Then it prints the tables and appends them to BENCHMARKS.md. Every process it
started is stopped, and every kernel setting it changed restored, on exit,
error or Ctrl-C. The default run (every section but soak) should take about
15 minutes on an idle 2-core machine; the report says how long it took.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lib.oe_agent import Setup, measure_startup, traced_run
from lib.peers import INSTALL_COMMAND, PEERS, PeerResult, install_peers, psutil_python
from lib.procs import BpfStats, live_processes
from lib.report import (
    Results,
    ScalingRun,
    peers_table,
    runs_table,
    scaling_table,
    targets_table,
)
from lib.session import (
    IDLE_LOAD,
    REPO,
    WORKERS,
    Session,
    agent_python,
    load_average,
    machine,
    publish,
    say,
    section_head,
)
from lib.storm import STORM_ARGS, STORM_ENV, Storm, argv_of_bytes, synthetic_env
from testkit.rotel import rotel_binary

SECTIONS = ("startup", "pairs", "sustained", "scaling", "peers", "soak")
LOW_LATENCY_ENV = {"OTEL_BLRP_SCHEDULE_DELAY": "100"}
LOW_LATENCY_ARGS = ["--poll-interval", "0.02"]
# A/B pairs for each peer: fewer than for otel-exec, to bound the run time.
MAX_PEER_PAIRS = 2
SOAK_RATE = 1000.0
# The scaling series: each run lasts about this long (its rate times this
# many seconds of execs; unthrottled: the untraced rate's), except the
# slowest rate, which needs more execs for a CPU figure above the clock tick.
SCALING_SECONDS = 10.0
SLOW_RATE, SLOW_RATE_SECONDS = 100.0, 30.0


@dataclass(frozen=True)
class ScalingCase:
    axis: str
    setting: str
    rate: float = 0.0  # execs/s; 0: unthrottled
    args: tuple[str, ...] = STORM_ARGS
    env: dict[str, str] | None = None  # None: the storm's own
    live: int = 0  # live processes to have on the machine (held sleeping) before the agent starts
    agent_env: dict[str, str] | None = None


# The default storm's run is the unthrottled rate; each other axis changes one thing.
SCALING = (
    ScalingCase("exec rate", f"{SLOW_RATE:.0f}/s", rate=SLOW_RATE),
    ScalingCase("exec rate", "500/s", rate=500.0),
    ScalingCase("exec rate", "1,000/s", rate=1000.0),
    ScalingCase("exec rate", "unthrottled"),
    ScalingCase("environment", "1 variable", env=synthetic_env(1)),
    ScalingCase("environment", "50 variables", env=synthetic_env(50)),
    ScalingCase("environment", "300 variables", env=synthetic_env(300)),
    ScalingCase("argv", "1 KiB", args=argv_of_bytes(1024)),
    ScalingCase("argv", "100 KiB", args=argv_of_bytes(100 * 1024)),
    ScalingCase("live processes", "1,000", live=1000),
    ScalingCase("live processes", "60,000", live=60000),
    ScalingCase("compression", "gzip", agent_env={"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}),
)


@dataclass(frozen=True)
class Plan:
    sections: tuple[str, ...]
    execs: int
    pairs: int
    startup_runs: int
    sustained_seconds: float
    scaling_seconds: float
    peer_pairs: int
    soak_seconds: float
    storm_only: bool


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Plan]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, help="untraced/traced pairs (default 3; --quick: 1)")
    parser.add_argument("--execs", type=int, help="execs per A/B storm (default 20000; --quick: 2000)")
    parser.add_argument("--quick", action="store_true",
                        help=("smoke run: 2,000 execs, 1 pair, 10 s sustained; sections startup, pairs and "
                              "sustained unless --only names others (scaling runs of 2 s, 1 pair per peer)"))
    parser.add_argument("--only", type=lambda text: tuple(text.split(",")), metavar="SECTION,...",
                        help=f"run only these sections ({', '.join(SECTIONS)}), e.g. --only scaling")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                        help=f"add the soak section: {SOAK_RATE:,.0f} execs/s for SECONDS (issue 14: 600)")
    parser.add_argument("--storm-only", action="store_true",
                        help=("every agent with --path-prefix set to the storm's program: the execs of other work "
                              "on a shared machine are dropped in the kernel and cost nothing (not how users run "
                              "it: for comparing trees, e.g. bytes per exec, on a busy machine)"))
    peers = parser.add_mutually_exclusive_group()
    peers.add_argument("--install-peers", action="store_true", help=f"first run: {INSTALL_COMMAND}")
    peers.add_argument("--no-peers", action="store_true", help="skip the peers section")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md",
                        help="Markdown file the results are appended to (default: BENCHMARKS.md)")
    args = parser.parse_args(argv)
    pairs = args.pairs if args.pairs is not None else (1 if args.quick else 3)
    execs = args.execs if args.execs is not None else (2000 if args.quick else 20000)
    if pairs < 1 or execs < WORKERS:
        parser.error(f"--pairs must be >= 1 and --execs >= {WORKERS}")
    if args.only is not None and not set(args.only) <= set(SECTIONS):
        parser.error(f"--only: sections are {', '.join(SECTIONS)}")
    if args.soak < 0:
        parser.error("--soak must be >= 0")
    if args.only is not None:
        sections = tuple(s for s in SECTIONS if s in args.only)
    else:
        sections = ("startup", "pairs", "sustained") if args.quick else ("startup", "pairs", "sustained",
                                                                         "scaling", "peers")
        sections += ("soak",) if args.soak else ()
    if args.no_peers:
        sections = tuple(s for s in sections if s != "peers")
    if "soak" in sections and not args.soak:
        parser.error("section soak needs --soak SECONDS")
    plan = Plan(
        sections=sections,
        execs=execs,
        pairs=pairs,
        startup_runs=2 if args.quick else 5,
        sustained_seconds=10.0 if args.quick else 60.0,
        scaling_seconds=2.0 if args.quick else SCALING_SECONDS,
        peer_pairs=min(pairs, MAX_PEER_PAIRS),
        soak_seconds=args.soak,
        storm_only=args.storm_only,
    )
    return args, plan


def run_startup(setup: Setup, plan: Plan, results: Results) -> None:
    say(f"start-up: {plan.startup_runs} launches (after one warm-up)")
    results.startup_s = measure_startup(setup, plan.startup_runs)
    say("start-up seconds: " + ", ".join(f"{t:.3f}" for t in results.startup_s))


def run_pairs(setup: Setup, plan: Plan, results: Results) -> None:
    for i in range(plan.pairs):
        untraced = setup.storm.run(plan.execs, 0, f"{setup.run_id}-a{i}")
        results.untraced.append(untraced.rate)
        say(f"pair {i + 1}/{plan.pairs}: untraced {untraced.rate:,.0f} execs/s")
        traced = traced_run(setup, f"traced-{i + 1}", plan.execs, 0)
        results.traced.append(traced)
        say(f"pair {i + 1}/{plan.pairs}: traced {traced.storm.rate:,.0f} execs/s, "
            f"{traced.recorded:,} of {plan.execs:,} at the collector ({traced.argv_ok:,} with the storm's argv), "
            f"kernel lost {traced.kernel_lost}, {traced.agent_us_per_exec:.1f} µs/exec, "
            f"{traced.wire_bytes_per_exec:,.0f} B/exec on the wire")

    for i in range(plan.pairs):
        untraced = setup.storm.run(plan.execs, 0, f"{setup.run_id}-p{i}")
        results.untraced_uncounted.append(untraced.rate)
        traced = traced_run(setup, f"uncounted-{i + 1}", plan.execs, 0, count=False)
        results.uncounted.append(traced)
        say(f"uncounted pair {i + 1}/{plan.pairs}: untraced {untraced.rate:,.0f}, traced {traced.storm.rate:,.0f} "
            f"execs/s, kernel lost {traced.kernel_lost}, {traced.agent_us_per_exec:.1f} µs/exec")

    results.low_latency = traced_run(setup, "low-latency", plan.execs, 0, LOW_LATENCY_ARGS, LOW_LATENCY_ENV)
    say(f"low-latency: {results.low_latency.recorded:,} of {plan.execs:,}")


def untraced_rate(setup: Setup, plan: Plan, results: Results) -> float:
    """The unthrottled storm's rate: from the pairs if they ran, else measured now."""
    if not results.untraced:
        rate = setup.storm.run(plan.execs, 0, f"{setup.run_id}-sizing").rate
        results.untraced.append(rate)
        say(f"untraced storm: {rate:,.0f} execs/s")
    return statistics.median(results.untraced)


def run_sustained(setup: Setup, plan: Plan, results: Results) -> None:
    # Sized from the untraced rate so it lasts about sustained_seconds.
    sustained_execs = round(untraced_rate(setup, plan, results) * plan.sustained_seconds)
    say(f"sustained: {sustained_execs:,} execs (~{plan.sustained_seconds:.0f} s)")
    with BpfStats():  # the BPF programs' share of the overhead (report._overhead_budget)
        results.sustained = traced_run(setup, "sustained", sustained_execs, 0)
    results.sustained_seconds = plan.sustained_seconds
    say(f"sustained: {results.sustained.recorded:,} of {sustained_execs:,} in {results.sustained.storm.seconds:.1f} s")


def run_scaling(setup: Setup, plan: Plan, results: Results) -> None:
    unthrottled = untraced_rate(setup, plan, results)
    # The storm's program by the path it was exec'd by: a record that holds
    # the marker in a shaped-out part (many variables, a long argv) is still
    # counted.
    by_path = ("otel_exec.cmdpath", str(setup.storm.program))
    for case in SCALING:
        seconds = SLOW_RATE_SECONDS * plan.scaling_seconds / SCALING_SECONDS if case.rate == SLOW_RATE \
            else plan.scaling_seconds
        total = round((case.rate or unthrottled) * seconds)
        label = "scale-" + re.sub(r"[^a-z0-9]+", "-", f"{case.axis} {case.setting}".lower()).strip("-")
        storm_key = by_path if case.env is not None or case.args != STORM_ARGS else None
        with setup.storm.held(case.live) if case.live else contextlib.nullcontext():
            live = live_processes()
            run = traced_run(setup, label, total, case.rate, extra_env=case.agent_env, storm_key=storm_key,
                             args=case.args, env=case.env if case.env is not None else STORM_ENV)
        results.scaling.append(ScalingRun(case.axis, case.setting, run, live))
        say(f"scaling {case.axis} {case.setting}: {run.storm.rate:,.0f} execs/s, {run.recorded:,} of {total:,}, "
            f"{run.agent_us_per_exec:.1f} µs/exec, {run.wire_bytes_per_exec:,.0f} B/exec, {live:,} live processes")


def run_soak(setup: Setup, plan: Plan, results: Results) -> None:
    total = round(SOAK_RATE * plan.soak_seconds)
    say(f"soak: {total:,} execs at {SOAK_RATE:,.0f}/s (~{plan.soak_seconds:.0f} s)")
    results.soak = traced_run(setup, "soak", total, SOAK_RATE)
    say(f"soak: {results.soak.recorded:,} of {total:,}; RSS {results.soak.rss_kb[0]:,} -> "
        f"{results.soak.rss_kb[-1]:,} kB")


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
                    f"traced {run.rate:,.0f}/s, {run.recorded:,} recorded ({run.argv_ok:,} with the storm's argv), "
                    f"{run.cpu_us_per_exec:.1f} µs/exec")
        except Exception as e:  # noqa: BLE001 -- a peer that fails is reported in its row, the run goes on
            setup.children.stop_all()
            result.unavailable = "failed: " + " ".join(str(e).split())[:300]
            say(f"{peer.name}: {result.unavailable}")


SECTION_RUNNERS = {
    "startup": run_startup,
    "pairs": run_pairs,
    "sustained": run_sustained,
    "scaling": run_scaling,
    "peers": run_peers,
    "soak": run_soak,
}


def peer_versions() -> str:
    versions = []
    for argv in (["bpftrace", "--version"], ["forkstat", "-h"], ["auditctl", "-v"]):
        if shutil.which(argv[0]):
            out = subprocess.run(argv, capture_output=True, text=True, check=False)
            versions.append((out.stdout or out.stderr).strip().splitlines()[0])
    python = psutil_python()
    if python is not None:
        psutil = subprocess.run([python, "-c", "import psutil; print(psutil.__version__)"],
                                capture_output=True, text=True, check=False).stdout.strip()
        versions.append(f"psutil {psutil} ({python})")
    return ", ".join(versions)


def render(results: Results, plan: Plan, command: str, started: datetime.datetime, about: str,
           minutes: float) -> str:
    parts = [
        *section_head(f"## {started:%Y-%m-%d %H:%M} UTC", about, command),
        (f"Sections: {', '.join(plan.sections)}; the run took {minutes:.1f} minutes. "
         f"Storm: {WORKERS} workers, `/bin/true {shlex.join(STORM_ARGS)}`"
         + (f", {plan.execs:,} execs per A/B run, {plan.pairs} A/B pair(s)" if "pairs" in plan.sections else "")
         + "; collector: rotel on loopback (blackhole exporter, counting processor; the "
         "\"uncounted\" pairs without it), OTLP/gRPC, no compression."
         + (" Every agent ran with --path-prefix set to the storm's program (--storm-only): other execs on the "
            "machine were dropped in the kernel (exec_seen, hence \"other execs\", still counts them)." if plan.storm_only else "")),
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
    if "peers" not in plan.sections:
        parts.append(f"Not run (section peers not selected). The peers install with `{INSTALL_COMMAND}` "
                     "or --install-peers.")
    else:
        parts += [
            peers_table(results),
            "",
            (f"Peer versions: {peer_versions() or 'none installed'}. Tracer CPU: the tracer's own process "
             "(all threads; auditd with the kauditd kernel thread) from storm start until it had written "
             "everything; kernel work done in the exec'ing task (BPF program, audit hook) shows in the exec "
             "rate instead. Per exec recorded: that CPU over the share of the storm's execs the tracer "
             f"recorded. {plan.peer_pairs} A/B pair(s) per peer. Argv: the storm's execs whose command "
             "line, as the tracer reported it, is exactly the storm's (otel-exec: the log record's body)."),
        ]
    parts += ["", "### Scaling", ""]
    if results.scaling:
        parts += [
            scaling_table(results),
            "",
            (f"Each run: one traced storm of about {plan.scaling_seconds:.0f} s ({SLOW_RATE:.0f}/s: "
             f"{SLOW_RATE_SECONDS * plan.scaling_seconds / SCALING_SECONDS:.0f} s), the default storm (unthrottled, "
             f"{len(STORM_ENV) + 1} variables, {len(STORM_ARGS) + 1} arguments) but for the one setting of its "
             "axis. Environment: the storm's variables then made-up ones of ~55 bytes, the marker among them; "
             "argv: arguments of 64 bytes (the agent keeps --argv-max-bytes, 32 KiB by default); live processes: "
             "sleeping processes (`storm hold`) started before the agent, which reports them at start, "
             "kernel.pid_max raised for the run; \"agent busy after ready\": from its ready file until its CPU went idle "
             "(reporting the processes already running), before the storm started; gzip: OTEL_EXPORTER_OTLP_COMPRESSION=gzip. \"vs unthrottled "
             "default\": agent µs/exec over the unthrottled default run's."),
        ]
    else:
        parts.append("Not run.")
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    args, plan = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root (the agent and the peers need it)", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.UTC)
    command = shlex.join(["python3", "bench/run.py", *argv])
    about = machine()
    load = load_average()
    if load > IDLE_LOAD:
        say(f"warning: load average {load} > {IDLE_LOAD}: other work on this machine skews every number")
    if args.install_peers:
        say(f"installing peers: {INSTALL_COMMAND}")
        install_peers()

    with Session("oebench-", "bench: did not finish; logs kept in") as session:
        children, workdir = session.children, session.workdir
        storm = Storm(children, workdir, WORKERS)
        setup = Setup(children, agent_python(), REPO, rotel_binary(agent_python()), storm, workdir,
                      run_id=started.strftime("%Y%m%dT%H%M%S"),
                      agent_args=("--path-prefix", str(storm.program)) if args.storm_only else ())
        results = Results(execs=plan.execs, pairs=plan.pairs)
        say(f"work directory {workdir}; agent: {setup.python} -m otel_exec; collector: {setup.rotel}; "
            f"sections: {', '.join(plan.sections)}")
        for section in plan.sections:
            SECTION_RUNNERS[section](setup, plan, results)
        minutes = (datetime.datetime.now(datetime.UTC) - started).total_seconds() / 60
        say(f"all sections done in {minutes:.1f} minutes")
        publish(args.output, render(results, plan, command, started, about, minutes), say)
        session.ok = True
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)  # everything was stopped in main's finally
