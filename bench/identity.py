#!/usr/bin/env python3
"""What executable identity (issue 16) costs: run as root.

    python3 bench/identity.py [--execs N] [--files N] [--output FILE]

1. Storm, warm cache: one unthrottled storm (bench/storm.py: 2 workers, N
   execs of /bin/true, default 10,000) without the agent, then one each with
   the agent exporting OTLP/gRPC to a fresh rotel: identity off
   (--no-executable-identity), build ids and htlhash only
   (--no-executable-sha256), and the default (SHA-256 too). The storm runs
   one file, so every exec after the first is a cache hit. Per setting: exec
   rate, the agent's CPU per storm exec, latency kernel event -> collector.
2. In-process, cold and warm cache: ExecutableIdentities.on_exec on
   events for N distinct copies of /bin/true (cold: every exec opens the
   file and hashes it on the worker) and N execs of one (warm), as the
   agent's reader thread calls it. Per setting: CPU of the reader thread
   and of the whole process (the worker included) per exec, and the time
   from the exec to its value (the reader's wait, the worker's queue and
   computation).

The tables are printed and appended to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from lib.oe_agent import Setup, traced_run
from lib.procs import ticks_to_us
from lib.report import percentile_ms, table
from lib.session import REPO, WORKERS, Session, agent_python, machine, publish, say
from lib.storm import Storm
from otel_exec.host.executables import ExecutableIdentities
from testkit.exe_reference import exec_event
from testkit.rotel import rotel_binary

SETTINGS: list[tuple[str, list[str]]] = [
    ("identity off (--no-executable-identity)", ["--no-executable-identity"]),
    ("build ids + htlhash (--no-executable-sha256)", ["--no-executable-sha256"]),
    ("default (build ids, htlhash, SHA-256)", []),
]


def storm_rows(execs: int, started: datetime.datetime) -> list[list[str]]:
    rows = []
    with Session("oebench-identity-", "bench: did not finish; logs kept in") as session:
        storm = Storm(session.children, session.workdir, WORKERS)
        setup = Setup(session.children, agent_python(), REPO, rotel_binary(agent_python()), storm, session.workdir,
                      run_id=started.strftime("%Y%m%dT%H%M%S"))
        untraced = storm.run(execs, 0, f"{setup.run_id}-untraced")
        say(f"untraced: {untraced.rate:,.0f} execs/s")
        rows.append(["untraced", f"{untraced.rate:,.0f} (1.00)", "", "", ""])
        isolate = ["--path-prefix", str(storm.program)]
        for i, (label, knob) in enumerate(SETTINGS):
            run = traced_run(setup, f"identity-{i}", execs, 0, [*knob, *isolate],
                             storm_key=("otel_exec.cmdpath", str(storm.program)))
            p50, p99 = percentile_ms(run.latency_ms, 50), percentile_ms(run.latency_ms, 99)
            rows.append([label, f"{run.storm.rate:,.0f} ({run.storm.rate / untraced.rate:.2f})",
                         f"{run.recorded:,}", f"{ticks_to_us(run.agent_ticks) / execs:.1f}",
                         f"{p50 / 1000:.3f} / {p99 / 1000:.3f}" if p50 is not None and p99 is not None else ""])
            say(f"{label}: " + ", ".join(rows[-1][1:]))
        session.ok = True
    return rows


def in_process_rows(files: int) -> list[list[str]]:
    """Cold: `files` distinct copies of /bin/true; warm: that many execs of
    one. The reader waits up to the default bound, as the agent does."""
    true = os.path.realpath(shutil.which("true") or "/bin/true")
    rows = []
    with tempfile.TemporaryDirectory(prefix="oebench-identity-") as tmp:
        copies = []
        for i in range(files):
            path = os.path.join(tmp, f"true-{i}")
            shutil.copy(true, path)
            copies.append(path)
        for sha_label, cap in (("build ids + htlhash", None), ("default (with SHA-256)", 256 << 20)):
            for cache, paths in (("cold", copies), ("warm", [copies[0]] * files)):
                events = [exec_event(p) for p in paths]
                ids = ExecutableIdentities(sha256_max_bytes=cap)
                ids.start()
                if cache == "warm":
                    ids.on_exec(exec_event(copies[0]))  # the one miss, outside the measurement
                to_value: list[float] = []
                cpu0, thread0 = time.process_time(), time.thread_time()
                for ev in events:
                    began = time.perf_counter()
                    slot = ids.on_exec(ev)
                    if slot is not None:
                        slot.done.wait()
                    to_value.append(time.perf_counter() - began)
                thread_us = (time.thread_time() - thread0) / files * 1e6
                cpu_us = (time.process_time() - cpu0) / files * 1e6
                ids.stop()
                to_value.sort()
                hist = Counter(int(v * 1e6) for v in to_value)
                p50, p99 = percentile_ms(hist, 50), percentile_ms(hist, 99)
                rows.append([sha_label, cache, f"{thread_us:.1f}", f"{cpu_us:.1f}", f"{p50} / {p99}",
                             f"{ids.computed:,}", f"{ids.cache_hits:,}",
                             f"{sum(1 for ev in events if ev.executable_identity.status == 'pending'):,}"])
                say(f"in-process {sha_label} {cache}: " + ", ".join(rows[-1][2:]))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--execs", type=int, default=10_000, help="execs per storm (default 10000)")
    parser.add_argument("--files", type=int, default=2_000, help="execs in-process per setting (default 2000)")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md",
                        help="Markdown file the tables are appended to (default: BENCHMARKS.md)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root (the agent needs it)", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.UTC)
    about = machine()
    storm = storm_rows(args.execs, started)
    local = in_process_rows(args.files)
    command = shlex.join(["python3", "bench/identity.py", *argv])
    publish(args.output, render(storm, local, args.execs, args.files, started, about, command), say)
    return 0


def render(storm: list[list[str]], local: list[list[str]], execs: int, files: int, started: datetime.datetime,
           about: str, command: str) -> str:
    true = os.path.realpath(shutil.which("true") or "/bin/true")
    return "\n".join([
        f"## {started:%Y-%m-%d %H:%M} UTC: executable identity (issue 16)",
        "",
        f"Machine: {about}.",
        "",
        "Command (as root, from the repository root):",
        "",
        f"    {command}",
        "",
        (f"Storm, warm cache: one unthrottled storm of {execs:,} execs per setting ({WORKERS} workers, "
         "/bin/true: one file, so one computation and cache hits after it), the agent exporting OTLP/gRPC to "
         "rotel on loopback, --path-prefix set to the storm's program."),
        "",
        table(["setting", "execs/s (vs untraced)", "at collector", "agent µs/exec", "latency p50 / p99 s"],
              storm),
        "",
        (f"In-process, cold and warm cache: ExecutableIdentities.on_exec for {files:,} events, as the reader "
         f"thread calls it; cold: {files:,} distinct copies of {true} ({os.path.getsize(true):,} bytes), each "
         "opened and hashed on the worker; warm: one file, after its one computation. Reader µs: CPU of the "
         "calling thread per exec; process µs: CPU of the process (worker included) per exec; to value: "
         "wall time from the call to the value (the reader's bounded wait, then the worker), p50 / p99 in µs; "
         "pending: execs whose record would have gone out pending (the default 5 ms wait was not enough)."),
        "",
        table(["setting", "cache", "reader µs/exec", "process µs/exec", "to value p50 / p99 µs", "computed",
               "cache hits", "pending"], local),
    ]) + "\n"


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
