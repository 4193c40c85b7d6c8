#!/usr/bin/env python3
"""Kernel cost per exec of each BPF program (CO-RE backend): run as root.

    python3 bench/bpf_cost.py [--execs N] [--rounds R] [--no-field GROUPS] [--object FILE] [--against FILE]
                              [--reader-lag SECONDS]

Loads and attaches the programs with the agent's loader (core/probes.py,
default settings unless --no-field), drains the ring in a thread with a
reader that does nothing with the records, and runs bench/lib/storm.py's
storm (testkit/storm.c: 2 workers, N execs of /bin/true through a symlink,
a fixed 16-variable environment) R times. The kernel times every program
run meanwhile (BPF_ENABLE_STATS, the same accounting as
kernel.bpf_stats_enabled=1, held by an fd, so another process resetting the
sysctl cannot end it mid-run); per program and round, run_time_ns / run_cnt
of its fdinfo over the storm is the cost of one run. The programs also run
for whatever else execs on the machine meanwhile: run it on a quiet machine,
or compare runs made one after the other. --object measures another build
of this tree's bpf/otel_exec.bpf.c (e.g. one with a part disabled; an older
tree's object, without handle_exec_probed, is measured with that tree's own
copy of this script); --no-field measures without the parts that setting
switches off, as the agent would.

--against FILE compares two objects (--object's, or the package's, against
FILE's, e.g. main's) on the same storms: both are loaded and attached at
once, so the machine's load, which moves each figure from one run to the
next by more than most changes differ, weighs on both alike. The one
attached first runs first and pays the cache misses on the task, its files
and dentries for both (its figures come out higher by up to a fifth): the
order flips every storm, and the ratio (the sum of the programs' costs over
the sum of FILE's) is taken per pair of storms, one in each order, as the
geometric mean of the two storms' ratios. --rounds is then made even.

--reader-lag S drains the ring every S seconds instead of as soon as it holds
data: the ring then holds more than the programs' wakeup_bytes for part of the
storm, as the agent's ring does when its reader falls behind a storm, and
what the programs do to wake a reader is in their cost.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.procs import Children  # noqa: E402
from lib.storm import Storm  # noqa: E402
from otel_exec.config import Config  # noqa: E402
from otel_exec.core import probes  # noqa: E402
from otel_exec.core.ringbuf import RingBuffer  # noqa: E402

WORKERS = 2


def program_stats_by_id() -> dict[tuple[int, str], tuple[int, int]]:
    """(id, name) -> (run_time_ns, run_cnt) of every BPF program this process holds."""
    by_id: dict[int, tuple[int, int]] = {}
    for fdinfo in Path("/proc/self/fdinfo").iterdir():
        try:
            fields = dict(line.split(":", 1) for line in fdinfo.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if "run_time_ns" in fields:  # a program, not a link to one
            by_id[int(fields["prog_id"])] = (int(fields["run_time_ns"]), int(fields["run_cnt"]))
    shown = json.loads(subprocess.run(["bpftool", "--json", "prog", "show"], check=True, capture_output=True).stdout)
    return {(p["id"], p["name"]): by_id[p["id"]] for p in shown if p["id"] in by_id}


def enable_stats() -> int:
    """An fd that keeps the kernel timing BPF programs while it is open
    (BPF_ENABLE_STATS): unlike kernel.bpf_stats_enabled, no other process
    switching the sysctl back off can end it mid-run."""
    libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
    fd: int = libbpf.bpf_enable_stats(0)  # BPF_STATS_RUN_TIME
    if fd < 0:
        raise OSError(-fd, f"BPF_ENABLE_STATS: {os.strerror(-fd)}")
    return fd


def drain_until(ring: RingBuffer, stop: threading.Event, lag: float) -> None:
    def discard(_: memoryview) -> None:
        pass

    while not stop.is_set():
        if lag:
            stop.wait(lag)
        else:
            ring.wait(0.01)
        ring.drain(discard)


class Loaded:
    """One object's programs, loaded and attached, and a reader draining its ring."""

    def __init__(self, obj: Path, cfg: Config, lag: float) -> None:
        held = program_ids()
        # The loader takes its object from the package; another one replaces it here only.
        probes.object_path = lambda: obj
        self.kp = probes.KernelProbes(cfg)
        self.kp.attach()
        self.ids = program_ids() - held
        self.ring = RingBuffer(self.kp.ringbuf_fd, self.kp.ringbuf_bytes)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=drain_until, args=(self.ring, self._stop, lag), daemon=True)
        self._reader.start()

    def stats(self) -> dict[str, tuple[int, int]]:
        return {name: v for (pid, name), v in program_stats_by_id().items() if pid in self.ids}

    def lost(self) -> dict[str, int]:
        return {k: v for k, v in self.kp.counters().items() if k.startswith("lost_") and v}

    def close(self) -> None:
        self._stop.set()
        self._reader.join()
        self.ring.close()
        self.kp.close()


