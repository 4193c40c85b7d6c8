"""The spool's segments, cursor and in-memory window (otel_exec.export.spool):
whatever path a record takes, it is read back once, in order, until acked;
disk trouble, a damaged spool and planted files stop nothing."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from otel_exec.export import spool as spool_mod
from otel_exec.errors import UsageError
from otel_exec.export.spool import SignalSpool, Spool, frame


def framed_record(body: bytes) -> bytes:
    """A record as mapping frames one (a field 2 of its scope block)."""
    n, head = len(body), b""
    while n >= 0x80:
        head += bytes((n & 0x7F | 0x80,))
        n >>= 7
    return b"\x12" + head + bytes((n,)) + body


def _append(sp: SignalSpool, records: list[bytes]) -> None:
    sp.append(records)


def _drain(sp: SignalSpool, max_records: int = 7, max_bytes: int = 1 << 20) -> list[bytes]:
    got: list[bytes] = []
    while (batch := sp.read(max_records, max_bytes)) is not None:
        got += batch.records
        sp.ack(batch.end)
    return got


def _records(n: int, start: int = 0) -> list[bytes]:
    return [framed_record(f"record-{i}-".encode() * (1 + i % 5)) for i in range(start, start + n)]


def _logs(path: Path, max_bytes: int = 1 << 32, **kw: object) -> SignalSpool:
    """The logs spool of a Spool on path (closed with the test's spools)."""
    sp = Spool(str(path), max_bytes, **kw)  # type: ignore[arg-type]
    _open.append(sp)
    return sp.signal("logs")


_open: list[Spool] = []


@pytest.fixture(autouse=True)
def _close_spools() -> object:
    yield
    while _open:
        try:
            _open.pop().close()
        except OSError:
            pass


def _restart(path: Path, **kw: object) -> SignalSpool:
    """Close the spool on path (as a stop would) and open it again."""
    while _open:
        _open.pop().close()
    return _logs(path, **kw)


def _thirty_records_in_small_segments(path: Path, monkeypatch: pytest.MonkeyPatch) -> SignalSpool:
    """Records 0..29 written to 200-byte segments on path, then the spool
    restarted on them (every record is in a file, none in memory)."""
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 200)
    first = _logs(path)
    for i in range(0, 30, 3):
        _append(first, _records(3, start=i))
    return _restart(path)


def test_records_come_back_in_order_from_memory(tmp_path: Path) -> None:
    sp = _logs(tmp_path / "s")
    recs = _records(50)
    for i in range(0, 50, 10):
        _append(sp, recs[i:i + 10])
    assert _drain(sp) == recs
    assert sp.pending_bytes() == 0 and sp.read(10, 1 << 20) is None


def test_a_batch_not_acked_is_read_again(tmp_path: Path) -> None:
    sp = _logs(tmp_path / "s")
    _append(sp, _records(10))
    first = sp.read(4, 1 << 20)
    assert first is not None and sp.read(4, 1 << 20) == first  # a failed send retries the same records
    sp.ack(first.end)
    assert _drain(sp) == _records(10)[4:]


def test_a_batch_says_whether_it_holds_everything_pending(tmp_path: Path) -> None:
    """The exporter keeps a last, partial batch back only when nothing is
    pending after it: not when it was cut short, nor once more was written."""
    sp = _logs(tmp_path / "s")
    _append(sp, _records(10))
    first = sp.read(4, 1 << 20)
    assert first is not None and not sp.read_all(first.end)
    whole = sp.read(100, 1 << 20)
    assert whole is not None and sp.read_all(whole.end)
    _append(sp, _records(2))
    assert not sp.read_all(whole.end)


def test_what_memory_dropped_is_read_from_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "RECENT_BYTES", 300)
    sp = _logs(tmp_path / "s")
    recs = _records(200)
    for i in range(0, 200, 3):
        _append(sp, recs[i:i + 3])
    assert _drain(sp, max_records=5) == recs


def test_a_restart_sends_what_the_last_run_left_then_its_own(tmp_path: Path) -> None:
    old = _logs(tmp_path / "s")
    _append(old, _records(20))
    batch = old.read(8, 1 << 20)
    assert batch is not None
    old.ack(batch.end)
    new = _restart(tmp_path / "s")  # or killed: the cursor and the segment are on disk
    _append(new, _records(5, start=100))
    assert _drain(new, max_records=3) == _records(20)[8:] + _records(5, start=100)


