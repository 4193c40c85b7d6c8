#!/usr/bin/env python3
"""Bytes on the wire per exec, and what gzip costs: run as root.

    python3 bench/wire.py [--execs N] [--rate R] [--output FILE] [--breakdown]

A storm (bench/lib/storm.py: /bin/true with the benchmark's fixed
environment, N execs at R execs/s, default 3,000 at 1,000/s) with the agent
exporting OTLP/gRPC, with its default settings, to an in-process OTLP receiver
(testkit/fake_collector.py) that keeps every record: with its defaults (no
compression), with OTEL_EXPORTER_OTLP_COMPRESSION=gzip and, for comparison,
with --env-attributes 48 --record-attributes full (each variable an
attribute of its own, and the exit record with the exec record's pid and
executable name: the defaults before issue 14's second bytes pass).

Per storm exec, from what the receiver got (each record as its protobuf
encoding, framed as in a request: tag and length): the exec's log record,
its span, its exit record; the requests' share (resource, scope) is left
out, it is a few bytes per exec at the default batch size. Then those
records, in batches of 512 as the agent sends them, through zlib at level 6
(what gRPC's and the HTTP transport's gzip use): bytes and CPU per exec. And
the agent's CPU per exec (user + system, all threads, from the storm's
start until the receiver had every record) in both runs: noisy on a shared
machine, the zlib figure is the steady one. Run it from another checkout
(a clone of an older commit) to compare that code's bytes.

The table is printed and appended to BENCHMARKS.md. --breakdown also prints,
for one storm exec of each run, every field of its exec record, span and exit
record with its bytes (tag, length and value; an attribute by its key).
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.oe_agent import AgentProcess  # noqa: E402
from lib.procs import ticks_to_us  # noqa: E402
from lib.report import table  # noqa: E402
from lib.session import REPO, WORKERS, Session, agent_python, machine, publish, say, section_head  # noqa: E402
from lib.storm import MARKER_VAR, Storm  # noqa: E402
from otel_exec.export.otlp.batch import DEFAULT_MAX_EXPORT_BATCH_SIZE as BATCH  # noqa: E402
from testkit.environment import variable  # noqa: E402
from testkit.fake_collector import FakeCollector, attributes  # noqa: E402

EXEC_EVENT = "otel_exec.process.exec"
EXIT_EVENT = "otel_exec.process.exit"
GZIP_LEVEL = 6
# Without a new storm record for this long, the agent has sent everything
# (the span batch delay is 5 s by default).
_IDLE = 8.0
# (label, agent options, agent environment): the defaults; gzip; and the
# earlier shape, for comparison.
RUNS: list[tuple[str, list[str], dict[str, str]]] = [
    ("defaults", [], {}),
    ("OTEL_EXPORTER_OTLP_COMPRESSION=gzip", [], {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}),
    ("--env-attributes 48 --record-attributes full",
     ["--env-attributes", "48", "--record-attributes", "full"], {}),
]


def _framed(record: Any) -> int:
    """A record's bytes as it sits in a request: field tag, length, message."""
    size = record.ByteSize()
    return 1 + len(_varint(size)) + size


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 127:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _marked(record: Any, marker: str) -> bool:
    """One of the storm's execs (not the storm process itself): the marker
    in its environment, packed or an attribute of its own."""
    attrs = attributes(record)
    return attrs.get("process.executable.name") == "true" and variable(attrs, MARKER_VAR) == marker


@dataclass
class Wire:
    execs: int  # storm execs whose exec record arrived
    log: float  # bytes per exec: exec record
    span: float
    exit: float
    gzip: float  # the three, compressed in batches
    gzip_us: float  # zlib CPU per exec
    agent_us: float  # agent CPU per exec

    @property
    def total(self) -> float:
        return self.log + self.span + self.exit


def _field_bytes(record: Any) -> list[tuple[str, int]]:
    """Each field of a record (each attribute, by key) and its encoded bytes:
    a message of that field alone, sized."""
    rows = []
    for field, value in record.ListFields():
        for item in value if field.name == "attributes" else (value,):
            alone = type(record)()
            if field.name == "attributes":
                alone.attributes.add().CopyFrom(item)
            elif field.message_type is not None:
                getattr(alone, field.name).CopyFrom(item)
            else:
                setattr(alone, field.name, item)
            rows.append((item.key if field.name == "attributes" else field.name, alone.ByteSize()))
    return rows


