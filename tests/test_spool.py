"""The spool's segments, cursor and in-memory window (otel_exec.spool):
whatever path a record takes, it is read back once, in order, until acked."""
from __future__ import annotations

from pathlib import Path

import pytest

from otel_exec import spool as spool_mod
from otel_exec.spool import SignalSpool, frame


def _append(sp: SignalSpool, records: list[bytes]) -> None:
    framed: list[bytes] = []
    for r in records:
        framed += (frame(len(r)), r)
    sp.append(framed, len(records))


def _drain(sp: SignalSpool, max_records: int = 7, max_bytes: int = 1 << 20) -> list[bytes]:
    got: list[bytes] = []
    while (batch := sp.read(max_records, max_bytes)) is not None:
        got += batch.records
        sp.ack(batch.end)
    return got


def _records(n: int, start: int = 0) -> list[bytes]:
    return [f"record-{i}-".encode() * (1 + i % 5) for i in range(start, start + n)]


def test_records_come_back_in_order_from_memory(tmp_path: Path) -> None:
    sp = SignalSpool(tmp_path, "logs", 1 << 30)
    recs = _records(50)
    for i in range(0, 50, 10):
        _append(sp, recs[i:i + 10])
    assert _drain(sp) == recs
    assert sp.pending_bytes() == 0 and sp.read(10, 1 << 20) is None


def test_a_batch_not_acked_is_read_again(tmp_path: Path) -> None:
    sp = SignalSpool(tmp_path, "logs", 1 << 30)
    _append(sp, _records(10))
    first = sp.read(4, 1 << 20)
    assert first is not None and sp.read(4, 1 << 20) == first  # a failed send retries the same records
    sp.ack(first.end)
    assert _drain(sp) == _records(10)[4:]


def test_what_memory_dropped_is_read_from_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "RECENT_BYTES", 300)
    sp = SignalSpool(tmp_path, "logs", 1 << 30)
    recs = _records(200)
    for i in range(0, 200, 3):
        _append(sp, recs[i:i + 3])
    assert _drain(sp, max_records=5) == recs


def test_a_restart_sends_what_the_last_run_left_then_its_own(tmp_path: Path) -> None:
    old = SignalSpool(tmp_path, "logs", 1 << 30)
    _append(old, _records(20))
    batch = old.read(8, 1 << 20)
    assert batch is not None
    old.ack(batch.end)
    old.close()  # or killed: the cursor and the segment are on disk
    new = SignalSpool(tmp_path, "logs", 1 << 30)
    _append(new, _records(5, start=100))
    assert _drain(new, max_records=3) == _records(20)[8:] + _records(5, start=100)


def test_batches_span_segments_and_acked_segments_are_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 200)
    sp = SignalSpool(tmp_path, "logs", 1 << 30)
    recs = _records(60)
    for i in range(0, 60, 4):
        _append(sp, recs[i:i + 4])
    assert len(list(tmp_path.glob("logs-*.seg"))) > 3
    assert _drain(sp, max_records=9) == recs
    assert len(list(tmp_path.glob("logs-*.seg"))) == 1  # the one being written


def test_eviction_drops_the_oldest_records_and_counts_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 200)
    sp = SignalSpool(tmp_path, "logs", 1000)
    recs = _records(100)
    for i in range(0, 100, 4):
        _append(sp, recs[i:i + 4])
    got = _drain(sp)
    assert sp.evicted > 0 and len(got) + sp.evicted == 100
    assert got == recs[sp.evicted:]


def test_a_record_cut_by_a_crash_is_skipped(tmp_path: Path) -> None:
    sp = SignalSpool(tmp_path, "logs", 1 << 30)
    _append(sp, _records(3))
    sp.close()
    seg = next(tmp_path.glob("logs-*.seg"))
    with seg.open("ab") as f:
        f.write(frame(1000) + b"only part of it")
    new = SignalSpool(tmp_path, "logs", 1 << 30)
    _append(new, _records(2, start=10))
    assert _drain(new) == _records(3) + _records(2, start=10)


def test_a_record_larger_than_max_bytes_is_read_whole(tmp_path: Path) -> None:
    old = SignalSpool(tmp_path, "logs", 1 << 30)
    big = b"x" * 5000
    _append(old, [big, b"small"])
    old.close()
    new = SignalSpool(tmp_path, "logs", 1 << 30)
    assert _drain(new, max_bytes=1000) == [big, b"small"]


def test_one_append_of_more_records_than_writev_takes_at_once(tmp_path: Path) -> None:
    sp = SignalSpool(tmp_path, "logs", 1 << 30)
    recs = _records(1500)  # 3,000 buffers: three writev() calls
    _append(sp, recs)
    sp.close()
    assert _drain(SignalSpool(tmp_path, "logs", 1 << 30), max_records=400) == recs


def test_a_batch_forgotten_while_sent_is_read_back_from_the_files_if_it_failed(tmp_path: Path) -> None:
    sp = SignalSpool(tmp_path, "logs", 1 << 30)
    recs = _records(30)
    _append(sp, recs[:10])
    _append(sp, recs[10:20])
    first = sp.read(15, 1 << 20)
    assert first is not None and first.records == recs[:15]
    sp.forget(first.end)  # in flight: memory let go of it
    _append(sp, recs[20:])
    again = sp.read(15, 1 << 20)  # the send failed: same records, from disk
    assert again is not None and again.records == recs[:15] and again.end == first.end
    sp.forget(again.end)
    sp.ack(again.end)
    assert _drain(sp) == recs[15:]  # the rest from memory again
