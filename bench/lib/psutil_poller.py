"""A process poller, the psutil way: the benchmark's stand-in for an agent
that watches processes by polling instead of hooking exec.

Run as its own process by bench/lib/peers.py (PsutilPoller), not imported:

    python3 psutil_poller.py OUT READY INTERVAL

Every INTERVAL seconds it lists the pids and appends "PID ARGV..." (the
command line, space-separated) to OUT for each pid it had not seen in the
previous listing; READY is created after the first listing. A process that
starts and ends between two listings is never seen, and one seen before its
exec keeps the command line it had then: both are the method's limits, which
the benchmark measures.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil


def main(out_path: str, ready_path: str, interval: float) -> None:
    previous: set[int] = set()
    ready = False
    with open(out_path, "a", encoding="utf-8", errors="replace") as out:
        while True:
            started = time.monotonic()
            pids = set(psutil.pids())
            for pid in pids - previous:
                try:
                    argv = psutil.Process(pid).cmdline()
                except psutil.Error:
                    continue  # gone, or a zombie, before we looked
                out.write(f"{pid} {' '.join(argv)}\n")
            out.flush()
            previous = pids
            if not ready:
                Path(ready_path).touch()
                ready = True
            time.sleep(max(0.0, interval - (time.monotonic() - started)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