def test_batches_span_segments_and_acked_segments_are_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 200)
    sp = _logs(tmp_path / "s")
    recs = _records(60)
    for i in range(0, 60, 4):
        _append(sp, recs[i:i + 4])
    assert len(list((tmp_path / "s").glob("logs-*.seg"))) > 3
    assert _drain(sp, max_records=9) == recs
    assert len(list((tmp_path / "s").glob("logs-*.seg"))) == 1  # the one being written


def test_eviction_drops_the_oldest_records_and_counts_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 200)
    sp = _logs(tmp_path / "s", 1000 * 4 // 3)
    recs = _records(100)
    for i in range(0, 100, 4):
        _append(sp, recs[i:i + 4])
    got = _drain(sp)
    assert sp.evicted > 0 and len(got) + sp.evicted == 100
    assert got == recs[sp.evicted:]


def test_a_record_cut_by_a_crash_is_skipped(tmp_path: Path) -> None:
    sp = _logs(tmp_path / "s")
    _append(sp, _records(3))
    seg = next((tmp_path / "s").glob("logs-*.seg"))
    with seg.open("ab") as f:
        f.write(frame(1000) + b"only part of it")
    new = _restart(tmp_path / "s")
    _append(new, _records(2, start=10))
    assert _drain(new) == _records(3) + _records(2, start=10)
    assert new.corrupt == 1


def test_a_record_larger_than_max_bytes_is_read_whole(tmp_path: Path) -> None:
    old = _logs(tmp_path / "s")
    big, small = framed_record(b"x" * 5000), framed_record(b"small")
    _append(old, [big, small])
    new = _restart(tmp_path / "s")
    assert _drain(new, max_bytes=1000) == [big, small]


def test_one_append_of_more_records_than_writev_takes_at_once(tmp_path: Path) -> None:
    sp = _logs(tmp_path / "s")
    recs = _records(1500)  # 3,000 buffers: three writev() calls
    _append(sp, recs)
    assert _drain(_restart(tmp_path / "s"), max_records=400) == recs


def test_a_batch_forgotten_while_sent_is_read_back_from_the_files_if_it_failed(tmp_path: Path) -> None:
    sp = _logs(tmp_path / "s")
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


# -- disk trouble ------------------------------------------------------------

def _failing_disk(monkeypatch: pytest.MonkeyPatch, err: int = errno.ENOSPC) -> list[bool]:
    """Writes fail with err (after writing a part of the frame, as a full
    disk does) while the returned flag is set."""
    failing = [True]
    real = SignalSpool._write_all

    def write_all(fd: int, records: list[bytes]) -> None:
        if failing[0]:
            os.write(fd, frame(len(records[0]))[:2])  # a partial frame, as a short write leaves it
            raise OSError(err, os.strerror(err))
        real(fd, records)

    monkeypatch.setattr(SignalSpool, "_write_all", staticmethod(write_all))
    monkeypatch.setattr(spool_mod, "_DISK_RETRY_S", 0.0)
    return failing


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS])
def test_a_disk_that_takes_no_write_loses_nothing_that_fits_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    sp = _logs(tmp_path / "s")
    _append(sp, _records(5))
    failing = _failing_disk(monkeypatch, err)
    _append(sp, _records(10, start=5))
    _append(sp, _records(10, start=15))
    assert sp.write_failed == 20 and sp.dropped_disk_full == 0
    failing[0] = False
    _append(sp, _records(5, start=25))  # the disk is back
    got = _drain(sp, max_records=4)
    assert sorted(got) == sorted(_records(30)) and len(got) == 30
    assert got[:20] == _records(20, start=5)  # memory-only records go first
    seg = max((tmp_path / "s").glob("logs-*.seg"))
    data = seg.read_bytes()
    p = 0
    while p < len(data):  # no partial frame left behind: every frame is whole
        n = int.from_bytes(data[p:p + 4], "little")
        assert spool_mod.valid_record(data, p + 4, n)
        p += 4 + n
    assert p == len(data)


@pytest.mark.parametrize("action", spool_mod.FULL_ACTIONS)
def test_when_disk_and_memory_are_full_the_chosen_records_give_way_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: str) -> None:
    recs = [framed_record(b"same size %03d" % i) for i in range(40)]
    monkeypatch.setattr(spool_mod, "HELD_BYTES", sum(map(len, recs[:10])))
    sp = _logs(tmp_path / "s", full_action=action)
    _failing_disk(monkeypatch)
    for i in range(0, 40, 5):
        _append(sp, recs[i:i + 5])
    got = _drain(sp)
    assert sp.write_failed == 40 and sp.dropped_disk_full == 30 and len(got) == 10
    assert got == (recs[30:] if action == "drop-oldest" else recs[:10])


