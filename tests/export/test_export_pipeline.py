"""The path of a record after encoding: spool, batch, transport. While the
collector keeps up, batches come from memory and the segment files are only
written; a batch in flight when the agent is SIGKILLed is in the files and
is sent after the next start."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from otel_exec.export.otlp import encode
from otel_exec.export.otlp import protowire as w
from otel_exec.export.otlp.batch import (DEFAULT_MAX_EXPORT_BATCH_SIZE, BatchExporter, BatchSettings, MemoryQueue,
                                         RecordQueue, SpoolQueue)
from otel_exec.export.otlp.transport import Answer, Outcome
from otel_exec.export.spool import Spool, frame


def records(n: int, start: int = 0) -> list[bytes]:
    """Real log records (the gap record), each one distinct."""
    return [encode.gap_record(10**18 + i, 10**18 + i + 1, float(i)) for i in range(start, start + n)]


class RecordingTransport:
    target = "test"

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    def start(self) -> None: ...

    def send(self, payload: bytes) -> Answer:
        self.requests.append(payload)
        return Answer(Outcome.SENT)

    def shutdown(self) -> None: ...

    def records(self) -> list[bytes]:
        return [r for q in self.requests for r in encode.request_records(q)]


def counted_preads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the os.pread calls from now on: reads of the segment files."""
    reads: list[int] = []
    real_pread = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    return reads


def _wait(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_the_segment_files_are_not_read_while_the_collector_keeps_up(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(str(tmp_path / "spool"), 1 << 30)
    transport = RecordingTransport()
    exporter = BatchExporter("logs", transport, encode.encoded_resource({}), BatchSettings(60.0, 2048, 16),
                             SpoolQueue(spool.signal("logs")))
    reads = counted_preads(monkeypatch)
    sent = records(400)
    exporter.start()
    try:
        for i in range(0, len(sent), 16):  # drains of 16 records: each wakes the sender
            for rec in sent[i:i + 16]:
                exporter.add(rec)
            exporter.flush()
            _wait(lambda: exporter.exported >= i + 16)
    finally:
        exporter.begin_shutdown(5.0)
        exporter.join()
    assert transport.records() == sent
    assert reads == [], "batches were read back from the segment files"
    assert spool.signal("logs").pending_bytes() == 0
    # Every record was written to the files all the same (durable until acked).
    spool.close()


_KILLED_AGENT = textwrap.dedent("""
    import sys, threading, time
    from pathlib import Path
    from otel_exec.export.otlp import encode
    from otel_exec.export.otlp.batch import BatchExporter, BatchSettings, SpoolQueue
    from otel_exec.export.otlp.transport import Answer, Outcome
    from otel_exec.export.spool import Spool

    directory, marker = sys.argv[1], Path(sys.argv[2])
    data, records, p = Path(sys.argv[3]).read_bytes(), [], 0
    while p < len(data):  # length-prefixed, as spool.frame() frames them
        n = int.from_bytes(data[p:p + 4], "little")
        records.append(data[p + 4:p + 4 + n])
        p += 4 + n

    class StallingTransport:
        target = "test"
        calls = 0
        def start(self): pass
        def shutdown(self): pass
        def send(self, payload):
            self.calls += 1
            if self.calls == 1:
                return Answer(Outcome.SENT)  # the first batch is acknowledged
            marker.write_text(str(len(encode.request_records(payload))))
            time.sleep(3600)  # the second is in flight when the agent dies

    spool = Spool(directory, 1 << 30)
    exporter = BatchExporter("logs", StallingTransport(), encode.encoded_resource({}),
                             BatchSettings(60.0, 2048, 50), SpoolQueue(spool.signal("logs")))
    exporter.start()
    for rec in records[:50]:
        exporter.add(rec)
    exporter.flush()
    while exporter.exported < 50:
        time.sleep(0.005)
    for rec in records[50:]:
        exporter.add(rec)
    exporter.flush()
    time.sleep(3600)
""")


def test_sigkill_while_a_batch_is_sent_loses_nothing(tmp_path: Path) -> None:
    """The batch being sent was dropped from memory (the request holds it)
    but not acknowledged: the next start reads it, and what followed it,
    from the segment files; the acknowledged batch is not sent again."""
    marker = tmp_path / "sending"
    script = tmp_path / "agent.py"
    script.write_text(_KILLED_AGENT)
    sent = tmp_path / "records"
    sent.write_bytes(b"".join(frame(len(r)) + r for r in records(200)))
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path / "spool"), str(marker), str(sent)], cwd=root,
                             env={**os.environ, "PYTHONPATH": str(root)})
    try:
        _wait(lambda: marker.exists() or child.poll() is not None, timeout=30)
        assert child.poll() is None, "the agent script failed"
        assert int(marker.read_text()) == 50  # a full batch was in flight
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    spool = Spool(str(tmp_path / "spool"), 1 << 30)
    transport = RecordingTransport()
    exporter = BatchExporter("logs", transport, encode.encoded_resource({}), BatchSettings(60.0, 2048, 64),
                             SpoolQueue(spool.signal("logs")))
    exporter.start()
    exporter.begin_shutdown(5.0)
    exporter.join()
    assert transport.records() == records(150, start=50)
    spool.close()


