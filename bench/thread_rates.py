#!/usr/bin/env python3
"""The agent's CPU per thread, its context switches and page faults, idle and
at given exec rates: where the cost of a slow trickle of execs goes (fixed
costs per wake-up and per request against costs per exec). Run as root:

    python3 bench/thread_rates.py --trees TREE[,TREE...] [--rounds N] [--idle S] [--rates 100,500,0]

Each round starts, for each tree in turn (the order alternates round by
round, for A/B under load), rotel and `python -m otel_exec run` from that
tree (OTLP/gRPC, spool on, as bench/run.py runs it, plus --path-prefix set
to the storm's program: other execs on a shared machine are dropped in the
kernel), waits until it is idle, then measures S seconds of idle and one
storm per rate (testkit/storm.c, 10 s of execs at that rate; 0: unthrottled,
--unthrottled execs), each until the collector had every storm record, as
bench/run.py's scaling rows do. Per thread: CPU from
/proc/PID/task/TID/schedstat (ns), voluntary/involuntary context switches,
minor faults; per exec of the storm and per second. "foreign" is the forks
of the rest of the machine meanwhile (/proc/stat): their exits still reach
the reader (each costs it well under a microsecond), so they are reported,
not subtracted. Threads are named by their order of creation: main (the
reader), then the export threads (logs, traces), the identity worker, the
metrics thread; "t?" when pids wrapped.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.oe_agent import AgentProcess, wait_for_collector, wait_idle  # noqa: E402
from lib.procs import Children, cpu_ticks, ticks_to_us  # noqa: E402
from lib.rotel_collector import Rotel  # noqa: E402
from lib.session import WORKERS, Session, agent_python, load_average  # noqa: E402
from lib.storm import MARKER_KEY, Storm  # noqa: E402
from testkit.rotel import rotel_binary  # noqa: E402

ThreadSample = tuple[int, int, int, int]  # CPU ns, voluntary and involuntary switches, minor faults
NAMES = ("main", "logs", "traces", "identity", "metrics")
STORM_SECONDS = 10.0


def threads(pid: int) -> dict[int, ThreadSample]:
    out: dict[int, ThreadSample] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ns = int((task / "schedstat").read_text().split()[0])
            status = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines())
            minflt = int((task / "stat").read_text().rsplit(")", 1)[1].split()[7])
        except OSError:  # ended meanwhile
            continue
        out[int(task.name)] = (ns, int(status["voluntary_ctxt_switches"]), int(status["nonvoluntary_ctxt_switches"]),
                               minflt)
    return out


def forks() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("processes "):
            return int(line.split()[1])
    raise KeyError("processes not in /proc/stat")


def describe(pid: int, before: dict[int, ThreadSample], after: dict[int, ThreadSample], per: float,
             unit: str) -> str:
    order = [pid] + sorted(t for t in after if t != pid)
    wrapped = any(t < pid for t in after)
    parts = [f"all {sum(after[t][0] - before.get(t, (0, 0, 0, 0))[0] for t in after) / 1000 / per:.2f} {unit}"]
    for i, tid in enumerate(order):
        ns, vol, invol, flt = (a - b for a, b in zip(after[tid], before.get(tid, (0, 0, 0, 0))))
        if ns or vol:
            name = NAMES[i] if i < len(NAMES) and not (wrapped and i) else f"t{i}"
            parts.append(f"{name} {ns / 1000 / per:.2f} (cs {vol}/{invol}, pf {flt})")
    return "; ".join(parts)


def measure(tree: Path, storm: Storm, children: Children, workdir: Path, label: str, idle_s: float,
            rates: list[float], unthrottled: int) -> None:
    run_dir = workdir / label
    run_dir.mkdir()
    rotel = Rotel(children, rotel_binary(agent_python()), run_dir, MARKER_KEY, label, storm.binary)
    rotel.start()
    agent = AgentProcess(children, agent_python(), tree, run_dir, rotel.grpc_endpoint,
                         ["--path-prefix", str(storm.program)], {})
    agent.start()
    time.sleep(1.0)
    wait_idle(agent)
    pid = agent.pid
    if idle_s:
        before, forks_before = threads(pid), forks()
        time.sleep(idle_s)
        print(f"{tree.name} idle: foreign {(forks() - forks_before) / idle_s:.0f}/s; "
              f"{describe(pid, before, threads(pid), idle_s * 1000, 'µs/ms')}", flush=True)
    for rate in rates:
        total = round(rate * STORM_SECONDS) if rate else unthrottled
        rotel.poll()
        before, forks_before, started = threads(pid), forks(), time.monotonic()
        ticks_before = cpu_ticks(pid)
        result = storm.run(total, rate, label)
        wait_for_collector(rotel, agent, total + rotel.received.storm)
        after, seconds = threads(pid), time.monotonic() - started
        foreign = forks() - forks_before - result.execs
        setting = f"{rate:g}/s" if rate else "unthrottled"
        print(f"{tree.name} {setting} ({result.rate:.0f}/s, {result.execs} execs, {seconds:.1f} s, "
              f"agent {ticks_to_us(cpu_ticks(pid) - ticks_before) / result.execs:.1f} µs/exec by clock ticks), "
              f"foreign {foreign / seconds:.0f}/s:\n"
              f"    per exec: {describe(pid, before, after, result.execs, 'µs')}\n"
              f"    per second: {describe(pid, before, after, seconds * 1000, 'ms')}", flush=True)
    agent.stop()
    rotel.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", required=True, help="comma-separated checkouts whose otel_exec is run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--idle", type=float, default=0.0, metavar="SECONDS", help="idle measurement first")
    parser.add_argument("--rates", default="100,500,0", help="execs/s, comma-separated; 0: unthrottled")
    parser.add_argument("--unthrottled", type=int, default=10000, help="execs of an unthrottled storm")
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    with Session("oethreads-", "thread_rates: did not finish; logs kept in") as session:
        storm = Storm(session.children, session.workdir, WORKERS)
        n = 0
        for round_ in range(args.rounds):
            for tree in trees if round_ % 2 == 0 else trees[::-1]:
                n += 1
                print(f"-- round {round_ + 1}: {tree}, load average {load_average()}, "
                      f"{time.strftime('%H:%M:%S', time.gmtime())} UTC", flush=True)
                measure(tree, storm, session.children, session.workdir, f"r{n}", args.idle, rates, args.unthrottled)
        session.ok = True


if __name__ == "__main__":
    main()
