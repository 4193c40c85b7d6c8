#!/usr/bin/env python3
"""Cost per exec of the OTLP encoder (otel_exec.export.otlp.encode), as
the OTLP sink calls it: exec_record when the exec is read, span and
exit_record when its image ends; record shaping included.

    python3 bench/encode.py [ROUNDS]
    OTEL_EXEC_NATIVE=0 python3 bench/encode.py [ROUNDS]   # the Python reference

The exec has an executable identity (on by default), its span the default
(slim) set.

Three workloads: a storm of one command (every exec shares its shared part:
only the per-exec ids and the record's frame are encoded), a build (a
shared part of its own per exec, as with a new argv each time: the whole
record is encoded, and found to fit as it is), and oversized (300
environment variables and a 100 KiB argv per shared part: the record is
shaped to its limits). Prints the median and the best microseconds per exec
over ROUNDS rounds, of the thread's CPU time (wall clock on a shared machine
counts the other work too); compare runs made one after the other.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_exec.export.otlp import encode  # noqa: E402
from otel_exec.export.otlp.shape import RecordLimits  # noqa: E402
from otel_exec.lineage.spans import ProcessSpan  # noqa: E402
from otel_exec.model.events import SharedExec  # noqa: E402
from otel_exec.model.executable import COMPLETE, ExecutableIdentity  # noqa: E402
from otel_exec.model.process import ProcessInfo  # noqa: E402
from tests.helpers.events import sample_exec  # noqa: E402

# bench/storm.py's environment: 16 variables, ~600 bytes.
ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/home/builder",
       "USER=builder", "LOGNAME=builder", "SHELL=/bin/bash", "LANG=C.UTF-8", "TERM=xterm-256color",
       "PWD=/home/builder/src/project", "OLDPWD=/home/builder", "SHLVL=2", "HOSTNAME=build-runner-07",
       "TMPDIR=/tmp", "EDITOR=vi", "CI=true", "CI_JOB_ID=1234567890",
       "CI_COMMIT_SHA=4bf92f3577b34da6a3ce929d0e0e4736aabbccdd"]
ARGV = ["cc", "-O2", "-c", "src/module.c", "-o", "build/module.o"]


LIMITS = RecordLimits()  # the defaults
IDENTITY = ExecutableIdentity(COMPLETE, size=35664, sha256="c7" * 32, htlhash="72" * 16, gnu_build_id="c8" * 20)


def _per_exec(workload: str, n: int) -> float:
    if workload == "oversized":
        ev = sample_exec(env=[f"VAR_{i:03d}=value-{i}-" + "x" * 150 for i in range(300)],
                         argv=["tool"] + ["a" * 1024] * 100)
    else:
        ev = sample_exec(env=ENV, argv=ARGV)
    ev.executable_identity = IDENTITY
    info = ProcessInfo(ev.host_pid, ev.host_ppid, 100, ev.exec_id, ev.parent_exec_id, ev.comm, ev.pathname,
                       ev.argv, False, ev.timestamp, exit_code=0)
    span = ProcessSpan(info, b"\x01" * 16, b"\x02" * 8, b"\x03" * 8, "", "", "", ev.timestamp,
                       end_ns=ev.timestamp + 1000, ended_by="exit")
    shared = SharedExec(())
    start = time.thread_time()
    for _ in range(n):
        if workload != "storm":
            ev.shared = SharedExec(())
        else:
            ev.shared = shared
        encode.exec_record(ev, span, encode.SPAN_SLIM, LIMITS, 1)
        encode.span(span)
        encode.exit_record(span, 2)
    return (time.thread_time() - start) / n * 1e6


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    print(f"encoder: {encode.IMPLEMENTATION}")
    for workload, n in (("storm", 50_000), ("build", 5_000), ("oversized", 200)):
        times = [_per_exec(workload, n) for _ in range(rounds)]
        print(f"{workload:10s} median {statistics.median(times):8.2f} us/exec  best {min(times):8.2f} us/exec")


if __name__ == "__main__":
    main()
