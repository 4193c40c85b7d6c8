#!/usr/bin/env python3
"""What each cost knob of otel-exec saves (issue 4): run as root.

    python3 bench/knobs.py [--execs N] [--output FILE]

One unthrottled storm (bench/lib/storm.py: 2 workers, N execs of /bin/true,
default 10,000) without the agent, then one per setting, each with the
agent exporting OTLP/gRPC to a fresh rotel (bench/lib/oe_agent.traced_run):
the default, --no-field env, argv, paths and all five, --sample-rate 10,
and a comm filter that drops the whole storm. Per setting: the storm's exec
rate, storm records at the collector, the agent's CPU and the bytes it wrote
to its spool per storm exec, and the kernel time of its BPF programs per
storm exec (kernel.bpf_stats_enabled is on for the run, restored after).

Every setting also runs with --path-prefix set to the storm's program, so
that the execs of other work on the machine are dropped in the kernel
before any work and do not count as the storm's cost; the collector counts
storm records by otel_exec.cmdpath, which every setting collects. The
table is printed and appended to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
from pathlib import Path

from lib.oe_agent import Setup, TracedRun, traced_run
from lib.procs import BpfStats, ticks_to_us
from lib.report import table
from lib.session import REPO, WORKERS, Session, agent_python, machine, publish, say, section_head
from lib.storm import Storm
from testkit.rotel import rotel_binary

SETTINGS: list[tuple[str, list[str]]] = [
    ("default (every field)", []),
    ("--no-field env", ["--no-field", "env"]),
    ("--no-field argv", ["--no-field", "argv"]),
    ("--no-field paths", ["--no-field", "paths"]),
    ("--no-field argv,env,stdin,interpreter,paths", ["--no-field", "argv,env,stdin,interpreter,paths"]),
    ("--sample-rate 10", ["--sample-rate", "10"]),
    ("--exclude-comm true (drops the storm)", ["--exclude-comm", "true"]),
]


def row(label: str, run: TracedRun, untraced_rate: float) -> list[str]:
    execs = run.storm.execs
    return [
        label,
        f"{run.storm.rate:,.0f} ({run.storm.rate / untraced_rate:.2f})",
        f"{run.recorded:,}",
        f"{ticks_to_us(run.agent_ticks) / execs:.1f}",
        f"{run.bpf_ns / execs / 1000:.2f}",
        f"{run.written_bytes / execs:,.0f}",
        str(run.kernel_lost),
        f"{run.counters.get('exec_seen', 0) - execs:,}",
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--execs", type=int, default=10_000, help="execs per storm (default 10000)")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md",
                        help="Markdown file the table is appended to (default: BENCHMARKS.md)")
    args = parser.parse_args(argv)
    if args.execs < WORKERS:
        parser.error(f"--execs must be at least {WORKERS}")
    if os.geteuid() != 0:
        print("bench: run as root (the agent needs it)", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.UTC)
    about = machine()
    with Session("oebench-knobs-", "bench: did not finish; logs kept in") as session:
        children, workdir = session.children, session.workdir
        storm = Storm(children, workdir, WORKERS)
        setup = Setup(children, agent_python(), REPO, rotel_binary(agent_python()), storm, workdir,
                      run_id=started.strftime("%Y%m%dT%H%M%S"))
        untraced = storm.run(args.execs, 0, f"{setup.run_id}-untraced")
        say(f"untraced: {untraced.rate:,.0f} execs/s")
        rows = [["untraced", f"{untraced.rate:,.0f} (1.00)", "", "", "", "", "", ""]]
        isolate = ["--path-prefix", str(storm.program)]
        with BpfStats():
            for i, (label, knob) in enumerate(SETTINGS):
                run = traced_run(setup, f"knob-{i}", args.execs, 0, [*knob, *isolate],
                                 storm_key=("otel_exec.cmdpath", str(storm.program)))
                rows.append(row(label, run, untraced.rate))
                say(f"{label}: " + ", ".join(rows[-1][1:]))
        publish(args.output, render(rows, args.execs, started, about, shlex.join(["python3", "bench/knobs.py", *argv])),
                say)
        session.ok = True
    return 0


def render(rows: list[list[str]], execs: int, started: datetime.datetime, about: str, command: str) -> str:
    return "\n".join([
        *section_head(f"## {started:%Y-%m-%d %H:%M} UTC: cost knobs", about, command),
        (f"One unthrottled storm of {execs:,} execs per setting ({WORKERS} workers, /bin/true), the agent "
         "exporting OTLP/gRPC to rotel on loopback; every setting with --path-prefix set to the storm's "
         "program, so other execs on the machine are dropped in the kernel (see bench/knobs.py)."),
        "",
        table(["setting", "execs/s (vs untraced)", "at collector", "agent µs/exec", "BPF µs/exec",
               "spool bytes/exec", "kernel lost", "other execs"], rows),
        "",
        ("Agent µs/exec: user + system CPU of the agent, all threads, from storm start until the collector had "
         "every record it got, per storm exec (10 ms ticks). BPF µs/exec: run time of the agent's BPF programs "
         "(exec, exit, prepare_exec; kernel.bpf_stats_enabled) over the same span, per storm exec: it includes "
         "the exits of every process and the filtering of other execs. Spool bytes/exec: what the agent "
         "wrote (wchar), which is its spool of OTLP log records and spans. Other execs: execs the kernel saw "
         "besides the storm's while the agent ran (other work on the machine)."),
    ]) + "\n"


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