def test_drop_oldest_spares_a_batch_being_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recs = [framed_record(b"same size %03d" % i) for i in range(20)]
    monkeypatch.setattr(spool_mod, "HELD_BYTES", sum(map(len, recs[:10])))
    sp = _logs(tmp_path / "s", full_action="drop-oldest")
    _failing_disk(monkeypatch)
    _append(sp, recs[:10])
    sending = sp.read(4, 1 << 20)
    assert sending is not None and sending.records == recs[:4]
    _append(sp, recs[10:20])
    sp.ack(sending.end)
    # The oldest that were not being sent gave way: 4..13.
    assert sending.records + _drain(sp) == recs[:4] + recs[14:20] and sp.dropped_disk_full == 10


def test_start_on_a_disk_that_takes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*_: object, **__: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SignalSpool, "_new_segment", no_space)
    sp = _logs(tmp_path / "s")
    _append(sp, _records(3))
    assert _drain(sp) == _records(3) and sp.write_failed == 3


# -- a damaged spool repairs itself -----------------------------------------

def test_a_corrupt_record_in_the_middle_is_skipped_and_what_follows_is_read(tmp_path: Path) -> None:
    sp = _logs(tmp_path / "s")
    recs = _records(10)
    _append(sp, recs)
    seg = max((tmp_path / "s").glob("logs-*.seg"))
    data = bytearray(seg.read_bytes())
    third = sum(4 + len(r) for r in recs[:3])
    data[third:third + 4] = (123456).to_bytes(4, "little")  # the 4th record's length, garbage
    data[third + 4] = 0x00  # and its tag
    seg.write_bytes(bytes(data))
    new = _restart(tmp_path / "s")
    assert _drain(new, max_records=2) == recs[:3] + recs[4:]
    assert new.corrupt == 1


def test_a_cursor_past_every_segment_is_reset_and_counted(tmp_path: Path) -> None:
    sp = _logs(tmp_path / "s")
    _append(sp, _records(5))
    _restart(tmp_path / "s")
    while _open:
        _open.pop().close()
    (tmp_path / "s" / "logs.cursor").write_text("999999 12\n")
    new = _logs(tmp_path / "s")
    _append(new, _records(2, start=5))
    assert _drain(new) == _records(7) and new.cursor_reset == 1
    assert all(int(p.name[5:-4]) > 999999 for p in (tmp_path / "s").glob("logs-*.seg"))


def test_a_missing_cursor_reads_from_the_oldest_segment(tmp_path: Path) -> None:
    _append(_logs(tmp_path / "s"), _records(4))
    while _open:
        _open.pop().close()
    (tmp_path / "s" / "logs.cursor").unlink()
    new = _logs(tmp_path / "s")
    assert _drain(new) == _records(4) and new.cursor_reset == 1


def test_foreign_files_in_the_spool_are_ignored_and_counted(tmp_path: Path) -> None:
    d = tmp_path / "s"
    _append(_logs(d), _records(4))
    while _open:
        _open.pop().close()
    (d / "logs-old.seg").write_bytes(b"whatever")
    (d / "notes.txt").write_text("x")
    sp = Spool(str(d), 1 << 32)
    _open.append(sp)
    assert _drain(sp.signal("logs")) == _records(4) and sp.dir.foreign_files == 2


