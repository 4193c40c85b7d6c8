#!/usr/bin/env python3
"""Kernel cost per exec of each BPF program (CO-RE backend): run as root.

    python3 bench/bpf_cost.py [--execs N] [--rounds R] [--no-field GROUPS] [--object FILE]

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


def program_stats() -> dict[str, tuple[int, int]]:
    """Name -> (run_time_ns, run_cnt) of every BPF program this process holds."""
    by_id: dict[int, tuple[int, int]] = {}
    for fdinfo in Path("/proc/self/fdinfo").iterdir():
        try:
            fields = dict(line.split(":", 1) for line in fdinfo.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if "run_time_ns" in fields:  # a program, not a link to one
            by_id[int(fields["prog_id"])] = (int(fields["run_time_ns"]), int(fields["run_cnt"]))
    shown = json.loads(subprocess.run(["bpftool", "--json", "prog", "show"], check=True, capture_output=True).stdout)
    return {p["name"]: by_id[p["id"]] for p in shown if p["id"] in by_id}


def enable_stats() -> int:
    """An fd that keeps the kernel timing BPF programs while it is open
    (BPF_ENABLE_STATS): unlike kernel.bpf_stats_enabled, no other process
    switching the sysctl back off can end it mid-run."""
    libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
    fd: int = libbpf.bpf_enable_stats(0)  # BPF_STATS_RUN_TIME
    if fd < 0:
        raise OSError(-fd, f"BPF_ENABLE_STATS: {os.strerror(-fd)}")
    return fd


def drain_until(ring: RingBuffer, stop: threading.Event) -> None:
    def discard(_: memoryview) -> None:
        pass

    while not stop.is_set():
        ring.wait(0.01)
        ring.drain(discard)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--execs", type=int, default=5000, help="execs per storm (default 5000)")
    parser.add_argument("--rounds", type=int, default=5, help="storms (default 5); the median is reported")
    parser.add_argument("--no-field", default="", help="as the agent's --no-field (comma-separated groups)")
    parser.add_argument("--object", type=Path, help="the BPF object to load (default: the package's)")
    args = parser.parse_args()
    if args.object:
        # The loader takes its object from the package; a variant replaces it here only.
        probes.object_path = lambda: args.object
    cfg = Config(no_field=[g for g in args.no_field.split(",") if g])
    load = os.getloadavg()
    print(f"load at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.rounds} storms of {args.execs} execs, "
          f"{WORKERS} workers; object {probes.object_path()}; --no-field {args.no_field or '(none)'}")
    children = Children()
    per_round: dict[str, list[float]] = {}
    stats_fd = enable_stats()
    with tempfile.TemporaryDirectory(prefix="oe-bpfcost-") as tmp:
        storm = Storm(children, Path(tmp), WORKERS)
        kp = probes.KernelProbes(cfg)
        ring = RingBuffer(kp.ringbuf_fd, kp.ringbuf_bytes)
        stop = threading.Event()
        reader = threading.Thread(target=drain_until, args=(ring, stop), daemon=True)
        reader.start()
        try:
            for _ in range(args.rounds):
                before = program_stats()
                result = storm.run(args.execs, 0, "bpf-cost")
                after = program_stats()
                for name, (ns, cnt) in after.items():
                    runs = cnt - before[name][1]
                    per_round.setdefault(name, []).append((ns - before[name][0]) / runs if runs else 0.0)
                print(f"  storm {result.rate:,.0f} execs/s: " + ", ".join(
                    f"{name} {per_round[name][-1]:,.0f} ns" for name in sorted(per_round)))
            lost = {k: v for k, v in kp.counters().items() if k.startswith("lost_") and v}
        finally:
            stop.set()
            reader.join()
            ring.close()
            kp.close()
            os.close(stats_fd)
    print("ns per run, median of the storms (min-max):")
    for name in sorted(per_round):
        values = per_round[name]
        print(f"  {name:22} {statistics.median(values):8,.0f}  ({min(values):,.0f}-{max(values):,.0f})")
    if lost:
        print(f"kernel losses (the runs that lost their record cost less): {lost}")


if __name__ == "__main__":
    main()
