#!/usr/bin/env python3
"""A collector that refuses, throttles and accepts in part on a fixed cycle,
for bench/reliability.py's "reject" check; run with the agent's Python (it
needs grpcio and opentelemetry-proto):

    rejecting_collector.py RESULT.json MARKER LAUNCHER

It serves OTLP/gRPC on loopback (testkit/fake_collector.py), prints its port as
one line, and on SIGTERM writes RESULT.json: per signal, the records it took
and refused, its retryable answers, and the exec ids of the storm's log
records (records carrying MARKER, not the LAUNCHER's) delivered and refused.

The cycle, per signal, by request number n: n % 10 == 3 INVALID_ARGUMENT
(refused: the batch is dropped); n % 10 == 6 UNAVAILABLE (retryable); n % 10
== 8 accepted but for its last record (partial success); else accepted.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402
from testkit.environment import variable  # noqa: E402
from testkit.fake_collector import OK, FakeCollector, Received, Reply, attributes  # noqa: E402

from lib.storm import MARKER_VAR  # noqa: E402

RETRYABLE = grpc.StatusCode.UNAVAILABLE


def policy(signal_name: str, records: list[Any], nth: int) -> Reply:
    if nth % 10 == 3:
        return Reply(code=grpc.StatusCode.INVALID_ARGUMENT, message="benchmark: refused")
    if nth % 10 == 6:
        return Reply(code=RETRYABLE, message="benchmark: try again")
    if nth % 10 == 8:
        return Reply(partial_rejected=1, message="benchmark: last record refused")
    return OK


def taken_and_refused(r: Received) -> tuple[list[Any], list[Any]]:
    """A request's records the collector kept and those it refused for good
    (partial success refuses the last ones); a retryable answer is neither."""
    if r.accepted:
        kept = len(r.records) - r.reply.partial_rejected
        return r.records[:kept], r.records[kept:]
    if r.reply.code == RETRYABLE:
        return [], []
    return [], r.records


def summary(fc: FakeCollector, marker: str, launcher: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("logs", "traces"):
        taken = refused = retryable = 0
        storm: dict[str, list[str]] = {"delivered": [], "refused": []}
        for r in fc.requests(name):
            kept, gone = taken_and_refused(r)
            taken, refused = taken + len(kept), refused + len(gone)
            retryable += not r.accepted and r.reply.code == RETRYABLE
            if name != "logs":
                continue
            for key, records in (("delivered", kept), ("refused", gone)):
                for rec in records:
                    attrs = attributes(rec)
                    if variable(attrs, MARKER_VAR) == marker and not rec.body.string_value.startswith(launcher):
                        storm[key].append(attrs["otel_exec.exec_id"])
        out[name] = {"requests": len(fc.requests(name)), "taken": taken, "refused": refused,
                     "retryable_answers": retryable, **({"storm": storm} if name == "logs" else {})}
    return out


def main(result: str, marker: str, launcher: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeCollector(policy) as fc:
        print(fc.grpc_port, flush=True)
        stop.wait()
        Path(result).write_text(json.dumps(summary(fc, marker, launcher)))


if __name__ == "__main__":
    main(*sys.argv[1:])
