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
import shlex
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lib.oe_agent import Setup, measure_startup, traced_run
from lib.peers import INSTALL_COMMAND, PEERS, PeerResult, install_peers
from lib.procs import BpfStats
from lib.report import (
    Results,
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
from lib.storm import Storm
from testkit.rotel import rotel_binary

SCALING_RATES = (500.0, 1000.0, 2000.0, 0.0)
SCALING_SECONDS = 10.0
LOW_LATENCY_ENV = {"OTEL_BLRP_SCHEDULE_DELAY": "100"}
LOW_LATENCY_ARGS = ["--poll-interval", "0.02"]
# A/B pairs for each peer: fewer than for otel-exec, to bound the run time.
MAX_PEER_PAIRS = 2


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


def peer_versions() -> str:
    versions = []
    for argv in (["bpftrace", "--version"], ["forkstat", "-h"], ["auditctl", "-v"]):
        if shutil.which(argv[0]):
            out = subprocess.run(argv, capture_output=True, text=True, check=False)
            versions.append((out.stdout or out.stderr).strip().splitlines()[0])
    return ", ".join(versions)


def render(results: Results, plan: Plan, command: str, started: datetime.datetime, about: str) -> str:
    parts = [
        *section_head(f"## {started:%Y-%m-%d %H:%M} UTC", about, command),
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
