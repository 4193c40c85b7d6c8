"""Disk trouble, a damaged spool and planted files, against the live agent
(issues 10 and 11): a spool on a tiny tmpfs that fills, starts read-only or
full; segments, cursors and heartbeats damaged or replaced by links. The
agent keeps capturing, delivers what it can, and counts the rest exactly."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers.agent_run import AgentRun, kernel_available, public_dir, stop_line  # noqa: F401  (fixture)
from tests.helpers.agent_run import stats_line_texts as stats_lines
from tests.helpers.collector import Collector
from otel_exec.export.otlp import encode
from otel_exec.export.spool import Spool, frame
from testkit.diskfull import fill
from tests.helpers.storm import agent_env, run_storm, storm, storm_execs, wait_for_execs  # noqa: F401

pytestmark = pytest.mark.kernel

GAP = "otel_exec.agent.gap"


@pytest.fixture
def tiny_fs() -> Iterator[Path]:
    """A 256 KiB tmpfs, unmounted after the test."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    mnt = Path(tempfile.mkdtemp(prefix="oe-tinyfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)
    mnt.rmdir()


def unique_logs(collector: Collector) -> set[tuple[str, object, int]]:
    return {(r.event_name, r.attributes.get("otel_exec.exec_id"), r.timestamp) for r in collector.logs()}


def wait_drained(run: AgentRun, timeout: float = 180) -> None:
    """Until a --stats-interval line says the agent holds nothing unsent."""
    deadline = time.monotonic() + timeout
    since = len(stats_lines(run.err.read_text()))
    while time.monotonic() < deadline:
        time.sleep(0.5)
        lines = stats_lines(run.err.read_text())
        if len(lines) > since and " spool=0B " in lines[-1]:
            return
    raise AssertionError(f"the agent still holds records: {stats_lines(run.err.read_text())[-1:]}")


def test_a_spool_on_a_full_disk_during_a_storm(storm: str, make_collector, tiny_fs: Path, tmp_path: Path) -> None:
    """Start on a full tmpfs with the collector down, a storm beyond the
    memory window, then space and the collector return: the agent never
    stops, what it captured after that all arrives, and every exec record
    is delivered or counted."""
    collector: Collector = make_collector()
    collector.stop()
    ballast = fill(tiny_fs)
    # No exit records: the log counters then count exec records only, which
    # the accounting below compares with the execs the agent exported.
    run = AgentRun(tmp_path / "run", "--endpoint", collector.grpc_endpoint,
                   "--spool-dir", str(tiny_fs / "spool"), "--spool-full-action", "drop-newest",
                   "--stats-interval", "0.5", "--no-exit-records", env=agent_env())
    mark = f"full-{time.time_ns()}"
    assert run_storm(storm, mark, 12000, 0).wait(timeout=300) == 0
    time.sleep(1)
    assert run.proc.poll() is None  # still capturing
    ballast.unlink()
    collector.restart()
    wait_drained(run)
    after = f"after-{time.time_ns()}"
    # Space is back: 256 KiB, so a storm the exporter keeps up with.
    assert run_storm(storm, after, 100, 50).wait(timeout=60) == 0
    arrived_after = wait_for_execs(collector, after, 100, timeout=120)
    wait_drained(run)
    rc, err = run.stop()
    assert rc == 0, err
    c = stop_line(err)
    assert len(arrived_after) == 100
    assert c["logs_spool_write_failed"] > 0 and c["logs_dropped_disk_full"] > 0, c
    assert c["logs_spool_evicted"] == 0 and c["logs_failed"] == 0
    # Every exec record the agent made was delivered or dropped, counted.
    execs_at_collector = {k for k in unique_logs(collector) if k[0] == "otel_exec.process.exec"}
    assert len(execs_at_collector) + c["logs_dropped_disk_full"] == c["exported"], c
    # A record the ring had no room for whole came without its environment, and so its mark.
    assert len(storm_execs(collector, mark)) + c["logs_dropped_disk_full"] + c["lost_exec_ringbuf_full"] + \
        c["cut_ring_full"] >= 12000
    assert err.count("cannot write logs records") >= 1
    assert 1 <= err.count("memory window for logs are full") <= 3  # per state change, not per record
    dropped = [l for l in stats_lines(err) if "logs_dropped_disk_full=" in l]
    assert dropped and f"logs_dropped_disk_full={c['logs_dropped_disk_full']}" in dropped[-1]