def _breakdown(label: str, logs: list[Any], spans: list[Any], exits: list[Any]) -> None:
    """The fields of one storm exec's records (the middle one's), by bytes."""
    record = logs[len(logs) // 2]
    for kind, got in (("exec record", record), ("span", next((s for s in spans if s.span_id == record.span_id), None)),
                      ("exit record", next((r for r in exits if r.span_id == record.span_id), None))):
        if got is not None:
            say(f"{label}, {kind} ({_framed(got)} B framed): "
                + ", ".join(f"{name} {size}" for name, size in _field_bytes(got)))


def _storm_records(fc: FakeCollector, marker: str) -> tuple[list[Any], list[Any], list[Any]]:
    """The storm's exec records, and the spans and exit records of their images."""
    logs = [r for got in fc.requests("logs") for r in got.records]
    execs = [r for r in logs if r.event_name == EXEC_EVENT and _marked(r, marker)]
    ids = {r.span_id for r in execs}
    exits = [r for r in logs if r.event_name == EXIT_EVENT and r.span_id in ids]
    spans = [s for got in fc.requests("traces") for s in got.records if s.span_id in ids]
    return execs, spans, exits


def _gzip(records: list[Any]) -> tuple[int, float]:
    """Compressed bytes of the records in batches of BATCH, and the CPU
    seconds zlib took."""
    size, cpu = 0, 0.0
    for i in range(0, len(records), BATCH):
        payload = b"".join(r.SerializeToString() for r in records[i:i + BATCH])
        t0 = time.process_time()
        size += len(zlib.compress(payload, GZIP_LEVEL))
        cpu += time.process_time() - t0
    return size, cpu


def measure(session: Session, storm: Storm, label: str, execs: int, rate: float, args: list[str],
            env: dict[str, str], breakdown: bool = False) -> Wire:
    workdir = session.workdir / label
    workdir.mkdir()
    marker = f"wire-{int(time.time() * 1000)}"  # the same length in every run: the same bytes
    with FakeCollector() as fc:
        agent = AgentProcess(session.children, agent_python(), REPO, workdir, fc.endpoint("grpc"), args, env)
        agent.start()
        time.sleep(1.0)  # start-up work (records of processes found running) out of the way
        t0 = agent.cpu_ticks()
        storm.run(execs, rate, marker)
        last, since = -1, time.monotonic()
        while time.monotonic() - since < _IDLE:
            done = _storm_records(fc, marker)
            got = tuple(len(r) for r in done)
            if got != last:
                last, since, ticks = got, time.monotonic(), agent.cpu_ticks()
            if got[0] >= execs and got[1] >= execs and got[2] >= execs:
                break
            time.sleep(0.5)
        agent.stop()
        logs, spans, exits = _storm_records(fc, marker)
    n = len(logs)
    if breakdown:
        _breakdown(label, logs, spans, exits)
    packed, zlib_s = zip(*(_gzip(kind) for kind in (logs, spans, exits)))
    return Wire(n, sum(map(_framed, logs)) / n, sum(map(_framed, spans)) / n, sum(map(_framed, exits)) / n,
                sum(packed) / n, sum(zlib_s) * 1e6 / n, ticks_to_us(ticks - t0) / n)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--execs", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--breakdown", action="store_true", help="print each field of one storm exec's records")
    args = parser.parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    about = machine()
    rows = []
    with Session("oebench-wire-", "bench: did not finish; logs kept in") as session:
        storm = Storm(session.children, session.workdir, WORKERS)
        for label, extra, env in RUNS:
            w = measure(session, storm, label, args.execs, args.rate, extra, env, args.breakdown)
            say(f"{label}: {w.execs} execs, {w.total:,.0f} B/exec ({w.log:,.0f} log + {w.span:,.0f} span + "
                f"{w.exit:,.0f} exit), gzip {w.gzip:,.0f} B in {w.gzip_us:.1f} us; agent {w.agent_us:.1f} us/exec")
            rows.append([f"`{label}`", f"{w.execs:,}", f"{w.log:,.0f}", f"{w.span:,.0f}", f"{w.exit:,.0f}",
                         f"{w.log + w.span:,.0f}", f"{w.total:,.0f}", f"{w.gzip:,.0f}", f"{w.gzip_us:.1f}",
                         f"{w.agent_us:.1f}"])
        command = shlex.join(["python3", "bench/wire.py", *argv])
        lines = section_head(f"## Bytes on the wire per exec ({started:%Y-%m-%d %H:%M} UTC)", about, command)
        lines.append(table(["settings", "execs", "exec record B", "span B", "exit record B",
                            "record + span B", "all three B", "gzip level 6 B", "zlib CPU µs/exec",
                            "agent CPU µs/exec"], rows))
        lines += ["", "Uncompressed protobuf per storm exec, each record framed as in a request (resource and "
                  f"scope left out); gzip: the same records in batches of {BATCH} through zlib level 6. Agent CPU: "
                  "user + system, all threads, storm start until the receiver had every record."]
        publish(args.output, "\n".join(lines) + "\n", say)
        session.ok = True
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