def test_a_segment_deleted_behind_the_spool_is_counted_not_fatal(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "s"
    sp = _thirty_records_in_small_segments(d, monkeypatch)
    segs = sorted(d.glob("logs-*.seg"))
    segs[1].unlink()  # an operator freeing disk space
    got = _drain(sp)
    assert len(got) + sp.segment_lost == 30 and sp.segment_lost > 0
    assert got == [r for r in _records(30) if r in got]


def test_eviction_while_a_batch_from_the_files_is_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The read/evict race: a segment evicted while its records are read
    or sent is neither an error nor a wrong read."""
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 300)
    monkeypatch.setattr(spool_mod, "RECENT_BYTES", 1)
    sp = _logs(tmp_path / "s", 2000)
    recs = _records(200)
    _append(sp, recs[:5])
    batch = sp.read(3, 1 << 20)
    assert batch is not None and batch.records == recs[:3]
    for i in range(5, 200, 5):
        _append(sp, recs[i:i + 5])  # the segment the batch came from is evicted
    sp.ack(batch.end)
    got = _drain(sp)
    assert len(got) + sp.evicted >= 197 and got == recs[200 - len(got):]


# -- planted files -----------------------------------------------------------

def _root_file(tmp_path: Path) -> tuple[Path, os.stat_result, bytes]:
    victim = tmp_path / "victim"
    victim.write_bytes(b"root's secret\n")
    victim.chmod(0o644)
    return victim, victim.stat(), victim.read_bytes()


def _unchanged(victim: Path, st: os.stat_result, data: bytes) -> None:
    now = victim.stat()
    assert (now.st_uid, now.st_gid, now.st_mode, victim.read_bytes()) == (st.st_uid, st.st_gid, st.st_mode, data)


@pytest.mark.parametrize("name", ["logs.cursor", "heartbeat", "traces.cursor"])
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_link_planted_for_a_spool_file_is_never_written_through(tmp_path: Path, name: str, link: str) -> None:
    victim, st, data = _root_file(tmp_path)
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    (d / name).symlink_to(victim) if link == "symlink" else os.link(victim, d / name)
    sp = Spool(str(d), 1 << 32)
    _append(sp.signal("logs"), _records(3))
    sp.beat()
    sp.signal("logs").ack(sp.signal("logs").read(10, 1 << 20).end)  # type: ignore[union-attr]
    sp.close()
    _unchanged(victim, st, data)
    assert sp.dir.unsafe_files == 1
    assert not (d / name).is_symlink() and (d / name).stat().st_nlink == 1


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_link_planted_as_a_segment_is_never_read(tmp_path: Path, link: str) -> None:
    victim, st, data = _root_file(tmp_path)
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    seg = d / "logs-000000000001.seg"
    seg.symlink_to(victim) if link == "symlink" else os.link(victim, seg)
    sp = Spool(str(d), 1 << 32)
    _open.append(sp)
    _append(sp.signal("logs"), _records(2))
    assert _drain(sp.signal("logs")) == _records(2)  # nothing of the victim
    assert sp.dir.unsafe_files == 1
    _unchanged(victim, st, data)


def test_a_spool_directory_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "s").symlink_to(tmp_path / "real")
    with pytest.raises(UsageError, match="symlink"):
        Spool(str(tmp_path / "s"), 1 << 32)
    assert list((tmp_path / "real").iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another uid")
def test_a_spool_directory_of_another_uid_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    os.chown(d, 4242, 4242)
    with pytest.raises(UsageError, match="belongs to uid 4242"):
        Spool(str(d), 1 << 32)
    assert list(d.iterdir()) == [] and d.stat().st_uid == 4242


@pytest.mark.parametrize("mode,allow,after", [(0o700, False, 0o700), (0o755, False, 0o700), (0o750, True, 0o750),
                                              (0o755, True, 0o750), (0o770, True, None), (0o702, False, None),
                                              (0o1777, False, None)])
def test_spool_directory_mode(tmp_path: Path, mode: int, allow: bool, after: int | None) -> None:
    """Writable by others: refused; readable: closed (but for the group
    with --spool-allow-group-read)."""
    d = tmp_path / "s"
    d.mkdir()
    d.chmod(mode)
    if after is not None:
        Spool(str(d), 1 << 32, allow_group_read=allow).close()
        assert d.stat().st_mode & 0o7777 == after
    else:
        with pytest.raises(UsageError, match="mode"):
            Spool(str(d), 1 << 32, allow_group_read=allow)
        assert d.stat().st_mode & 0o7777 == mode


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another user")
def test_owner_gets_the_directory_and_what_the_spool_created_only(tmp_path: Path) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    (d / "logs.cursor").write_text("")  # an earlier run's, root's
    sp = Spool(str(d), 1 << 32, nobody)
    sp.close()
    owners = {p.name: p.stat().st_uid for p in d.iterdir()}
    assert d.stat().st_uid == nobody.pw_uid
    assert owners.pop("logs.cursor") == 0
    assert set(owners.values()) == {nobody.pw_uid}, owners


# -- time --------------------------------------------------------------------

def test_gap_from_a_heartbeat_in_the_future_is_not_negative(tmp_path: Path) -> None:
    """A wall clock stepped back between heartbeat and start (faked: the
    heartbeat says an hour ahead)."""
    import time
    d = tmp_path / "s"
    Spool(str(d), 1 << 32, boot_id="b1").close()
    boot = spool_mod._boottime_ns()
    future = time.time_ns() + 3600 * 10**9
    (d / "heartbeat").write_text(f"{future} {boot - 5 * 10**9} b1")
    sp = Spool(str(d), 1 << 32, boot_id="b1")
    gap = sp.gap()
    sp.close()
    assert gap is not None and 5 <= gap.seconds < 60 and gap.start_ns < gap.end_ns
    assert -3660 < gap.clock_step_s < -3540 and sp.clock_steps == 1


def test_gap_from_an_old_heartbeat_in_the_future_is_zero(tmp_path: Path) -> None:
    d = tmp_path / "s"
    Spool(str(d), 1 << 32).close()
    import time
    (d / "heartbeat").write_text(str(time.time_ns() + 3600 * 10**9))  # the format before boot times
    sp = Spool(str(d), 1 << 32, boot_id="b2")
    gap = sp.gap()
    sp.close()
    assert gap is not None and gap.seconds == 0 and gap.clock_step_s < -3500 and sp.clock_steps == 1


def test_a_link_named_lock_is_not_touched(tmp_path: Path) -> None:
    """The lock is the directory's own flock: a file named lock (earlier
    versions used one) is never opened."""
    victim, st, data = _root_file(tmp_path)
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    (d / "lock").symlink_to(victim)
    sp = Spool(str(d), 1 << 32)
    with pytest.raises(UsageError, match="in use by another otel-exec"):
        Spool(str(d), 1 << 32)
    sp.close()
    _unchanged(victim, st, data)


def test_a_full_disk_of_sent_records_is_freed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a disk the spool itself filled, with everything in it sent: a
    failed write leaves that segment, which is deleted at once, so the next
    try finds the space."""
    d = tmp_path / "s"
    sp = _logs(d)
    _append(sp, _records(5))
    assert _drain(sp) == _records(5)
    (first,) = d.glob("logs-*.seg")
    failing = _failing_disk(monkeypatch)
    _append(sp, _records(3, start=5))
    assert not first.exists()
    failing[0] = False
    _append(sp, _records(2, start=8))
    assert _drain(sp) == _records(5, start=5)
    assert len(list(d.glob("logs-*.seg"))) == 1