def test_a_read_only_spool_then_writable_again(storm: str, make_collector, tiny_fs: Path, tmp_path: Path) -> None:
    """A spool whose filesystem is read-only at start (the kernel refuses
    to remount one read-only while the agent holds files open for writing)
    and becomes writable: nothing is lost either way."""
    collector: Collector = make_collector()
    (tiny_fs / "spool").mkdir(mode=0o700)
    # Room enough that no write fails for want of space once writable.
    subprocess.run(["mount", "-o", "remount,ro,size=4m", str(tiny_fs)], check=True)
    # The storm's execs only (a link of its own, selected by --path-prefix):
    # the rest of the machine's (other tests' storms) would fill the memory
    # window while the disk is read-only, and the 4 MiB once it is writable.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "true").symlink_to("/bin/true")
    run = AgentRun(tmp_path / "run", "--endpoint", collector.grpc_endpoint, "--path-prefix", f"{bindir}/",
                   "--spool-dir", str(tiny_fs / "spool"), "--stats-interval", "0.3", env=agent_env())
    try:
        ro = f"ro-{time.time_ns()}"
        assert run_storm(storm, ro, 200, 200, str(bindir / "true")).wait(timeout=60) == 0
        assert len(wait_for_execs(collector, ro, 200, timeout=60)) == 200  # sent from memory
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_fs)], check=True)
        time.sleep(1.5)  # writes are tried again every second
        wait_drained(run)
        shown = [l for l in stats_lines(run.err.read_text()) if "logs_spool_write_failed=" in l][-1]
        rw = f"rw-{time.time_ns()}"
        flood = run_storm(storm, rw, 100, 50, str(bindir / "true"))
        # Writing again: segments appear while the storm runs (records go to
        # the collector from memory, and an acknowledged segment is removed
        # soon after, so they are looked for as they come and go).
        segs: set[str] = set()
        deadline = time.monotonic() + 60
        while (flood.poll() is None or len(storm_execs(collector, rw)) < 100) and time.monotonic() < deadline:
            segs.update(p.name for p in (tiny_fs / "spool").iterdir() if p.name.startswith("logs-"))
            time.sleep(0.01)
        assert flood.wait(timeout=60) == 0
        assert len(wait_for_execs(collector, rw, 100, timeout=60)) == 100
        assert segs, run.err.read_text()[-3000:]
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    c = stop_line(err)
    assert c["logs_spool_write_failed"] >= 200 and c["logs_dropped_disk_full"] == 0, c
    assert err.count("cannot write logs records (Read-only file system)") == 1
    assert err.count("logs segments are written again") == 1
    # No write failed once the filesystem was writable.
    assert f" logs_spool_write_failed={c['logs_spool_write_failed']}" in shown, (shown, c["logs_spool_write_failed"])


def _handmade_spool(d: Path, n: int) -> list[str]:
    """A spool an earlier run left: n gap records (real LogRecords) in two
    segments of logs; returns their gap.start values."""
    starts = []
    sp = Spool(str(d), 1 << 32)
    logs = sp.signal("logs")
    for i in range(n):
        rec = encode.gap_record(1_000_000_000 * (i + 1), 1_000_000_000 * (i + 2), 1.0)
        starts.append(encode.iso8601(1_000_000_000 * (i + 1)))
        logs.append([rec])
        if i == n // 2:
            logs._write = None  # start the next segment here
    sp.close()
    return starts


