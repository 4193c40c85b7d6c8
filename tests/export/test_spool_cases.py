"""The spool (otel_exec.export.spool) on the cases its mutation run showed
untested: how the directory is opened and checked, what a start finds in
it (segments, cursors, foreign names), and the exact warnings, counts and
messages each of them gives."""
from __future__ import annotations

import fcntl
import logging
import os
import pwd
import resource
from pathlib import Path
from typing import Iterator

import pytest

from otel_exec.errors import UsageError
from otel_exec.export import spool as spool_mod
from otel_exec.export.spool import SignalSpool, Spool, SpoolDirectory, frame

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another uid")


def small_record(i: int) -> bytes:
    """A record as the encoder frames one (tag 0x12, a one-byte length)."""
    body = b"rec %04d " % i + b"." * (i % 7)
    return b"\x12" + bytes((len(body),)) + body


def put(sp: SignalSpool, ids: range) -> None:
    sp.append([small_record(i) for i in ids])


def read_all(sp: SignalSpool) -> list[bytes]:
    got: list[bytes] = []
    while (batch := sp.read(3, 1 << 20)) is not None:
        got += batch.records
        sp.ack(batch.end)
    return got


def want(ids: range) -> list[bytes]:
    return [small_record(i) for i in ids]


_spools: list[Spool] = []


@pytest.fixture(autouse=True)
def _close_spools() -> Iterator[None]:
    yield
    while _spools:
        _spools.pop().close()


def spool(path: Path, **kw: object) -> Spool:
    sp = Spool(str(path), 1 << 32, **kw)  # type: ignore[arg-type]
    _spools.append(sp)
    return sp


def stop_all() -> None:
    while _spools:
        _spools.pop().close()


def segments_of_one_segment_each(d: Path, batches: list[range]) -> list[Path]:
    """Segments an earlier run left, one per batch of records (each run
    starts a segment of its own)."""
    for ids in batches:
        put(spool(d).signal("logs"), ids)
        stop_all()
    return sorted(p for p in d.glob("logs-*.seg") if p.stat().st_size)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.fixture
def umask() -> Iterator[object]:
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


# -- the directory ----------------------------------------------------------

def test_the_root_directory_is_not_a_spool_directory_name() -> None:
    with pytest.raises(UsageError, match=r"^spool directory /: not a directory name$"):
        Spool("/", 1 << 32)


def test_missing_parents_are_made_0755_and_the_spool_0700(tmp_path: Path, umask: object) -> None:
    d = tmp_path / "a" / "b" / "s"
    spool(d).close()
    _spools.clear()
    assert [(p.stat().st_mode & 0o7777) for p in (tmp_path / "a", tmp_path / "a" / "b", d)] == [0o755, 0o755, 0o700]


def test_a_spool_directory_made_under_umask_0_is_private(tmp_path: Path, umask: object) -> None:
    os.umask(0)
    spool(tmp_path / "s")
    assert (tmp_path / "s").stat().st_mode & 0o7777 == 0o700


def test_a_parent_others_can_write_to_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "open"
    parent.mkdir()
    parent.chmod(0o777)
    with pytest.raises(UsageError) as e:
        Spool(str(parent / "s"), 1 << 32)
    assert str(e.value) == f"spool directory {parent}/s: {parent}: writable by other users (mode 0777)"
    assert not (parent / "s").exists()


@pytest.mark.parametrize("where", ["parent", "name"])
def test_a_name_too_long_is_a_usage_error_naming_it(tmp_path: Path, where: str) -> None:
    path = tmp_path / ("p" * 300) / "s" if where == "parent" else tmp_path / ("s" * 300)
    with pytest.raises(UsageError) as e:
        Spool(str(path), 1 << 32)
    assert str(e.value) == f"spool directory {path}: File name too long"


def test_a_spool_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "s"
    f.write_bytes(b"not a directory")
    with pytest.raises(UsageError) as e:
        Spool(str(f), 1 << 32)
    assert str(e.value) == (f"spool directory {f} is a symlink or not a directory; "
                            "--spool-dir must name the directory itself")
    assert f.read_bytes() == b"not a directory"


@needs_root
@pytest.mark.parametrize("user", [False, True])
@pytest.mark.parametrize("uid", [1, 4242])
def test_a_spool_directory_of_another_uid_is_refused_by_name(tmp_path: Path, user: bool, uid: int) -> None:
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    os.chown(d, uid, uid)
    with pytest.raises(UsageError) as e:
        Spool(str(d), 1 << 32, pwd.getpwnam("nobody") if user else None)
    assert str(e.value) == f"spool directory {d} belongs to uid {uid}, not to the agent{' or --user' if user else ''}"


@pytest.mark.parametrize("mode,allow,after", [(0o701, False, 0o700), (0o751, True, 0o750), (0o741, True, 0o740),
                                              (0o711, True, 0o710), (0o700, True, 0o700)])
def test_only_the_group_s_read_and_search_bits_are_kept_when_allowed(tmp_path: Path, mode: int, allow: bool,
                                                                     after: int) -> None:
    d = tmp_path / "s"
    d.mkdir()
    d.chmod(mode)
    spool(d, allow_group_read=allow)
    assert d.stat().st_mode & 0o7777 == after


