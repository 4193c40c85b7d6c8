#!/usr/bin/env python3
"""Time from SIGINT/SIGTERM to the agent's exit: run as root.

    python3 bench/stop_latency.py ROUNDS POLL_S BACKEND TREE...

Starts `python -m otel_exec run` of each TREE in turn (ROUNDS times, the
trees alternated, SIGINT and SIGTERM alternated), with --poll-interval
POLL_S, a filter no exec passes and a 64 MiB ring, so that only the poll
interval ends a wait (the records of other processes' execs and exits, which
feed the lineage, would otherwise fill the share of a small ring that wakes
the reader early); signals it 0.5 to 1.5 s after its ready file appears and
times the signal to its exit, which must be 0 with the stop line. Prints
each run, then each tree's median and range. BACKEND bcc installs BCC first
if it is missing (tests/helpers/bcc_env.py).
"""
from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stop_time(tree: str, poll_s: str, backend: str, sig: int, env: dict[str, str]) -> float:
    workdir = Path(tempfile.mkdtemp(prefix="stop-latency-"))
    ready, err = workdir / "ready", workdir / "stderr"
    with open(err, "w") as stderr:
        agent = subprocess.Popen([f"{tree}/.venv/bin/python", "-m", "otel_exec", "run", "--backend", backend,
                                  "--comm", "oe-matches-none", "--poll-interval", poll_s,
                                  "--ringbuf-bytes", str(64 << 20), "--format", "jsonl",
                                  "--output", str(workdir / "out"), "--ready-file", str(ready)],
                                 cwd=tree, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        while not ready.exists():
            if agent.poll() is not None:
                raise RuntimeError(f"{tree}: the agent did not start: {err.read_text()}")
            time.sleep(0.01)
        time.sleep(random.uniform(0.5, 1.5))
        t0 = time.monotonic()
        agent.send_signal(sig)
        rc = agent.wait()
        taken = time.monotonic() - t0
    if rc != 0 or "stopped;" not in err.read_text():
        raise RuntimeError(f"{tree}: exit {rc}: {err.read_text()}")
    return taken


def main(argv: list[str]) -> None:
    rounds, poll_s, backend, trees = int(argv[0]), argv[1], argv[2], argv[3:]
    env = dict(os.environ)
    if backend == "bcc":
        sys.path.insert(0, str(ROOT))
        from tests.helpers.bcc_env import ensure_bcc

        env = ensure_bcc()
    taken: dict[str, list[float]] = {tree: [] for tree in trees}
    for i in range(rounds):
        sig = (signal.SIGINT, signal.SIGTERM)[i % 2]
        for tree in trees:
            taken[tree].append(stop_time(tree, poll_s, backend, sig, env))
            print(f"{tree} {signal.Signals(sig).name} {taken[tree][-1]:.3f} s", flush=True)
    for tree, times in taken.items():
        print(f"{tree}: median {statistics.median(times):.3f} s, range {min(times):.3f}-{max(times):.3f} s, "
              f"{len(times)} runs")


if __name__ == "__main__":
    main(sys.argv[1:])
