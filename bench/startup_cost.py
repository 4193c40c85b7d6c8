#!/usr/bin/env python3
"""Start-up cost of the agent per backend: seconds from `otel-exec run` to
its --ready-file, the resident memory 1 s later (VmRSS, RssAnon, RssFile),
and for BCC the compile + load time it reports (bcc_load_ms).

    sudo python3 bench/startup_cost.py core 5
    sudo BCC_KERNEL_SOURCE=$(python3 -m otel_exec.bcc.toolchain prepare-headers) \\
        python3 bench/startup_cost.py bcc 5

Prints one line per start and the medians (docs/backends.md#start-up-cost).
"""
from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one(backend: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        ready = os.path.join(d, "ready")
        t0 = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "otel_exec", "run", "--backend", backend, "--format", "jsonl",
                              "--output", os.path.join(d, "out"), "--ready-file", ready],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while not os.path.exists(ready):
            if p.poll() is not None:
                sys.exit(p.stderr.read() if p.stderr else f"agent exited {p.returncode}")
            time.sleep(0.005)
        row = {"ready_s": time.monotonic() - t0}
        time.sleep(1.0)
        status = Path(f"/proc/{p.pid}/status").read_text()
        for key in ("VmRSS", "RssAnon", "RssFile"):
            row[key] = int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        m = re.search(r"bcc_load_ms=(\d+)", err)
        if m:
            row["bcc_load_ms"] = int(m.group(1))
        return row


def main() -> None:
    backend = sys.argv[1] if len(sys.argv) > 1 else "core"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    rows = []
    for i in range(runs):
        rows.append(one(backend))
        print(f"{backend} #{i}: " + " ".join(f"{k}={v:.2f}" for k, v in rows[-1].items()))
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"{backend} median of {runs}: " + " ".join(f"{k}={v:.2f}" for k, v in med.items()))


if __name__ == "__main__":
    main()