def test_a_damaged_spool_repairs_itself_at_start(make_collector, tmp_path: Path) -> None:
    """A corrupt record in the middle of a segment, a cursor past every
    segment, foreign files and a planted symlink: the agent starts, sends
    every intact record and counts each problem once."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    d = tmp_path / "spool"
    starts = _handmade_spool(d, 20)
    first = min(p for p in d.iterdir() if p.name.startswith("logs-"))
    data = bytearray(first.read_bytes())
    rec_len = int.from_bytes(data[0:4], "little")
    third = 2 * (4 + rec_len)  # the third record (all are the same size)
    data[third:third + 5] = b"\xff\xff\x00\x00\x00"
    first.write_bytes(bytes(data))
    (d / "logs.cursor").write_text("999999 0\n")
    (d / "logs-old.seg").write_text("left by hand")
    (d / "notes.txt").write_text("x")
    victim = tmp_path / "victim"
    victim.write_text("root's\n")
    (d / "traces.cursor").unlink()
    (d / "traces.cursor").symlink_to(victim)
    collector: Collector = make_collector()
    env = agent_env(OTEL_METRIC_EXPORT_INTERVAL="500")
    run = AgentRun(tmp_path / "run", "--endpoint", collector.grpc_endpoint, "--spool-dir", str(d),
                   "--stats-interval", "0.3", env=env)
    try:
        got = collector.wait_for_logs(lambda r: r.event_name == GAP and r.attributes["otel_exec.gap.start"]
                                      in starts, count=19, timeout=60)
        time.sleep(1.5)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    assert {r.attributes["otel_exec.gap.start"] for r in got} == set(starts) - {starts[2]}
    c = stop_line(err)
    assert (c["logs_spool_corrupt"], c["logs_spool_cursor_reset"], c["spool_foreign_files"],
            c["spool_unsafe_files"]) == (1, 1, 2, 1), c
    assert victim.read_text() == "root's\n" and not (d / "traces.cursor").is_symlink()
    last = stats_lines(err)[-1]
    for key in ("logs_spool_corrupt=1", "logs_spool_cursor_reset=1", "spool_foreign_files=2",
                "spool_unsafe_files=1"):
        assert f" {key}" in last, last
    assert "lost=1 " in last  # the corrupt record
    out = collector.output_path.read_text(errors="replace")
    assert "otel_exec.spool.faults" in out and "otel_exec.lost" in out


def test_a_segment_deleted_while_the_agent_runs(storm: str, make_collector, tmp_path: Path) -> None:
    """An operator deletes a segment (to free disk space) while the agent,
    waiting for its collector, holds it: its records are counted as lost,
    the space is given back, what follows is delivered."""
    collector: Collector = make_collector()
    collector.stop()
    d = tmp_path / "spool"
    starts = _handmade_spool(d, 20)
    segs = sorted(p for p in d.iterdir() if p.name.startswith("logs-"))
    in_first = 0
    data = segs[0].read_bytes()
    pos = 0
    while pos < len(data):
        pos += 4 + int.from_bytes(data[pos:pos + 4], "little")
        in_first += 1
    run = AgentRun(tmp_path / "run", "--endpoint", collector.grpc_endpoint, "--spool-dir", str(d), env=agent_env())
    try:
        segs[0].unlink()
        collector.restart()
        got = collector.wait_for_logs(lambda r: r.event_name == GAP and r.attributes["otel_exec.gap.start"]
                                      in starts, count=20 - in_first, timeout=90)
        mark = f"del-{time.time_ns()}"
        assert run_storm(storm, mark, 100, 100).wait(timeout=60) == 0
        assert len(wait_for_execs(collector, mark, 100, timeout=60)) == 100
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    assert len(got) == 20 - in_first
    assert stop_line(err)["logs_spool_segment_lost"] == in_first


def test_a_wall_clock_step_back_is_recorded_not_a_negative_gap(make_collector, tmp_path: Path) -> None:
    """Faked: the heartbeat says an hour ahead of the wall clock, on this
    boot's CLOCK_BOOTTIME of a few seconds ago (the machine's clock is not
    touched)."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    from otel_exec.host.identity import HostIdentity

    d = tmp_path / "spool"
    Spool(str(d), 1 << 32).close()
    boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - 5 * 10**9
    (d / "heartbeat").write_text(f"{time.time_ns() + 3600 * 10**9} {boot} {HostIdentity.current().boot_id}")
    collector: Collector = make_collector()
    run = AgentRun(tmp_path / "run", "--endpoint", collector.grpc_endpoint, "--spool-dir", str(d), env=agent_env())
    try:
        (gap,) = collector.wait_for_logs(lambda r: r.event_name == GAP, timeout=30)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    assert 5 <= gap.attributes["otel_exec.gap.seconds"] < 60
    assert -3660 < gap.attributes["otel_exec.gap.clock_step_seconds"] < -3540
    assert stop_line(err)["clock_steps"] == 1


# -- planted files (issue 10) -------------------------------------------------

def _victims(base: Path, n: int) -> list[tuple[Path, tuple[int, int, int, bytes]]]:
    out = []
    for i in range(n):
        v = base / f"root-file-{i}"
        v.write_bytes(f"root's file {i}: SECRET-{i}-{time.time_ns()}\n".encode())
        v.chmod(0o644)
        st = v.stat()
        out.append((v, (st.st_uid, st.st_gid, st.st_mode, v.read_bytes())))
    return out