def program_ids() -> set[int]:
    """Ids of the BPF programs this process holds."""
    return {pid for pid, _ in program_stats_by_id()}


def per_run(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
    runs = {name: cnt - before[name][1] for name, (_, cnt) in after.items()}
    return {name: (ns - before[name][0]) / runs[name] if runs[name] else 0.0 for name, (ns, _) in after.items()}


def report(label: str, per_round: dict[str, list[float]]) -> None:
    print(f"{label}: ns per run, median of the storms (min-max):")
    for name in sorted(per_round):
        values = per_round[name]
        print(f"  {name:22} {statistics.median(values):8,.0f}  ({min(values):,.0f}-{max(values):,.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--execs", type=int, default=5000, help="execs per storm (default 5000)")
    parser.add_argument("--rounds", type=int, default=5, help="storms (default 5); the median is reported")
    parser.add_argument("--no-field", default="", help="as the agent's --no-field (comma-separated groups)")
    parser.add_argument("--object", type=Path, default=probes.object_path(),
                        help="the BPF object to load (default: the package's)")
    parser.add_argument("--against", type=Path, help="another object, attached with it to the same storms")
    parser.add_argument("--reader-lag", type=float, default=0.0, metavar="SECONDS",
                        help="drain every SECONDS, woken or not, as a reader behind a storm does (default: at once)")
    args = parser.parse_args()
    objects = [args.object] + ([args.against] if args.against else [])
    if args.against:
        args.rounds += args.rounds % 2
    cfg = Config(no_field=[g for g in args.no_field.split(",") if g])
    load = os.getloadavg()
    print(f"load at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.rounds} storms of {args.execs} execs, "
          f"{WORKERS} workers; objects {', '.join(map(str, objects))}; --no-field {args.no_field or '(none)'}; "
          f"reader lag {args.reader_lag} s")
    children = Children()
    per_round: list[dict[str, list[float]]] = [{} for _ in objects]
    ratios: list[float] = []
    lost: list[dict[str, int]] = [{} for _ in objects]
    stats_fd = enable_stats()
    loaded: list[Loaded] = []  # in the order of objects

    def unload() -> None:
        for one, losses in zip(loaded, lost):
            for k, v in one.lost().items():
                losses[k] = losses.get(k, 0) + v
            one.close()
        loaded.clear()

    try:
        with tempfile.TemporaryDirectory(prefix="oe-bpfcost-") as tmp:
            storm = Storm(children, Path(tmp), WORKERS)
            for round_ in range(args.rounds):
                # One object: loaded once. Two: loaded again every storm, the other one first.
                if not loaded or len(objects) > 1:
                    unload()
                    if round_ % 2:
                        loaded.extend(reversed([Loaded(obj, cfg, args.reader_lag) for obj in reversed(objects)]))
                    else:
                        loaded.extend(Loaded(obj, cfg, args.reader_lag) for obj in objects)
                before = [one.stats() for one in loaded]
                result = storm.run(args.execs, 0, "bpf-cost")
                costs = [per_run(b, one.stats()) for b, one in zip(before, loaded)]
                for i, cost in enumerate(costs):
                    for name, ns in cost.items():
                        per_round[i].setdefault(name, []).append(ns)
                line = "; ".join(", ".join(f"{name} {ns:,.0f}" for name, ns in sorted(cost.items())) for cost in costs)
                if len(costs) > 1:
                    ratios.append(sum(costs[0].values()) / sum(costs[1].values()))
                    line += f"; sum ratio {ratios[-1]:.3f}"
                first = "" if len(objects) == 1 else f" ({objects[round_ % 2].name} first)"
                print(f"  storm {result.rate:,.0f} execs/s{first}: {line}")
    finally:
        unload()
        os.close(stats_fd)
    for obj, rounds, losses in zip(objects, per_round, lost):
        report(str(obj), rounds)
        if losses:
            print(f"  kernel losses (the runs that lost their record cost less): {losses}")
    if ratios:
        pairs = [(a * b) ** 0.5 for a, b in zip(ratios[::2], ratios[1::2])]
        print(f"sum of {args.object} over the sum of {args.against}, per pair of storms (one in each order): "
              f"median {statistics.median(pairs):.3f} ({min(pairs):.3f}-{max(pairs):.3f})")


if __name__ == "__main__":
    main()