def test_a_written_segment_the_collector_has_is_left_and_deleted(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "SENT_SEGMENT_BYTES", 300)
    d = tmp_path / "s"
    sp = _logs(d)
    for i in range(0, 40, 4):
        _append(sp, _records(4, start=i))
        _drain(sp)
    segs = list(d.glob("logs-*.seg"))
    assert len(segs) <= 1 and all(p.stat().st_size < 600 for p in segs)  # not 40 records' worth
    _append(sp, _records(2, start=40))
    assert _drain(sp) == _records(2, start=40)


@pytest.mark.parametrize("where", ["memory", "files", "held"])
def test_a_rejected_batch_acked_unsent_blocks_nothing_behind_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                where: str) -> None:
    """The export loop drops a batch the collector refuses for good by
    acking it: the cursor moves past it and the next read is what follows."""
    if where == "files":
        monkeypatch.setattr(spool_mod, "RECENT_BYTES", 1)
    sp = _logs(tmp_path / "s")
    if where == "held":
        _failing_disk(monkeypatch)
    recs = _records(12)
    _append(sp, recs)
    rejected = sp.read(5, 1 << 20)
    assert rejected is not None and rejected.records == recs[:5]
    sp.forget(rejected.end)
    sp.ack(rejected.end)
    assert _drain(sp) == recs[5:]