def test_a_batch_read_back_holds_views_of_one_read_not_copies(tmp_path: Path) -> None:
    """After a restart every record is in the files: a batch is read with one
    pread and its records are views into that buffer."""
    first = Spool(str(tmp_path / "spool"), 1 << 30)
    sp = first.signal("logs")
    for rec in records(30):
        sp.add(rec)
    sp.write_added()
    first.close()
    again = Spool(str(tmp_path / "spool"), 1 << 30)
    batch = again.signal("logs").read(100, 1 << 20)
    assert batch is not None and batch.records == records(30)
    assert all(isinstance(r, memoryview) for r in batch.records)
    assert len({id(r.obj) for r in batch.records if isinstance(r, memoryview)}) == 1
    again.close()


def sized_records(n: int, size: int) -> list[bytes]:
    """Log records of `size` bytes as queued (a body of x's), each distinct."""
    def record(i: int, body: int) -> bytes:
        return w.len_field(2, w.len_field(5, w.any_string(f"{i:08d}".ljust(body, "x"))))

    body = 2 * size - len(record(0, size))  # less the framing (tags and lengths)
    made = [record(i, body) for i in range(n)]
    assert {len(r) for r in made} == {size}
    return made


def test_the_default_batch_is_twice_the_specifications_and_the_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "OTEL_BLRP_MAX_QUEUE_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert BatchSettings.from_env("OTEL_BLRP", 1000).max_export_batch_size == DEFAULT_MAX_EXPORT_BATCH_SIZE == 1024
    monkeypatch.setenv("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "512")
    assert BatchSettings.from_env("OTEL_BLRP", 1000).max_export_batch_size == 512
    monkeypatch.delenv("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE")
    monkeypatch.setenv("OTEL_BLRP_MAX_QUEUE_SIZE", "300")
    assert BatchSettings.from_env("OTEL_BLRP", 1000).max_export_batch_size == 300


def test_two_default_batches_of_storm_sized_records_are_sent_from_memory(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """During a storm up to two batches wait: the part of one that is not
    full, left for more, and the full batch whose drain wakes the thread.
    Two of records the size of a storm's (about 1.1 KB, with room to
    spare) fit the spool's in-memory window: sent as two full requests,
    nothing read back from the segment files."""
    monkeypatch.delenv("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", raising=False)
    monkeypatch.delenv("OTEL_BLRP_MAX_QUEUE_SIZE", raising=False)
    spool = Spool(str(tmp_path / "spool"), 1 << 30)
    transport = RecordingTransport()
    exporter = BatchExporter("logs", transport, encode.encoded_resource({}),
                             BatchSettings.from_env("OTEL_BLRP", 60_000), SpoolQueue(spool.signal("logs")))
    reads = counted_preads(monkeypatch)
    sent = sized_records(2 * DEFAULT_MAX_EXPORT_BATCH_SIZE, 1500)
    for rec in sent:
        exporter.add(rec)
    exporter.flush()  # full batches: due at once
    exporter.start()
    try:
        _wait(lambda: exporter.exported == len(sent))
    finally:
        exporter.begin_shutdown(5.0)
        exporter.join()
    assert [len(encode.request_records(r)) for r in transport.requests] == [DEFAULT_MAX_EXPORT_BATCH_SIZE] * 2
    assert transport.records() == sent
    assert reads == [], "the batch was read back from the segment files"
    spool.close()


@pytest.mark.parametrize("kind", ["memory", "spool"])
def test_requests_of_large_records_stay_under_the_collectors_4_mib(kind: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A default batch of large records (each above the default attribute
    budget, shape.DEFAULT_MAX_BYTES) is cut by bytes: no request reaches
    the 4 MiB collectors refuse by default, and every record goes, in order."""
    monkeypatch.delenv("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", raising=False)
    monkeypatch.delenv("OTEL_BLRP_MAX_QUEUE_SIZE", raising=False)
    settings = BatchSettings.from_env("OTEL_BLRP", 60_000)
    spool = Spool(str(tmp_path / "spool"), 1 << 30)
    queue: RecordQueue = MemoryQueue(settings.max_queue_size) if kind == "memory" else SpoolQueue(spool.signal("logs"))
    transport = RecordingTransport()
    exporter = BatchExporter("logs", transport, encode.encoded_resource({"service.name": "otel-exec"}), settings, queue)
    sent = sized_records(settings.max_export_batch_size, 100 * 1024)
    for rec in sent:
        exporter.add(rec)
    exporter.flush()
    exporter.start()
    exporter.begin_shutdown(30.0)
    exporter.join()
    assert transport.records() == sent
    assert len(transport.requests) > 1
    assert max(map(len, transport.requests)) < 4 * 1024 * 1024
    spool.close()