def _unchanged(victims: list[tuple[Path, tuple[int, int, int, bytes]]]) -> None:
    for v, before in victims:
        st = v.stat()
        assert (st.st_uid, st.st_gid, st.st_mode, v.read_bytes()) == before, v


def test_links_planted_in_a_user_owned_spool_are_never_followed(make_collector, public_dir: Path) -> None:
    """--user nobody owns the spool, so nobody may have planted anything in
    it: symlinks and hard links named like its files point at root's files.
    None changes owner, mode or content, and none is sent."""
    nobody = pwd.getpwnam("nobody")
    collector: Collector = make_collector()
    work = public_dir / "run"
    work.mkdir()
    work.chmod(0o1777)
    spool = work / "spool"
    first = AgentRun(work, "--user", "nobody", "--endpoint", collector.grpc_endpoint, env=agent_env())
    rc, err = first.stop()
    assert rc == 0, err
    assert spool.stat().st_uid == nobody.pw_uid
    outside = Path(tempfile.mkdtemp(prefix="oe-victims-"))
    try:
        victims = _victims(outside, 5)
        for name in ("heartbeat", "logs.cursor"):
            (spool / name).unlink()
        (spool / "heartbeat").symlink_to(victims[0][0])
        os.link(victims[1][0], spool / "logs.cursor")
        os.link(victims[2][0], spool / "logs-000000000999.seg")  # /etc/shadow, say
        (spool / "traces-000000000999.seg").symlink_to(victims[3][0])
        (spool / "lock").symlink_to(victims[4][0])
        for p in spool.iterdir():
            os.lchown(p, nobody.pw_uid, nobody.pw_gid) if p.is_symlink() else None
        second = AgentRun(work, "--user", "nobody", "--endpoint", collector.grpc_endpoint, env=agent_env())
        time.sleep(2)
        rc, err = second.stop()
        assert rc == 0, err
        _unchanged(victims)
        assert stop_line(err)["spool_unsafe_files"] == 4  # lock is never opened at all
        sent = collector.output_path.read_text(errors="replace")
        assert "SECRET-" not in sent and all(b"SECRET-" not in p.read_bytes() for p in spool.glob("*.seg")
                                             if not p.is_symlink() and p.stat().st_nlink == 1)
        for p in spool.iterdir():
            if p.name in ("heartbeat", "logs.cursor"):
                assert not p.is_symlink() and p.stat().st_nlink == 1
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_a_spool_directory_planted_as_a_symlink_is_refused(public_dir: Path) -> None:
    victim_dir = Path(tempfile.mkdtemp(prefix="oe-rootdir-"))
    victim_dir.chmod(0o755)
    try:
        link = public_dir / "spool"
        link.symlink_to(victim_dir)
        os.lchown(link, 65534, 65534)  # planted by another user
        with pytest.raises(RuntimeError, match="symlink"):
            AgentRun(public_dir / "run", "--endpoint", "http://127.0.0.1:9", "--spool-dir", str(link))
        st = victim_dir.stat()
        assert (st.st_uid, st.st_mode & 0o7777, list(victim_dir.iterdir())) == (0, 0o755, [])
    finally:
        shutil.rmtree(victim_dir, ignore_errors=True)


def test_a_spool_directory_of_another_uid_exits_2(tmp_path: Path) -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    os.chown(spool, 4242, 4242)
    proc = subprocess.run([sys.executable, "-m", "otel_exec", "run", "--endpoint", "http://127.0.0.1:9",
                           "--spool-dir", str(spool), "--duration", "1"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2, proc.stderr
    assert f"spool directory {spool} belongs to uid 4242" in proc.stderr
    assert spool.stat().st_uid == 4242 and list(spool.iterdir()) == []


def test_the_console_exporter_touches_no_spool_directory(public_dir: Path) -> None:
    foreign = public_dir / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 4242, 4242)
    for spool in (public_dir / "missing", foreign):
        work = public_dir / f"run-{spool.name}"
        work.mkdir()
        work.chmod(0o1777)  # the ready file is written as --user
        run = AgentRun(work, "--exporter", "console", "--user", "nobody", "--spool-dir", str(spool))
        rc, err = run.stop()
        assert rc == 0, err
    assert not (public_dir / "missing").exists()
    assert foreign.stat().st_uid == 4242 and list(foreign.iterdir()) == []