def test_eviction_counts_only_the_unsent_records_of_a_partly_sent_segment(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The oldest segment evicted while the cursor is inside it: the records
    before the cursor were sent, and are not counted lost."""
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 200)
    sp = _logs(tmp_path / "s", 1000 * 4 // 3)
    recs = _records(100)
    _append(sp, recs[:4])
    sent = sp.read(2, 1 << 20)
    assert sent is not None and sent.records == recs[:2]
    sp.ack(sent.end)
    for i in range(4, 100, 4):
        _append(sp, recs[i:i + 4])
    got = _drain(sp)
    assert sp.evicted > 0 and 2 + sp.evicted + len(got) == 100
    assert got == recs[2 + sp.evicted:]


def _heartbeat_gap(tmp_path: Path, line: str, boot_id: str = "b1") -> tuple[spool_mod.Gap | None, int]:
    d = tmp_path / "s"
    Spool(str(d), 1 << 32, boot_id=boot_id).close()
    (d / "heartbeat").write_text(line)
    sp = Spool(str(d), 1 << 32, boot_id=boot_id)
    try:
        return sp.gap(), sp.clock_steps
    finally:
        sp.close()


def test_gap_on_the_same_boot_is_measured_on_boottime(tmp_path: Path) -> None:
    import time
    s = 10**9
    wall, boot = time.time_ns(), spool_mod._boottime_ns()
    gap, steps = _heartbeat_gap(tmp_path, f"{wall - 5 * s} {boot - 5 * s} b1")
    assert gap is not None and 5 <= gap.seconds < 30 and gap.clock_step_s == 0.0 and steps == 0
    assert gap.end_ns - gap.start_ns == int(gap.seconds * 1e9) and abs(gap.end_ns - time.time_ns()) < 30 * s
    # The wall clock stepped 100 s forward in between: the gap stays ~5 s.
    gap, steps = _heartbeat_gap(tmp_path, f"{wall - 105 * s} {boot - 5 * s} b1")
    assert gap is not None and 5 <= gap.seconds < 30 and 99 < gap.clock_step_s < 101 and steps == 1


def test_gap_across_boots_is_the_wall_clock_s(tmp_path: Path) -> None:
    import time
    s = 10**9
    wall, boot = time.time_ns(), spool_mod._boottime_ns()
    for line in (f"{wall - 100 * s} {boot - 5 * s} other-boot", f"{wall - 100 * s} {boot + 50 * s} b1",
                 f"{wall - 100 * s} {boot - 5 * s} -", f"{wall - 100 * s} x b1", f"{wall - 100 * s} {boot} \xff"):
        gap, steps = _heartbeat_gap(tmp_path, line)
        assert gap is not None and 100 <= gap.seconds < 130, line
        assert gap.clock_step_s == 0.0 and steps == 0, line  # forward: no step known


@pytest.mark.parametrize("line", ["", "garbage 1 b1", "\n"])
def test_no_gap_without_a_readable_heartbeat(tmp_path: Path, line: str) -> None:
    assert _heartbeat_gap(tmp_path, line) == (None, 0)


def test_the_heartbeat_is_written_by_beat_and_at_close(tmp_path: Path) -> None:
    import time
    d = tmp_path / "s"
    sp = Spool(str(d), 1 << 32, boot_id="b9")
    sp.close()
    assert (d / "heartbeat").read_bytes() == b""  # never watched: nothing claimed
    before = time.time_ns()
    sp = Spool(str(d), 1 << 32, boot_id="b9")
    sp.beat()
    line = (d / "heartbeat").read_bytes()
    assert len(line) == 96 and line.endswith(b"\n")
    wall, boot, boot_id = line.split()
    assert before <= int(wall) <= time.time_ns() and 0 < int(boot) <= spool_mod._boottime_ns()
    assert boot_id == b"b9"
    (d / "heartbeat").write_bytes(b"")
    sp.beat()  # within the second: not written again
    assert (d / "heartbeat").read_bytes() == b""
    sp.close()
    assert (d / "heartbeat").read_bytes().split()[2] == b"b9"
    sp = Spool(str(d), 1 << 32)
    sp.beat()
    sp.close()
    assert (d / "heartbeat").read_bytes().split()[2] == b"-"  # no boot id known


def test_pending_bytes_oldest_pending_and_stats(tmp_path: Path) -> None:
    import time
    d = tmp_path / "s"
    sp = Spool(str(d), 1 << 32)
    _open.append(sp)
    logs = sp.signal("logs")
    assert logs.pending_bytes() == 0 and logs.oldest_pending_ns() is None
    before = time.time_ns()
    records = _records(10)
    _append(logs, records)
    size = sum(len(frame(len(r))) + len(r) for r in records)
    assert logs.pending_bytes() == size
    oldest = logs.oldest_pending_ns()
    assert oldest is not None and before - 10**9 <= oldest <= time.time_ns()
    batch = logs.read(4, 1 << 20)
    assert batch is not None
    logs.ack(batch.end)
    assert logs.pending_bytes() == size - sum(len(frame(len(r))) + len(r) for r in records[:4])
    assert _drain(logs) == records[4:]
    assert logs.pending_bytes() == 0 and logs.oldest_pending_ns() is None
    assert logs.stats() == {"spool_evicted": 0, "spool_write_failed": 0, "dropped_disk_full": 0,
                            "spool_corrupt": 0, "spool_segment_lost": 0, "spool_cursor_reset": 0,
                            "spool_held_bytes": 0}
    assert sp.stats() == {"spool_unsafe_files": 0, "spool_foreign_files": 0, "clock_steps": 0}


def test_valid_record_checks_the_tag_and_the_length_varint() -> None:
    body = b"x" * 200
    rec = b"\x12\xc8\x01" + body  # tag, varint 200, body
    data = b"junk" + rec
    assert spool_mod.valid_record(data, 4, len(rec))
    assert spool_mod.valid_record(memoryview(data), 4, len(rec))
    assert not spool_mod.valid_record(data, 4, len(rec) - 1)  # the varint says 200
    assert not spool_mod.valid_record(data, 4, len(rec) + 1)
    assert not spool_mod.valid_record(b"\x13" + rec[1:], 0, len(rec))  # another field
    assert spool_mod.valid_record(b"\x12\x00", 0, 2) and not spool_mod.valid_record(b"\x12", 0, 1)
    assert not spool_mod.valid_record(b"\x12" + b"\x80" * 12, 0, 13)  # a varint that never ends
    assert spool_mod.valid_record(b"\x12\x0a" + b"\x80" * 10, 0, 12)  # it ends within ten bytes of value
    long_varint = b"\x12" + b"\x80" * 9 + b"\x00"  # ten bytes of varint, value 0
    assert spool_mod.valid_record(long_varint, 0, 11)


def test_next_record_finds_the_first_valid_frame_after_start() -> None:
    rec = framed_record(b"hello")
    good = frame(len(rec)) + rec
    assert spool_mod._next_record(good, 0) == 0 and spool_mod._next_record(good, 1) is None
    assert spool_mod._next_record(b"\x00" * 3 + good, 0) == 3
    assert spool_mod._next_record(b"\x00" * 3 + good + good, 4) == 3 + len(good)
    # A tag byte whose length prefix runs past the end, or does not frame a record.
    trap = frame(1000) + rec
    assert spool_mod._next_record(b"\x00" + trap + good, 0) == 1 + len(trap)
    assert spool_mod._next_record(b"\x00" + frame(2) + b"\x12\x05" + good, 0) == 7
    assert spool_mod._next_record(b"\x00" * 3 + frame(len(rec)) + rec[:-1], 0) is None
    assert spool_mod._next_record(b"\x12\x12\x12\x12\x12", 0) is None


def test_batches_from_the_files_hold_what_fits_max_bytes_exactly(tmp_path: Path) -> None:
    recs = [framed_record(b"%03d" % i * 10) for i in range(12)]  # all the same length
    n = 4 + len(recs[0])  # a record and its length prefix, as read from a segment
    _append(_logs(tmp_path / "s"), recs)
    new = _restart(tmp_path / "s")
    for max_bytes, want in ((3 * n, 3), (3 * n - 1, 2), (n - 5, 1), (5 * n, 4)):
        batch = new.read(4, max_bytes)
        assert batch is not None and len(batch.records) == want, (max_bytes, len(batch.records))
        new.ack(batch.end)
    assert _drain(new) == recs[10:]


def test_a_corrupt_record_with_the_next_one_beyond_the_read_window(tmp_path: Path) -> None:
    """The read window (max_bytes) ends before a good record follows the
    corrupt one: the rest of the segment is searched for it."""
    recs = [framed_record(b"a" * 3000)] + _records(3)
    sp = _logs(tmp_path / "s")
    _append(sp, recs)
    seg = max((tmp_path / "s").glob("logs-*.seg"))
    data = bytearray(seg.read_bytes())
    data[4] = 0x00  # the first record's tag
    seg.write_bytes(bytes(data))
    new = _restart(tmp_path / "s")
    assert _drain(new, max_bytes=1000) == recs[1:]
    assert new.corrupt == 1


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_disk_trouble_is_warned_once_per_episode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    import logging
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    sp = _logs(d)
    failing = _failing_disk(monkeypatch)
    _append(sp, _records(2))
    _append(sp, _records(2, start=2))  # the same episode: no second warning
    assert _warnings(caplog) == [
        f"spool {d}: cannot write logs records (No space left on device): they wait in memory (up to 8 MiB) "
        "and are sent first; writing is tried again every 0 s"]
    failing[0] = False
    _append(sp, _records(1, start=4))
    assert _warnings(caplog)[1:] == [f"spool {d}: logs segments are written again (4 records could not be, "
                                     "0 of them dropped)"]
    caplog.clear()
    failing[0] = True
    _append(sp, _records(1, start=5))  # the same cause within the minute: quiet, and quiet when it ends
    failing[0] = False
    _append(sp, _records(1, start=6))
    assert _warnings(caplog) == []
    monkeypatch.setattr(spool_mod.time, "monotonic", lambda: 10.0**9)  # a minute later (and more)
    failing[0] = True
    _append(sp, _records(1, start=7))
    assert len(_warnings(caplog)) == 1 and "No space left on device" in _warnings(caplog)[0]
    assert sorted(_drain(sp)) == sorted(_records(8)) and sp.write_failed == 6


def test_another_cause_of_disk_trouble_is_warned_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    import logging
    caplog.set_level(logging.WARNING)
    sp = _logs(tmp_path / "s")
    failing = _failing_disk(monkeypatch)
    _append(sp, _records(1))
    failing[0] = False
    _append(sp, _records(1, start=1))
    _failing_disk(monkeypatch, errno.EIO)
    _append(sp, _records(1, start=2))
    assert [m.split("(")[1].split(")")[0] for m in _warnings(caplog) if "cannot write" in m] == [
        "No space left on device", "Input/output error"]


def test_the_disk_is_tried_again_only_after_the_retry_interval(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    sp = _logs(tmp_path / "s")
    failing = _failing_disk(monkeypatch)
    monkeypatch.setattr(spool_mod, "_DISK_RETRY_S", 1.0)
    clock = [1000.0]
    monkeypatch.setattr(spool_mod.time, "monotonic", lambda: clock[0])
    _append(sp, _records(1))
    failing[0] = False
    clock[0] += 0.5
    _append(sp, _records(1, start=1))  # the disk may be back: not tried before the second is out
    assert sp.write_failed == 2 and not any(p.stat().st_size for p in (tmp_path / "s").glob("logs-*.seg"))
    clock[0] += 0.6
    _append(sp, _records(1, start=2))
    assert sp.write_failed == 2 and sum(p.stat().st_size for p in (tmp_path / "s").glob("logs-*.seg")) > 0
    assert _drain(sp) == _records(3)


def test_memory_full_is_warned_once_per_disk_episode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    import logging
    caplog.set_level(logging.WARNING)
    recs = [framed_record(b"same size %03d" % i) for i in range(20)]
    monkeypatch.setattr(spool_mod, "HELD_BYTES", sum(map(len, recs[:2])))
    d = tmp_path / "s"
    sp = _logs(d, full_action="drop-newest")
    failing = _failing_disk(monkeypatch)
    for r in recs[:6]:
        _append(sp, [r])
    full = [m for m in _warnings(caplog) if "memory window" in m]
    assert full == [f"spool {d}: the disk and the 0 MiB memory window for logs are full: dropping the newest "
                    "records (--spool-full-action drop-newest), counted as logs_dropped_disk_full"]
    assert sp.dropped_disk_full == 4
    failing[0] = False
    _append(sp, [recs[6]])
    failing[0] = True
    monkeypatch.setattr(spool_mod.time, "monotonic", lambda: 10.0**9)
    for r in recs[7:12]:
        _append(sp, [r])
    assert len([m for m in _warnings(caplog) if "memory window" in m]) == 2


def test_a_segment_deleted_behind_the_spool_is_warned_with_its_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    sp = _thirty_records_in_small_segments(d, monkeypatch)
    batch = sp.read(1, 1 << 20)
    assert batch is not None
    sp.ack(batch.end)  # the cursor inside the first segment
    segs = sorted(d.glob("logs-*.seg"))
    per_segment = []
    for seg in segs[:3]:
        data, n, pos = seg.read_bytes(), 0, 0
        while pos < len(data):
            pos, n = pos + 4 + int.from_bytes(data[pos:pos + 4], "little"), n + 1
        per_segment.append(n)
    segs[0].unlink()
    segs[2].unlink()
    got = _drain(sp)
    lost = [m for m in _warnings(caplog) if "records are lost" in m]
    assert [m.split(";")[0] for m in lost] == [f"spool {d}: {segs[0].name} was deleted by someone else",
                                               f"spool {d}: {segs[2].name} was deleted by someone else"]
    counts = [int(m.split("its ")[1].split()[0]) for m in lost]
    assert counts == [per_segment[0] - 1, per_segment[2]] and sp.segment_lost == sum(counts)
    assert len(got) + sp.segment_lost == 29 and got == [r for r in _records(30)[1:] if r in got]