@needs_root
def test_a_parent_directory_of_the_user_is_trusted_with_user_only(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    parent = tmp_path / "home"
    parent.mkdir(mode=0o755)
    os.chown(parent, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(UsageError, match=f"owned by uid {nobody.pw_uid}, which the agent does not trust"):
        Spool(str(parent / "s"), 1 << 32)
    spool(parent / "s", owner=nobody)
    assert (parent / "s").stat().st_uid == nobody.pw_uid


@needs_root
def test_a_directory_the_user_already_owns_is_not_chowned(tmp_path: Path) -> None:
    """Found, not made: its group stays whatever the operator chose."""
    nobody = pwd.getpwnam("nobody")
    d = tmp_path / "s"
    d.mkdir(mode=0o750)
    os.chown(d, nobody.pw_uid, 4242)
    spool(d, owner=nobody, allow_group_read=True)
    st = d.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (nobody.pw_uid, 4242, 0o750)


@needs_root
def test_a_directory_made_for_the_user_is_handed_to_the_user(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    d = tmp_path / "s"
    spool(d, owner=nobody)
    st = d.stat()
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)


def test_a_second_spool_on_the_directory_is_refused_by_name(tmp_path: Path) -> None:
    spool(tmp_path / "s")
    with pytest.raises(UsageError) as e:
        Spool(str(tmp_path / "s"), 1 << 32)
    assert str(e.value) == (f"spool directory {tmp_path / 's'} is in use by another otel-exec "
                            "(give each agent its own --spool-dir)")


def test_an_unknown_full_action_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as e:
        Spool(str(tmp_path / "s"), 1 << 32, full_action="drop-all")
    assert str(e.value) == "--spool-full-action must be one of drop-oldest, drop-newest"
    assert not (tmp_path / "s").exists()


# -- what a start finds -----------------------------------------------------

@pytest.mark.parametrize("n", [1, 5, 6, 7])
def test_foreign_files_are_warned_with_the_first_five_names(tmp_path: Path, n: int,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    spool(d)
    stop_all()
    names = [f"junk{i}" for i in range(n)]
    for name in names:
        (d / name).write_bytes(b"")
    sp = spool(d)
    listed = ", ".join(names[:5]) + (", ..." if n > 5 else "")
    assert warnings_of(caplog) == [f"spool directory {d}: ignoring {n} files it does not use: {listed}"]
    assert sp.stats()["spool_foreign_files"] == n


def test_the_spool_s_own_files_are_not_foreign(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    sp = spool(d)
    sp.beat()
    stop_all()
    (d / "lock").write_bytes(b"")  # an earlier version's
    assert {p.name for p in d.iterdir()} >= {"lock", "heartbeat", "logs.cursor", "traces.cursor"}
    assert spool(d).stats()["spool_foreign_files"] == 0 and warnings_of(caplog) == []


def test_each_signal_reads_back_its_own_segments(tmp_path: Path) -> None:
    d = tmp_path / "s"
    sp = spool(d)
    put(sp.signal("logs"), range(0, 4))
    put(sp.signal("traces"), range(100, 103))
    stop_all()
    sp = spool(d)
    assert read_all(sp.signal("traces")) == want(range(100, 103))
    assert read_all(sp.signal("logs")) == want(range(0, 4))


def test_a_segment_with_a_short_number_is_read_in_number_order(tmp_path: Path) -> None:
    d = tmp_path / "s"
    first, second = segments_of_one_segment_each(d, [range(0, 3), range(3, 6)])
    first.rename(d / "logs-7.seg")  # 7 < second's number: still read first
    second.rename(d / "logs-000000000000000010.seg")
    (d / "logs.cursor").unlink()
    assert read_all(spool(d).signal("logs")) == want(range(0, 6))


def limits_after_a_start(d: Path, before: tuple[int, int]) -> tuple[int, int]:
    """RLIMIT_NOFILE after a spool starts on d under the limits `before`:
    in a child process, since a lowered hard limit cannot be raised back."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, before)
            Spool(str(d), 1 << 32).close()
            os.write(w, b"%d %d" % resource.getrlimit(resource.RLIMIT_NOFILE))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = f.read().split()
    os.waitpid(pid, 0)
    assert len(got) == 2, "the spool did not start in the child"
    return int(got[0]), int(got[1])


def test_the_open_file_limit_makes_room_for_every_segment(tmp_path: Path) -> None:
    """Every segment stays open until sent: the soft limit is raised to
    their number plus 1024, never above the hard limit, never lowered."""
    d = tmp_path / "s"
    segments_of_one_segment_each(d, [range(0, 1), range(1, 2), range(2, 3)])
    put(spool(d).signal("traces"), range(3, 4))
    stop_all()
    assert len(list(d.glob("traces-*.seg"))) >= 1
    assert limits_after_a_start(d, (100, 4096)) == (len(list(d.glob("*.seg"))) - 2 + 1024, 4096)
    assert limits_after_a_start(d, (100, 1000)) == (1000, 1000)
    want = len(list(d.glob("*.seg"))) + 1024  # each start adds a segment per signal
    assert limits_after_a_start(d, (want, 4096)) == (want, 4096)
    assert limits_after_a_start(d, (8192, 16384)) == (8192, 16384)


# -- the cursor a start finds -------------------------------------------------

def three_segments(d: Path) -> list[Path]:
    """logs-1 to logs-3 of earlier runs, holding records 0-2, 3-5, 6-8."""
    segs = segments_of_one_segment_each(d, [range(0, 3), range(3, 6), range(6, 9)])
    assert [p.name for p in segs] == [f"logs-{n:012d}.seg" for n in (1, 2, 3)]
    return segs


def cursor_file(d: Path) -> bytes:
    return (d / "logs.cursor").read_bytes()


def cursor_line(segment: int, offset: int) -> bytes:
    return f"{segment} {offset}".ljust(31).encode() + b"\n"


def test_the_first_start_writes_the_cursor_of_its_first_segment(tmp_path: Path) -> None:
    d = tmp_path / "s"
    sp = spool(d)
    assert cursor_file(d) == cursor_line(1, 0)
    assert sorted(p.name for p in d.glob("*.seg")) == ["logs-000000000001.seg", "traces-000000000001.seg"]
    assert sp.stats()["spool_unsafe_files"] == 0 and sp.signal("logs").stats()["spool_cursor_reset"] == 0


def test_a_start_numbers_its_segment_after_every_name_and_the_cursor(tmp_path: Path) -> None:
    d = tmp_path / "s"
    three_segments(d)
    sp = spool(d)
    assert (d / "logs-000000000004.seg").exists() and not (d / "logs-000000000005.seg").exists()
    assert sp.stats()["spool_unsafe_files"] == 0
    stop_all()
    (d / "logs.cursor").write_text("50 0\n")
    for p in d.glob("logs-*.seg"):
        p.unlink()
    spool(d)
    assert sorted(p.name for p in d.glob("logs-*.seg")) == ["logs-000000000051.seg"]


def test_a_cursor_before_the_oldest_segment_reads_it_from_its_start(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The segments before it were sent and deleted: no reset, no warning."""
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    segs = three_segments(d)
    segs[0].unlink()
    (d / "logs.cursor").write_bytes(cursor_line(1, 5))
    sp = spool(d).signal("logs")
    assert read_all(sp) == want(range(3, 9))
    assert sp.cursor_reset == 0 and warnings_of(caplog) == []


def test_a_cursor_at_the_end_of_a_segment_is_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    segs = three_segments(d)
    (d / "logs.cursor").write_bytes(cursor_line(1, segs[0].stat().st_size))
    sp = spool(d).signal("logs")
    assert cursor_file(d) == cursor_line(1, segs[0].stat().st_size)  # not rewritten
    assert read_all(sp) == want(range(3, 9))
    assert sp.cursor_reset == 0 and warnings_of(caplog) == []


def test_a_cursor_inside_a_segment_is_kept(tmp_path: Path) -> None:
    d = tmp_path / "s"
    three_segments(d)
    (d / "logs.cursor").write_bytes(cursor_line(2, 4 + len(small_record(3))))
    sp = spool(d).signal("logs")
    assert read_all(sp) == want(range(4, 9)) and sp.cursor_reset == 0


@pytest.mark.parametrize("cursor,deleted,start,why", [
    ("2 7", 2, 3, "points into a segment that is gone or shorter"),
    ("1 99999", None, 2, "points into a segment that is gone or shorter"),
    ("2 99999", None, 3, "points into a segment that is gone or shorter"),
    ("3 99999", None, 1, "is missing or past every segment"),
    ("999 0", None, 1, "is missing or past every segment"),
    ("garbled", None, 1, "is missing or past every segment"),
])
def test_a_cursor_that_points_nowhere_is_reset_warned_and_rewritten(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, cursor: str, deleted: int | None, start: int,
        why: str) -> None:
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    segs = three_segments(d)
    if deleted:
        segs[deleted - 1].unlink()
    (d / "logs.cursor").write_text(cursor + "\n")
    sp = spool(d).signal("logs")
    assert warnings_of(caplog) == [f"spool {d}: the logs cursor {why}; reading from segment {start}"]
    assert sp.cursor_reset == 1 and cursor_file(d) == cursor_line(start, 0)
    assert read_all(sp) == [r for r in want(range(3 * (start - 1), 9)) if deleted is None or
                            r not in want(range(3 * (deleted - 1), 3 * deleted))]


# -- damaged segments and segments deleted behind the spool ------------------

def one_segment(d: Path, ids: range) -> Path:
    (seg,) = segments_of_one_segment_each(d, [ids])
    return seg


def offset_of(ids: range, i: int) -> int:
    """Where record i starts in a segment holding the records ids."""
    return sum(4 + len(small_record(j)) for j in ids if j < i)


def test_a_corrupt_length_resumes_at_the_very_next_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The first record after the damage is read, not a later one."""
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    seg = one_segment(d, range(0, 6))
    data = bytearray(seg.read_bytes())
    at = offset_of(range(0, 6), 1)
    data[at:at + 4] = (0xFFFF).to_bytes(4, "little")  # its tag stays: a frame that runs past the end
    seg.write_bytes(bytes(data))
    sp = spool(d).signal("logs")
    assert read_all(sp) == want(range(0, 1)) + want(range(2, 6)) and sp.corrupt == 1
    assert warnings_of(caplog) == [f"spool {d}: {seg.name} has a corrupt or cut record at offset {at}: skipped "
                                   "(counted as logs_spool_corrupt)"]


def test_a_segment_deleted_during_a_disk_failure_leaves_the_cursor_where_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A failed write drops the segments someone deleted: a later one than
    the cursor's is counted lost, and what the cursor points at is read
    once, from where it points."""
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    segs = three_segments(d)
    sp = spool(d).signal("logs")
    batch = sp.read(2, 1 << 20)
    assert batch is not None and batch.records == want(range(0, 2))
    sp.ack(batch.end)
    segs[2].unlink()
    full_disk(monkeypatch)
    put(sp, range(9, 10))
    assert [m for m in warnings_of(caplog) if "lost" in m] == [
        f"spool {d}: {segs[2].name} was deleted by someone else; its 3 unsent records are lost"]
    assert sp.segment_lost == 3
    assert read_all(sp) == want(range(9, 10)) + want(range(2, 6))


def test_the_only_segment_deleted_on_a_disk_that_takes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    seg = one_segment(d, range(0, 4))
    real_create = SpoolDirectory.create

    def no_new_segment(self: SpoolDirectory, name: str, flags: int) -> int:
        if name.endswith(".seg"):
            raise OSError(28, "No space left on device")
        return real_create(self, name, flags)

    monkeypatch.setattr(SpoolDirectory, "create", no_new_segment)
    sp = spool(d).signal("logs")
    seg.unlink()
    assert sp.read(10, 1 << 20) == spool_mod.Batch([], spool_mod.Position(2, 0))
    assert sp.read(10, 1 << 20) is None and sp.segment_lost == 4
    assert f"spool {d}: {seg.name} was deleted by someone else; its 4 unsent records are lost" in warnings_of(caplog)


def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every segment write fails as on a full disk, retried at once."""
    def write_all(fd: int, records: list[bytes]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SignalSpool, "_write_all", staticmethod(write_all))
    monkeypatch.setattr(spool_mod, "_DISK_RETRY_S", 0.0)


def test_pending_bytes_count_the_unsent_part_of_each_segment_and_memory(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "s"
    segs = three_segments(d)
    sizes = [p.stat().st_size for p in segs]
    sp = spool(d).signal("logs")
    assert sp.pending_bytes() == sum(sizes)
    batch = sp.read(2, 1 << 20)
    assert batch is not None
    sp.ack(batch.end)
    assert sp.pending_bytes() == sum(sizes) - offset_of(range(0, 3), 2)
    full_disk(monkeypatch)
    put(sp, range(9, 11))
    assert sp.pending_bytes() == sum(sizes) - offset_of(range(0, 3), 2) + len(small_record(9) + small_record(10))
    assert sp.stats()["spool_held_bytes"] == len(small_record(9) + small_record(10))


def test_memory_full_names_the_window_in_mib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(spool_mod, "HELD_BYTES", 3 << 20)
    d = tmp_path / "s"
    sp = spool(d, full_action="drop-newest").signal("logs")
    full_disk(monkeypatch)
    chunk = b"x" * (1 << 20)  # held records are not read back from a file: any bytes
    sp.append([chunk] * 4)
    assert sp.dropped_disk_full == 1
    assert warnings_of(caplog) == [
        f"spool {d}: cannot write logs records (No space left on device): they wait in memory (up to 3 MiB) and are "
        "sent first; writing is tried again every 0 s",
        f"spool {d}: the disk and the 3 MiB memory window for logs are full: dropping the newest records "
        "(--spool-full-action drop-newest), counted as logs_dropped_disk_full"]


# -- files planted in the spool ------------------------------------------------

def test_every_unsafe_file_is_counted_and_warned_by_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    three_segments(d)
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret")
    (d / "logs-000000000002.seg").unlink()
    (d / "logs-000000000002.seg").symlink_to(victim)
    (d / "logs-000000000003.seg").unlink()
    os.link(victim, d / "logs-000000000003.seg")
    (d / "traces.cursor").unlink()
    (d / "traces.cursor").symlink_to(victim)
    sp = spool(d)
    assert sp.stats()["spool_unsafe_files"] == 3
    assert sorted(m for m in warnings_of(caplog) if m.startswith("spool directory")) == sorted([
        f"spool directory {d}: logs-000000000002.seg: not a regular file; not read",
        f"spool directory {d}: logs-000000000003.seg: has 2 links (a hard link is not written through); not read",
        f"spool directory {d}: traces.cursor: a symlink; not followed"])
    assert read_all(sp.signal("logs")) == want(range(0, 3)) and victim.read_bytes() == b"secret"


# -- time ------------------------------------------------------------------------

S = 10**9


@pytest.fixture
def clocks(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The wall clock and CLOCK_BOOTTIME as the spool sees them, set by the test."""
    now = {"wall": 1_700_000_000 * S, "boot": 500 * S}
    monkeypatch.setattr(spool_mod.time, "time_ns", lambda: now["wall"])
    monkeypatch.setattr(spool_mod, "_boottime_ns", lambda: now["boot"])
    return now


def gap_after(d: Path, heartbeat: str, boot_id: str = "b1") -> tuple[spool_mod.Gap | None, Spool]:
    if not d.exists():
        spool(d)
        stop_all()
    (d / "heartbeat").write_text(heartbeat)
    sp = spool(d, boot_id=boot_id)
    return sp.gap(), sp


@pytest.mark.parametrize("boot", [0, 200, 500])
def test_a_gap_on_the_same_boot_is_exactly_the_boottime_between(tmp_path: Path, clocks: dict[str, int],
                                                                boot: int) -> None:
    wall = clocks["wall"] - (500 - boot) * S - 100 * S  # the wall clock was stepped 100 s forward
    gap, sp = gap_after(tmp_path / "s", f"{wall} {boot * S} b1")
    assert gap == spool_mod.Gap(clocks["wall"] - (500 - boot) * S, clocks["wall"], float(500 - boot), 100.0)
    assert sp.clock_steps == 1


@pytest.mark.parametrize("step", [1, -1, 3600, -3600])
def test_a_wall_clock_step_of_a_second_or_more_is_measured_and_warned(
        tmp_path: Path, clocks: dict[str, int], caplog: pytest.LogCaptureFixture, step: int) -> None:
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    wall = clocks["wall"] - 100 * S - step * S
    gap, sp = gap_after(d, f"{wall} {400 * S} b1")
    assert gap == spool_mod.Gap(clocks["wall"] - 100 * S, clocks["wall"], 100.0, float(step))
    assert sp.gap() is not None and sp.clock_steps == 2
    assert warnings_of(caplog) == [f"spool {d}: the wall clock was stepped by {step:.1f} s since the last heartbeat; "
                                   "the gap's duration is measured on CLOCK_BOOTTIME"] * 2


def test_a_step_under_a_second_is_not_one(tmp_path: Path, clocks: dict[str, int]) -> None:
    wall = clocks["wall"] - 100 * S - S + 1
    gap, sp = gap_after(tmp_path / "s", f"{wall} {400 * S} b1")
    assert gap is not None and gap.clock_step_s == 0.0 and gap.seconds == 100.0 and sp.clock_steps == 0


@pytest.mark.parametrize("heartbeat", ["{wall}", "{wall} {boot} other", "{wall} junk b1", "{wall} {boot}"])
def test_a_gap_without_this_boot_s_time_is_the_wall_clock_s(tmp_path: Path, clocks: dict[str, int],
                                                            heartbeat: str) -> None:
    wall = clocks["wall"] - 250 * S
    gap, sp = gap_after(tmp_path / "s", heartbeat.format(wall=wall, boot=400 * S))
    assert gap == spool_mod.Gap(wall, clocks["wall"], 250.0, 0.0) and sp.clock_steps == 0


def test_an_old_heartbeat_in_the_future_is_a_step_back_of_exactly_that(tmp_path: Path, clocks: dict[str, int]) -> None:
    gap, sp = gap_after(tmp_path / "s", f"{clocks['wall'] + 3600 * S}")
    assert gap == spool_mod.Gap(clocks["wall"], clocks["wall"], 0.0, -3600.0) and sp.clock_steps == 1


def test_the_heartbeat_line_and_its_once_a_second_rhythm(tmp_path: Path, clocks: dict[str, int],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    mono = [1000.0]
    monkeypatch.setattr(spool_mod.time, "monotonic", lambda: mono[0])
    d = tmp_path / "s"
    sp = spool(d, boot_id="b7")
    sp.beat()
    assert (d / "heartbeat").read_bytes() == f"{clocks['wall']} {clocks['boot']} b7".ljust(95).encode() + b"\n"
    for later, written in ((0.5, False), (1.0, True), (1.5, False), (2.0, True)):
        (d / "heartbeat").write_bytes(b"")
        mono[0] = 1000.0 + later
        sp.beat()
        assert bool((d / "heartbeat").read_bytes()) == written, later


# -- disk trouble --------------------------------------------------------------

def test_a_disk_error_without_errno_is_warned_with_its_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    sp = spool(d).signal("logs")

    def write_all(fd: int, records: list[bytes]) -> None:
        raise OSError("the volume went away")

    monkeypatch.setattr(SignalSpool, "_write_all", staticmethod(write_all))
    put(sp, range(0, 2))
    assert warnings_of(caplog) == [
        f"spool {d}: cannot write logs records (the volume went away): they wait in memory (up to 8 MiB) and are "
        "sent first; writing is tried again every 1 s"]
    assert read_all(sp) == want(range(0, 2))


@pytest.mark.parametrize("later,warned", [(59.9, False), (60.0, True)])
def test_the_same_disk_trouble_is_warned_again_after_a_minute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture, later: float,
                                                             warned: bool) -> None:
    caplog.set_level(logging.WARNING)
    mono = [1000.0]
    monkeypatch.setattr(spool_mod.time, "monotonic", lambda: mono[0])
    sp = spool(tmp_path / "s").signal("logs")
    real = SignalSpool._write_all
    failing = [True]

    def write_all(fd: int, records: list[bytes]) -> None:
        if failing[0]:
            raise OSError(28, "No space left on device")
        real(fd, records)

    monkeypatch.setattr(SignalSpool, "_write_all", staticmethod(write_all))
    monkeypatch.setattr(spool_mod, "_DISK_RETRY_S", 0.0)
    put(sp, range(0, 1))
    failing[0] = False
    put(sp, range(1, 2))
    failing[0] = True
    mono[0] += later
    put(sp, range(2, 3))
    assert len([m for m in warnings_of(caplog) if "cannot write" in m]) == 1 + warned
    assert sorted(read_all(sp)) == sorted(want(range(0, 3)))


@pytest.mark.parametrize("action", spool_mod.FULL_ACTIONS)
def test_memory_holds_exactly_its_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: str,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(spool_mod, "HELD_BYTES", sum(len(small_record(i)) for i in range(0, 3)))
    sp = spool(tmp_path / "s", full_action=action).signal("logs")
    full_disk(monkeypatch)
    put(sp, range(0, 3))
    assert sp.dropped_disk_full == 0 and sp.stats()["spool_held_bytes"] == spool_mod.HELD_BYTES
    assert not [m for m in warnings_of(caplog) if "memory window" in m]  # full, not over
    put(sp, range(7, 8))  # as long as record 0
    assert sp.dropped_disk_full == 1
    assert read_all(sp) == (want(range(1, 3)) + want(range(7, 8)) if action == "drop-oldest" else want(range(0, 3)))


# -- batch sizes from memory -----------------------------------------------------

def nbytes(ids: range) -> int:
    return sum(len(small_record(i)) for i in ids)


CHUNKS = [range(0, 3), range(3, 6), range(6, 9)]


@pytest.mark.parametrize("held", [False, True])
@pytest.mark.parametrize("max_records,max_bytes,first", [
    (9, nbytes(range(0, 3)), 3),  # exactly the first append
    (9, nbytes(range(0, 3)) - 1, 2),
    (9, nbytes(range(0, 6)) + nbytes(range(6, 9)) - 1, 8),  # the third append does not fit whole
    (9, nbytes(range(0, 9)), 9),
    (2, 1 << 20, 2),
    (2, nbytes(range(0, 2)), 2),  # two of an append, exactly
    (9, nbytes(range(0, 1)) + 1, 1),
    (9, 1, 1),  # a record larger than max_bytes goes alone
    (4, nbytes(range(0, 2)) + nbytes(range(0, 1)), 2),
])
def test_a_batch_from_memory_holds_what_fits_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held: bool,
                                                     max_records: int, max_bytes: int, first: int) -> None:
    """Records appended this run (or held while the disk takes none) are
    batched by their own bytes, frames not counted, up to max_bytes exactly."""
    sp = spool(tmp_path / "s").signal("logs")
    if held:
        full_disk(monkeypatch)
    for ids in CHUNKS:
        put(sp, ids)
    batch = sp.read(max_records, max_bytes)
    assert batch is not None and batch.records == want(range(0, first))
    sp.ack(batch.end)
    assert read_all(sp) == want(range(first, 9))


def test_a_segment_cut_after_a_length_prefix_counts_that_record_lost(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A crash after the length prefix was written: the cut record was one
    the agent had, and is counted with the segment's when it is lost."""
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    seg = one_segment(d, range(0, 3))
    with seg.open("ab") as f:
        f.write(frame(40))
    sp = spool(d).signal("logs")
    seg.unlink()
    assert sp.read(10, 1 << 20) is not None and sp.segment_lost == 4


@pytest.mark.parametrize("max_bytes", [4, 5, 20])
def test_a_record_larger_than_a_tiny_read_window_is_read_whole(tmp_path: Path, max_bytes: int) -> None:
    d = tmp_path / "s"
    one_segment(d, range(0, 3))
    sp = spool(d).signal("logs")
    got = []
    while (batch := sp.read(10, max_bytes)) is not None:
        assert len(batch.records) == 1
        got += batch.records
        sp.ack(batch.end)
    assert got == want(range(0, 3)) and sp.corrupt == 0


# -- the spool's own files ---------------------------------------------------------

def test_every_file_the_spool_makes_is_0600(tmp_path: Path, umask: object) -> None:
    d = tmp_path / "s"
    sp = spool(d)
    put(sp.signal("logs"), range(0, 2))
    sp.beat()
    assert {p.name: p.stat().st_mode & 0o7777 for p in d.iterdir()} == {
        name: 0o600 for name in ("heartbeat", "logs.cursor", "traces.cursor", "logs-000000000001.seg",
                                 "traces-000000000001.seg")}


def test_a_socket_planted_as_the_heartbeat_is_replaced_and_counted(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    import socket
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    spool(d)
    stop_all()
    (d / "heartbeat").unlink()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(d / "heartbeat"))
        sp = spool(d)
    sp.beat()
    assert (d / "heartbeat").is_file() and len((d / "heartbeat").read_bytes()) == 96
    assert sp.stats()["spool_unsafe_files"] == 1
    assert warnings_of(caplog) == [f"spool directory {d}: heartbeat: No such device or address"]


def test_a_directory_named_like_a_cursor_stops_the_start(tmp_path: Path) -> None:
    d = tmp_path / "s"
    spool(d)
    stop_all()
    (d / "logs.cursor").unlink()
    (d / "logs.cursor").mkdir()
    with pytest.raises(UsageError) as e:
        Spool(str(d), 1 << 32)
    assert str(e.value) == f"spool directory {d}: logs.cursor is a directory"


def test_a_file_that_keeps_being_replaced_stops_the_start_after_three_tries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    real_create = SpoolDirectory.create
    directories: list[SpoolDirectory] = []

    def planted_first(self: SpoolDirectory, name: str, flags: int) -> int:
        if name == "heartbeat":  # someone wins the race every time
            (d / name).symlink_to(tmp_path / "victim")
            directories.append(self)
        return real_create(self, name, flags)

    monkeypatch.setattr(SpoolDirectory, "create", planted_first)
    with pytest.raises(UsageError) as e:
        Spool(str(d), 1 << 32)
    assert str(e.value) == f"spool directory {d}: heartbeat keeps being replaced"
    assert directories[0].unsafe_files == 3 and not (tmp_path / "victim").exists()


@pytest.fixture
def read_only_own_files(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The cursor and heartbeat cannot be opened for writing (a read-only
    or inode-full disk) while the flag is set."""
    read_only = [True]
    real = SpoolDirectory.open_own

    def open_own(self: SpoolDirectory, name: str) -> int:
        if read_only[0]:
            raise OSError(30, "Read-only file system")
        return real(self, name)

    monkeypatch.setattr(SpoolDirectory, "open_own", open_own)
    return read_only


def test_own_files_that_cannot_be_written_are_still_read(tmp_path: Path, clocks: dict[str, int],
                                                         read_only_own_files: list[bool]) -> None:
    read_only_own_files[0] = False
    d = tmp_path / "s"
    segs = segments_of_one_segment_each(d, [range(0, 3)] + [range(i, i + 1) for i in range(3, 12)])
    (d / "logs.cursor").write_bytes(cursor_line(10, 0))  # two digits: read from the first byte on
    assert [p.name for p in segs][-2:] == [f"logs-{n:012d}.seg" for n in (9, 10)]
    sp = spool(d, boot_id="b1")
    sp.beat()
    stop_all()
    read_only_own_files[0] = True
    before = (d / "heartbeat").read_bytes()
    clocks["wall"] += 30 * S
    clocks["boot"] += 30 * S
    sp = spool(d, boot_id="b1")
    assert sp.gap() == spool_mod.Gap(clocks["wall"] - 30 * S, clocks["wall"], 30.0, 0.0)
    logs = sp.signal("logs")
    assert read_all(logs) == want(range(11, 12)) and logs.cursor_reset == 0
    sp.beat()
    assert (d / "heartbeat").read_bytes() == before
    read_only_own_files[0] = False  # writable again: written at the next write
    put(logs, range(20, 21))
    assert read_all(logs) == want(range(20, 21))
    assert cursor_file(d) != cursor_line(10, 0)


def test_no_own_files_and_a_disk_that_takes_none(tmp_path: Path, read_only_own_files: list[bool]) -> None:
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    sp = spool(d)
    assert sp.gap() is None and not (d / "heartbeat").exists() and not (d / "logs.cursor").exists()
    put(sp.signal("logs"), range(0, 2))
    assert read_all(sp.signal("logs")) == want(range(0, 2))


# -- writing ---------------------------------------------------------------------

def test_a_segment_name_planted_before_a_new_segment_is_skipped_and_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 60)
    d = tmp_path / "s"
    sp = spool(d)
    logs = sp.signal("logs")
    (d / "logs-000000000002.seg").symlink_to(tmp_path / "victim")
    (d / "logs-000000000003.seg").write_bytes(b"")
    for i in range(0, 12, 3):
        put(logs, range(i, i + 3))
    assert warnings_of(caplog) == [f"spool directory {d}: logs-00000000000{n}.seg: appeared in the spool; not used"
                                   for n in (2, 3)]
    assert sp.stats()["spool_unsafe_files"] == 2 and not (tmp_path / "victim").exists()
    assert sorted(p.name for p in d.glob("logs-*.seg") if p.lstat().st_size and not p.is_symlink()) == [
        f"logs-{n:012d}.seg" for n in (1, 4, 5, 6)]
    stop_all()
    (d / "logs-000000000002.seg").unlink()
    (d / "logs-000000000003.seg").unlink()
    assert read_all(spool(d).signal("logs")) == want(range(0, 12))


def test_a_short_write_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """writev() may write less than asked (a signal, a quota reached half
    way): the rest follows, so the segment holds every frame whole. The
    reference writer's os.writev() made short here; the native one's
    (test_spool_native) meets a lagging socket."""
    monkeypatch.setattr(SignalSpool, "_write_all", staticmethod(spool_mod._write_framed))
    real = os.writev
    monkeypatch.setattr(os, "writev", lambda fd, buffers: real(fd, [b"".join(buffers)[:7]]))
    d = tmp_path / "s"
    put(spool(d).signal("logs"), range(0, 5))
    stop_all()
    monkeypatch.undo()
    sp = spool(d).signal("logs")
    assert read_all(sp) == want(range(0, 5)) and sp.corrupt == 0


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_closing_the_spool_closes_every_file_it_opened(tmp_path: Path) -> None:
    d = tmp_path / "s"
    segments_of_one_segment_each(d, [range(0, 2), range(2, 4)])
    before = open_fds()
    sp = Spool(str(d), 1 << 32)
    put(sp.signal("logs"), range(4, 6))
    sp.beat()
    assert len(open_fds() - before) >= 6  # the directory, heartbeat, 2 cursors, 3 + 1 segments
    sp.close()
    assert open_fds() - before == set()


@pytest.mark.parametrize("name", ["heartbeat", "logs.cursor", "traces.cursor"])
def test_a_start_that_fails_closes_what_it_opened(tmp_path: Path, name: str) -> None:
    d = tmp_path / "s"
    segments_of_one_segment_each(d, [range(0, 2), range(2, 4)])
    (d / name).unlink()
    (d / name).mkdir()
    before = open_fds()
    with pytest.raises(UsageError, match=f"{name} is a directory"):
        Spool(str(d), 1 << 32)
    assert open_fds() - before == set()


# -- segments that cannot be read, cut or corrupt ---------------------------------

def test_valid_record_takes_a_length_of_up_to_ten_varint_bytes() -> None:
    body = b"b" * 20000  # a three-byte varint
    rec = b"\x12\xa0\x9c\x01" + body
    assert spool_mod.valid_record(rec, 0, len(rec)) and not spool_mod.valid_record(rec, 0, len(rec) - 1)
    assert not spool_mod.valid_record(b"\x12" + b"\x80" * 10 + b"\x00", 0, 12)  # eleven bytes of varint


@pytest.fixture
def eio_on(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """os.pread fails with EIO on the files named in the returned list."""
    names: list[str] = []
    real = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) in names:
            raise OSError(5, "Input/output error")
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    return names


def test_a_segment_that_cannot_be_read_is_dropped_and_the_next_one_read(
        tmp_path: Path, eio_on: list[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    segs = three_segments(d)
    sp = spool(d).signal("logs")
    eio_on.append(segs[1].name)
    assert read_all(sp) == want(range(0, 3)) + want(range(6, 9))
    # Not even its records could be counted.
    assert warnings_of(caplog) == [f"spool {d}: {segs[1].name} cannot be read (Input/output error); its 0 unsent "
                                   "records are lost"]
    assert sp.segment_lost == 0 and sp.pending_bytes() == 0
    assert segs[1].exists()  # left for whoever can read it: only the next start tries again


def test_the_segment_being_written_that_cannot_be_read_is_tried_again(
        tmp_path: Path, eio_on: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "RECENT_BYTES", 1)  # read back from the file
    d = tmp_path / "s"
    sp = spool(d).signal("logs")
    put(sp, range(0, 4))
    eio_on.append("logs-000000000001.seg")
    pending = sp.pending_bytes()
    assert sp.read(10, 1 << 20) is None and sp.pending_bytes() == pending and sp.segment_lost == 0
    eio_on.clear()
    assert read_all(sp) == want(range(0, 4))


def test_corruption_in_the_segment_being_written_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(spool_mod, "RECENT_BYTES", 1)
    d = tmp_path / "s"
    sp = spool(d).signal("logs")
    put(sp, range(0, 4))
    put(sp, range(4, 8))
    seg = d / "logs-000000000001.seg"
    data = bytearray(seg.read_bytes())
    for i in (1, 5):  # two damaged records: counted twice, warned once
        data[offset_of(range(0, 8), i) + 4] = 0
    seg.write_bytes(bytes(data))
    assert read_all(sp) == [r for r in want(range(0, 8)) if r not in want(range(1, 2)) + want(range(5, 6))]
    assert sp.corrupt == 2 and len([m for m in warnings_of(caplog) if "corrupt" in m]) == 1


def test_a_cut_record_at_the_end_of_the_last_segment_on_a_disk_that_takes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No segment is being written (none could be made): the last one's cut
    tail is skipped all the same, and reading ends there."""
    d = tmp_path / "s"
    seg = one_segment(d, range(0, 3))
    with seg.open("ab") as f:
        f.write(frame(100) + b"\x12\x62cut")
    real_create = SpoolDirectory.create

    def no_new_segment(self: SpoolDirectory, name: str, flags: int) -> int:
        if name.endswith(".seg"):
            raise OSError(28, "No space left on device")
        return real_create(self, name, flags)

    monkeypatch.setattr(SpoolDirectory, "create", no_new_segment)
    size = seg.stat().st_size
    sp = spool(d).signal("logs")
    assert read_all(sp) == want(range(0, 3)) and sp.corrupt == 1
    assert cursor_file(d) == cursor_line(1, size) and not seg.exists()


def test_a_cursor_moved_while_a_damaged_segment_is_read_is_followed(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The appending thread evicts the segment while the export thread
    looks past its damage: nothing is counted, reading goes on from where
    the cursor now is."""
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 200)
    d = tmp_path / "s"
    seg = one_segment(d, range(0, 10))
    data = bytearray(seg.read_bytes())
    data[4] = 0  # the first record's tag
    seg.write_bytes(bytes(data))
    sp = spool(d, full_action="drop-oldest")
    logs = sp.signal("logs")
    logs.max_bytes = seg.stat().st_size  # one more append evicts it
    real = SignalSpool._pread_all

    def pread_all(fd: int, offset: int, size: int) -> bytes:
        put(logs, range(20, 22))
        return real(fd, offset, size)

    monkeypatch.setattr(SignalSpool, "_pread_all", staticmethod(pread_all))
    batch = logs.read(10, 30)  # a window shorter than the segment: the rest is read for the next record
    assert batch is not None and batch.records == [] and batch.end == spool_mod.Position(2, 0)
    assert logs.corrupt == 0 and logs.evicted == 10 and not seg.exists()
    monkeypatch.undo()
    assert read_all(logs) == want(range(20, 22))


def test_drop_oldest_with_every_held_record_being_sent_drops_the_new_one(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "HELD_BYTES", nbytes(range(0, 3)))
    sp = spool(tmp_path / "s", full_action="drop-oldest").signal("logs")
    full_disk(monkeypatch)
    put(sp, range(0, 3))
    sending = sp.read(3, 1 << 20)
    assert sending is not None and sending.records == want(range(0, 3))
    put(sp, range(3, 4))
    assert sp.dropped_disk_full == 1
    sp.ack(sending.end)
    assert sp.read(3, 1 << 20) is None


def test_eviction_after_sent_segments_were_deleted_counts_only_what_is_left(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 60)
    d = tmp_path / "s"
    sp = spool(d).signal("logs")
    sp.max_bytes = 200
    put(sp, range(0, 3))
    put(sp, range(3, 6))
    assert read_all(sp) == want(range(0, 6))  # sent: their segments deleted
    for i in range(6, 12, 3):
        put(sp, range(i, i + 3))
    assert sp.evicted == 0  # 2 segments of ~60 bytes: under 200
    for i in range(12, 24, 3):
        put(sp, range(i, i + 3))
    # One append a segment, ~55 bytes each: six unsent, three evicted.
    assert sp.evicted == 9 and read_all(sp) == want(range(15, 24))


# -- what memory keeps -------------------------------------------------------------

def damage(seg: Path, ids: range, within: range) -> None:
    """Zero the tags of the records `ids` in a segment holding `within`."""
    data = bytearray(seg.read_bytes())
    for i in ids:
        data[offset_of(within, i) + 4] = 0
    seg.write_bytes(bytes(data))


@pytest.mark.parametrize("ack_at", [3, 4])
def test_records_of_this_run_are_sent_from_memory_after_each_ack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 ack_at: int) -> None:
    """Memory keeps what was appended and not acknowledged, and only that,
    across many appends and acks (at an append's end or inside one): damage
    done to the file afterwards never reaches what is sent."""
    monkeypatch.setattr(spool_mod, "RECENT_BYTES", int(nbytes(range(0, 3)) * 4 * 1.5))
    d = tmp_path / "s"
    sp = spool(d).signal("logs")
    seg = d / "logs-000000000001.seg"
    for start in range(0, 60, 6):
        put(sp, range(start, start + 3))
        put(sp, range(start + 3, start + 6))
        batch = sp.read(ack_at, 1 << 20)
        assert batch is not None
        sp.ack(batch.end)
        damage(seg, range(start + ack_at, start + 6), range(0, start + 6))
        assert read_all(sp) == want(range(start + ack_at, start + 6)), start
    assert sp.corrupt == 0


def test_a_held_batch_acked_frees_its_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "HELD_BYTES", nbytes(range(0, 4)))
    sp = spool(tmp_path / "s", full_action="drop-oldest").signal("logs")
    full_disk(monkeypatch)
    put(sp, range(0, 4))
    batch = sp.read(3, 1 << 20)
    assert batch is not None
    sp.ack(batch.end)
    assert sp.stats()["spool_held_bytes"] == nbytes(range(3, 4)) and sp.pending_bytes() == nbytes(range(3, 4))
    put(sp, range(4, 8))  # memory full again: the oldest not being sent give way
    assert sp.dropped_disk_full == 2 and read_all(sp) == want(range(5, 8))  # 3, then 4


def test_a_written_segment_the_collector_has_is_left_at_exactly_its_size(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "SENT_SEGMENT_BYTES", nbytes(range(0, 3)) + 12)
    d = tmp_path / "s"
    sp = spool(d).signal("logs")
    put(sp, range(0, 3))
    assert (d / "logs-000000000001.seg").stat().st_size == spool_mod.SENT_SEGMENT_BYTES
    assert read_all(sp) == want(range(0, 3))
    put(sp, range(3, 4))
    assert sorted(p.name for p in d.glob("logs-*.seg")) == ["logs-000000000002.seg"]


def test_the_only_segment_that_cannot_be_read_on_a_disk_that_takes_nothing_is_kept(
        tmp_path: Path, eio_on: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The last segment is not given up on a read error: nothing newer
    would follow it; it is tried again."""
    d = tmp_path / "s"
    seg = one_segment(d, range(0, 3))
    real_create = SpoolDirectory.create

    def no_new_segment(self: SpoolDirectory, name: str, flags: int) -> int:
        if name.endswith(".seg"):
            raise OSError(28, "No space left on device")
        return real_create(self, name, flags)

    monkeypatch.setattr(SpoolDirectory, "create", no_new_segment)
    sp = spool(d).signal("logs")
    eio_on.append(seg.name)
    assert sp.read(10, 1 << 20) is None and sp.segment_lost == 0
    eio_on.clear()
    assert read_all(sp) == want(range(0, 3))


@pytest.mark.parametrize("slack,evicted", [(0, 0), (-1, 3)])
def test_eviction_starts_above_max_bytes_and_spares_only_the_segment_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slack: int, evicted: int) -> None:
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 60)
    d = tmp_path / "s"
    sp = spool(d).signal("logs")
    sp.max_bytes = sum(4 + len(small_record(i)) for i in range(0, 6)) + slack  # two appends, two segments
    put(sp, range(0, 3))
    put(sp, range(3, 6))
    assert len(list(d.glob("logs-*.seg"))) == 2 - (evicted > 0)
    assert sp.evicted == evicted and read_all(sp) == want(range(evicted, 6))


def test_eviction_of_an_earlier_run_s_segments_counts_their_records(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "s"
    three_segments(d)
    sp = spool(d).signal("logs")
    sp.max_bytes = 1  # the next append evicts every segment but the one it wrote
    put(sp, range(9, 10))
    assert sp.evicted == 9 and read_all(sp) == want(range(9, 10))


def test_eviction_counts_add_up_across_episodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 60)
    d = tmp_path / "s"
    sp = spool(d).signal("logs")
    sp.max_bytes = 3 * 60
    for i in range(0, 15, 3):  # five appends, a segment each: the first two evicted
        put(sp, range(i, i + 3))
    assert sp.evicted == 6
    batch = sp.read(1, 1 << 20)
    assert batch is not None and batch.records == want(range(6, 7))
    sp.ack(batch.end)
    for i in range(15, 21, 3):  # the partly sent segment goes, then the next one
        put(sp, range(i, i + 3))
    assert sp.evicted == 6 + 2 + 3 and read_all(sp) == want(range(12, 21))


@pytest.mark.parametrize("ack_at", [4, 5])
def test_memory_accounts_for_appends_of_different_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       ack_at: int) -> None:
    big, small = range(0, 5), range(5, 6)
    window = sum(4 + len(small_record(i)) for i in range(0, 6))
    monkeypatch.setattr(spool_mod, "RECENT_BYTES", window + 4 + len(small_record(5)) // 2)
    d = tmp_path / "s"
    sp = spool(d).signal("logs")
    seg = d / "logs-000000000001.seg"
    for n in range(8):
        put(sp, big)
        put(sp, small)
        batch = sp.read(ack_at, 1 << 20)
        assert batch is not None
        sp.ack(batch.end)
        damage(seg, range(ack_at, 6), range(0, 6 * (n + 1)))  # the segment holds every round's six
        assert read_all(sp) == want(range(ack_at, 6)), n
    assert sp.corrupt == 0



def test_an_earlier_run_s_oldest_pending_is_its_segment_s_time(tmp_path: Path) -> None:
    d = tmp_path / "s"
    segs = three_segments(d)
    os.utime(segs[0], ns=(10**18, 10**18))
    assert spool(d).signal("logs").oldest_pending_ns() == 10**18


def test_memory_and_segments_hold_exactly_their_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    two = sum(4 + len(small_record(i)) for i in range(0, 6))
    monkeypatch.setattr(spool_mod, "RECENT_BYTES", two)
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", two)
    d = tmp_path / "s"
    sp = spool(d).signal("logs")
    put(sp, range(0, 3))
    put(sp, range(3, 6))
    assert [p.name for p in d.glob("logs-*.seg")] == ["logs-000000000001.seg"]
    damage(d / "logs-000000000001.seg", range(0, 6), range(0, 6))
    assert read_all(sp) == want(range(0, 6)) and sp.corrupt == 0  # all of it from memory


def test_a_spool_directory_others_can_write_to_is_refused_by_name(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    d.chmod(0o722)
    with pytest.raises(UsageError) as e:
        Spool(str(d), 1 << 32)
    assert str(e.value) == f"spool directory {d} has mode 0722: others could plant or swap files in it (chmod 0700)"


def test_the_group_loses_read_unless_allowed(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    d.chmod(0o750)
    spool(d)
    assert d.stat().st_mode & 0o7777 == 0o700


@needs_root
def test_files_of_the_user_are_the_spool_s_own(tmp_path: Path) -> None:
    """After the privilege drop the agent writes as --user: the next start
    (as root) takes the files it finds of that user as its own."""
    nobody = pwd.getpwnam("nobody")
    d = tmp_path / "s"
    three_segments(d)
    (d / "logs.cursor").write_bytes(cursor_line(2, 0))
    for p in [d, *d.iterdir()]:
        os.chown(p, nobody.pw_uid, nobody.pw_gid)
    sp = spool(d, owner=nobody)
    assert sp.stats()["spool_unsafe_files"] == 0
    assert read_all(sp.signal("logs")) == want(range(3, 9))


@needs_root
@pytest.mark.parametrize("found", [False, True])
def test_a_handover_without_cap_chown_is_a_privilege_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            found: bool) -> None:
    from otel_exec.errors import PrivilegeError
    nobody = pwd.getpwnam("nobody")
    d = tmp_path / "s"
    if found:  # the directory is the user's already: the first file made fails
        d.mkdir(mode=0o700)
        os.chown(d, nobody.pw_uid, nobody.pw_gid)

    def no_chown(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", no_chown)
    before = open_fds()
    with pytest.raises(PrivilegeError) as e:
        Spool(str(d), 1 << 32, nobody)
    assert str(e.value) == f"cannot hand the spool directory {d} to --user nobody (needs CAP_CHOWN)"
    assert open_fds() - before == set()


def test_each_signal_gets_its_share_of_max_bytes(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path / "s"), 1000)
    _spools.append(sp)
    assert (sp.signal("logs").max_bytes, sp.signal("traces").max_bytes) == (750, 250)


# -- the reader thread's add()/write_added(), read_all(), close() ---------------

def test_records_added_are_written_framed_in_one_segment_by_write_added(tmp_path: Path) -> None:
    d = tmp_path / "s"
    sp = spool(d).signal("logs")
    assert sp.first_added() is None
    assert sp.write_added() == 0  # nothing added: nothing written
    seg = d / "logs-000000000001.seg"
    assert seg.read_bytes() == b""
    sp.add(small_record(0))
    assert sp.first_added() == small_record(0)
    sp.add(small_record(1))
    sp.add(small_record(12))
    assert sp.first_added() == small_record(0)  # the oldest, not the newest
    assert sp.write_added() == 3
    assert sp.first_added() is None
    assert seg.read_bytes() == b"".join(frame(len(r)) + r for r in want(range(0, 2)) + [small_record(12)])
    assert sp.write_added() == 0
    assert seg.stat().st_size == sum(4 + len(r) for r in want(range(0, 2)) + [small_record(12)])
    sp.add(small_record(2))
    assert sp.write_added() == 1
    assert read_all(sp) == want(range(0, 2)) + [small_record(12), small_record(2)]
    assert sp.pending_bytes() == 0


def test_an_add_taken_once_keeps_adding_to_the_next_write_after_write_added(tmp_path: Path) -> None:
    """The export queue and the sink take the spool's add once, at start
    (the list's own append): write_added() must keep that list, and the
    records it wrote must not change when the next drain's are added (they
    stay in memory for the export thread to read)."""
    sp = spool(tmp_path / "s").signal("logs")
    add = sp.add
    add(small_record(0))
    add(small_record(1))
    assert sp.write_added() == 2
    add(small_record(2))
    assert sp.first_added() == small_record(2)
    assert sp.write_added() == 1
    assert read_all(sp) == want(range(0, 3))


def test_a_single_added_record_is_the_first_added(tmp_path: Path) -> None:
    sp = spool(tmp_path / "s").signal("logs")
    sp.add(small_record(5))
    assert sp.first_added() == small_record(5)
    assert sp.write_added() == 1
    assert (tmp_path / "s" / "logs-000000000001.seg").read_bytes() == frame(len(small_record(5))) + small_record(5)


def test_a_batch_of_held_records_holds_everything_only_when_it_holds_all_of_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp = spool(tmp_path / "s").signal("logs")
    full_disk(monkeypatch)
    put(sp, range(0, 5))
    first = sp.read(3, 1 << 20)
    assert first is not None and first.records == want(range(0, 3)) and first.end.held == 4
    assert not sp.read_all(first.end)
    sp.unread(first.end)
    whole = sp.read(5, 1 << 20)
    assert whole is not None and whole.records == want(range(0, 5)) and whole.end.held == 6
    assert sp.read_all(whole.end)
    one_short = sp.read(4, 1 << 20)
    assert one_short is not None and one_short.end.held == 5 and not sp.read_all(one_short.end)


def test_held_records_do_not_hold_everything_when_segments_are_pending(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp = spool(tmp_path / "s").signal("logs")
    put(sp, range(0, 2))
    full_disk(monkeypatch)
    put(sp, range(2, 4))
    held = sp.read(10, 1 << 20)
    assert held is not None and held.records == want(range(2, 4)) and held.end.held == 3
    assert not sp.read_all(held.end)  # records 0 and 1 wait in the segment
    sp.ack(held.end)
    rest = sp.read(10, 1 << 20)
    assert rest is not None and rest.records == want(range(0, 2)) and rest.end.held == 0
    assert sp.read_all(rest.end)


def test_a_batch_from_the_oldest_segment_does_not_hold_a_newer_one(tmp_path: Path) -> None:
    d = tmp_path / "s"
    segments_of_one_segment_each(d, [range(0, 2), range(2, 4)])
    sp = spool(d).signal("logs")
    first = sp.read(10, 1 << 20)
    assert first is not None and first.records == want(range(0, 2)) and first.end == spool_mod.Position(1, first.end.offset)
    assert not sp.read_all(first.end)
    sp.ack(first.end)
    second = sp.read(10, 1 << 20)
    assert second is not None and second.records == want(range(2, 4))
    assert sp.read_all(second.end)


def test_closing_a_signal_twice_closes_each_file_once(tmp_path: Path) -> None:
    d = tmp_path / "s"
    segments_of_one_segment_each(d, [range(0, 2)])
    sp = spool(d)
    logs = sp.signal("logs")
    put(logs, range(2, 4))
    fds = [s.fd for s in logs._segs.values()] + [logs._cursor_file.fd]
    assert len(fds) == 3 and all(fd > 2 for fd in fds)
    logs.close()
    assert [s.fd for s in logs._segs.values()] == [-1, -1]
    assert logs._write is None and logs._cursor_file.fd is None
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    logs.close()  # the spool's close closes it again: nothing left to close
    assert [s.fd for s in logs._segs.values()] == [-1, -1]


def test_every_file_the_spool_opens_is_close_on_exec_and_segments_read_nonblocking(tmp_path: Path) -> None:
    """A root agent's descriptors never leak into a child it runs; an
    earlier run's segment is opened O_NONBLOCK (a FIFO planted meanwhile
    never blocks the start)."""
    d = tmp_path / "s"
    segments_of_one_segment_each(d, [range(0, 2)])
    sp = spool(d)
    logs = sp.signal("logs")
    old, new = (logs._segs[seg].fd for seg in sorted(logs._segs))
    fds = [sp.dir.fd, sp._heartbeat.fd, logs._cursor_file.fd, old, new]
    assert all(fd is not None and fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC for fd in fds)
    assert fcntl.fcntl(old, fcntl.F_GETFL) & (os.O_NONBLOCK | os.O_ACCMODE) == os.O_NONBLOCK | os.O_RDONLY
    assert fcntl.fcntl(new, fcntl.F_GETFL) & (os.O_APPEND | os.O_ACCMODE) == os.O_APPEND | os.O_RDWR


def test_a_directory_without_owner_bits_loses_its_group_bits_too(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    d.chmod(0o050)
    sp = spool(d)
    assert os.stat(d).st_mode & 0o7777 == 0
    sp.close()
    _spools.remove(sp)
    d.chmod(0o750)
    SpoolDirectory(str(d)).close()  # by default the group loses its bits
    assert os.stat(d).st_mode & 0o7777 == 0o700


def test_no_heartbeat_on_a_disk_that_takes_none_reads_as_empty(tmp_path: Path,
                                                               read_only_own_files: list[bool]) -> None:
    sp = spool(tmp_path / "s")
    assert sp._heartbeat.fd is None and sp._heartbeat.read(spool_mod._HEARTBEAT_WIDTH) == b""
    assert sp.signal("logs")._cursor_file.read(32) == b""



def sized_record(n: int, fill: bytes) -> bytes:
    """A record of exactly n bytes as the encoder frames one (n > 130)."""
    body = n - 4  # tag + a three-byte varint
    return b"\x12" + bytes((body & 0x7F | 0x80, body >> 7 & 0x7F | 0x80, body >> 14)) + fill * body


def test_a_batch_read_back_of_this_run_s_records_reads_a_quarter_more_than_their_average(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "RECENT_BYTES", 0)  # everything is read back from the segment
    sp = spool(tmp_path / "s").signal("logs")
    big = [sized_record(120_000, bytes((0x41 + i,))) for i in range(10)]
    tiny = [small_record(0), small_record(1)]
    records = big + tiny
    sp.append(records)
    # average 100 004 bytes: 10 of them and a quarter more, plus 64 KiB, hold the 10 big ones
    # (without the quarter, 2 fewer)
    batch = sp.read(10, 1 << 30)
    assert batch is not None and [bytes(r) for r in batch.records] == big
    sp.ack(batch.end)
    rest = sp.read(10, 1 << 30)
    assert rest is not None and [bytes(r) for r in rest.records] == tiny


def framed_bytes(ids: range) -> int:
    """What records take in a segment and in memory: each with its length prefix."""
    return nbytes(ids) + 4 * len(ids)


def test_memory_keeps_the_bytes_of_the_unacknowledged_writes_only(tmp_path: Path) -> None:
    sp = spool(tmp_path / "s").signal("logs")
    chunks = [range(0, 2), range(2, 5), range(5, 6)]
    for ids in chunks:
        put(sp, ids)
    assert sp._recent_bytes == framed_bytes(range(0, 6))
    first = sp.read(2, 1 << 20)
    assert first is not None and first.records == want(range(0, 2))
    sp.ack(first.end)  # exactly the end of the first write
    assert sp._recent_bytes == framed_bytes(range(2, 6))
    rest = sp.read(10, 1 << 20)
    assert rest is not None and rest.records == want(range(2, 6))
    sp.ack(rest.end)
    assert sp._recent_bytes == 0 and len(sp._recent) == 0


def test_eviction_counts_every_record_this_run_wrote_to_a_segment(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", framed_bytes(range(0, 7)))
    sp = spool(tmp_path / "s").signal("logs")
    put(sp, range(0, 3))
    put(sp, range(3, 7))  # the same segment: two writes
    sp.max_bytes = framed_bytes(range(7, 9))
    put(sp, range(7, 9))  # a new segment; the first one is evicted
    assert sorted(sp._segs) == [2] and sp.evicted == 7
    assert [(c.segment, c.offset) for c in sp._recent] == [(2, 0)]  # the evicted writes left memory too
    assert sp._recent_bytes == framed_bytes(range(7, 9))
    assert read_all(sp) == want(range(7, 9))


def test_held_records_of_a_batch_not_sent_after_all_can_give_way_again(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "HELD_BYTES", nbytes(range(0, 3)))
    sp = spool(tmp_path / "s").signal("logs")  # drop-oldest
    full_disk(monkeypatch)
    put(sp, range(0, 3))
    batch = sp.read(2, 1 << 20)
    assert batch is not None and batch.records == want(range(0, 2))
    assert batch.end == spool_mod.Position(1, 0) and batch.end.held == 3
    sp.unread(batch.end)
    put(sp, range(3, 4))  # records 0 and 1 give way: no longer in a batch being sent
    assert sp.dropped_disk_full == 2
    again = sp.read(10, 1 << 20)
    assert again is not None and again.records == want(range(2, 4))


def test_held_records_in_a_batch_being_sent_keep_their_place(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "HELD_BYTES", nbytes(range(0, 3)))
    sp = spool(tmp_path / "s").signal("logs")
    full_disk(monkeypatch)
    put(sp, range(0, 3))
    batch = sp.read(2, 1 << 20)
    assert batch is not None
    put(sp, range(3, 4))  # 0 and 1 are being sent: 2 gives way, then (still too big) 3
    assert sp.dropped_disk_full == 2
    sp.ack(batch.end)
    assert sp.read(10, 1 << 20) is None and sp.stats()["spool_held_bytes"] == 0


def test_a_segment_corrupt_to_its_end_skips_to_the_start_of_the_next(tmp_path: Path) -> None:
    d = tmp_path / "s"
    first, _ = segments_of_one_segment_each(d, [range(0, 3), range(3, 5)])
    damage(first, range(1, 3), range(0, 3))
    sp = spool(d).signal("logs")
    batch = sp.read(10, 1 << 20)
    assert batch is not None and batch.records == want(range(0, 1))
    sp.ack(batch.end)
    skip = sp.read(10, 1 << 20)
    assert skip is not None and skip.records == [] and skip.end == spool_mod.Position(2, 0) and sp.corrupt == 1
    sp.ack(skip.end)
    assert read_all(sp) == want(range(3, 5))


def test_a_segment_whose_failed_write_cannot_be_cut_back_is_never_appended_to_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "s"
    sp = spool(d).signal("logs")
    put(sp, range(0, 2))
    real_write_all = SignalSpool._write_all
    failing = [True]

    def write_all(fd: int, records: list[bytes]) -> None:
        if failing[0]:
            os.write(fd, frame(len(records[0]))[:2])  # half a length prefix, then the disk fails
            raise OSError(5, "Input/output error")
        real_write_all(fd, records)

    def ftruncate(fd: int, length: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(SignalSpool, "_write_all", staticmethod(write_all))
    monkeypatch.setattr(spool_mod, "_DISK_RETRY_S", 0.0)
    with monkeypatch.context() as m:
        m.setattr(os, "ftruncate", ftruncate)
        put(sp, range(2, 3))
    assert sp.write_failed == 1
    failing[0] = False
    put(sp, range(3, 5))
    assert (d / "logs-000000000002.seg").read_bytes() == b"".join(frame(len(r)) + r for r in want(range(3, 5)))
    # the first segment keeps the cut prefix it could not shed, and nothing after it
    assert (d / "logs-000000000001.seg").read_bytes() == (
        b"".join(frame(len(r)) + r for r in want(range(0, 2))) + frame(len(small_record(2)))[:2])
    held = sp.read(10, 1 << 20)
    assert held is not None and held.records == want(range(2, 3))


def test_a_segment_swapped_for_a_symlink_after_its_check_is_not_followed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The race between the lstat and the open: O_NOFOLLOW refuses the
    link, the segment is counted and warned, the target never read."""
    caplog.set_level(logging.WARNING)
    d = tmp_path / "s"
    (seg,) = segments_of_one_segment_each(d, [range(0, 2)])
    target = tmp_path / "elsewhere.seg"
    target.write_bytes(seg.read_bytes())
    real_stat = os.stat

    def stat_then_swap(path: object, *args: object, **kw: object) -> os.stat_result:
        st = real_stat(path, *args, **kw)  # type: ignore[arg-type]
        if path == seg.name and "dir_fd" in kw:
            seg.unlink()
            seg.symlink_to(target)
        return st

    monkeypatch.setattr(os, "stat", stat_then_swap)
    sp = spool(d)
    monkeypatch.undo()
    assert sp.stats()["spool_unsafe_files"] == 1
    assert read_all(sp.signal("logs")) == []
    assert warnings_of(caplog)[-1] == (f"spool directory {d}: {seg.name}: Too many levels of symbolic links; "
                                       "not read")


def test_a_batch_of_a_segment_does_not_hold_a_smaller_newer_one(tmp_path: Path) -> None:
    d = tmp_path / "s"
    segments_of_one_segment_each(d, [range(0, 3), range(3, 4)])
    sp = spool(d).signal("logs")
    first = sp.read(10, 1 << 20)
    assert first is not None and first.records == want(range(0, 3))
    assert not sp.read_all(first.end)  # record 3 waits in segment 2, smaller than this batch's end offset
