"""The process table: filled from /proc (observed exec events) and kept by
events (otel_exec.lineage.proctable)."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.helpers.kernel_guard import MACHINE_LACKS
from otel_exec.model.events import ExitEvent
from otel_exec.host.identity import HostIdentity
from otel_exec.host.procevents import observed_execs
from otel_exec.lineage.proctable import DEFAULT_MAX_ENTRIES, ProcessTable
from otel_exec.lineage.spans import SpanLineage
from otel_exec.policy.redact import RedactionPolicy
from otel_exec.policy.stage import ExecPolicy
from tests.helpers.events import exec_ev


@pytest.fixture(scope="module")
def ident():
    return HostIdentity.current()


def proc_stat_fields(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rfind(b")") + 2:].split()


def exit_ev(pid, ticks, code=0, sig=None):
    return ExitEvent(timestamp=0, pid=pid, start_ticks=ticks, exit_code=code, signal=sig,
                     core_dumped=False, comm="x")


def observe(ident, proc="/proc"):
    """The processes in `proc` as the agent handles them at start: observed
    exec events through span lineage into a table. Returns the table and
    how many events there were."""
    table = ProcessTable()
    lineage = SpanLineage(table)
    events = list(observed_execs(ident, proc))
    for ev in events:
        lineage.on_exec(ev)
    return table, len(events)


def test_observed_finds_self_and_parent(ident):
    table, n = observe(ident)
    assert n == len(table) > 1
    me = table.get(os.getpid())
    assert me is not None and me.seeded_from_proc and me.exec_time is None
    assert me.ppid == os.getppid()
    fields = proc_stat_fields(os.getpid())
    assert me.start_ticks == int(fields[19])
    ps = psutil.Process()
    assert me.exe == os.readlink("/proc/self/exe") == ps.exe()
    assert me.comm == ps.name()[:15]
    assert me.argv == ps.cmdline()
    st = os.stat("/proc/self/exe")
    assert me.exec_id == ident.exec_id(os.getpid(), me.start_ticks, st.st_dev, st.st_ino)

    parent = table.get(os.getppid())
    assert parent is not None
    assert parent.start_ticks == int(proc_stat_fields(os.getppid())[19])
    try:
        parent_exe = psutil.Process(os.getppid()).exe()
    except psutil.AccessDenied:  # a parent even root may not read (a VM's init as pytest's parent): left empty
        parent_exe = ""
    assert parent.exe == parent_exe
    assert me.parent_exec_id == parent.exec_id
    assert table.ancestors(os.getpid())[0] is parent


def test_observed_event_of_this_process(ident):
    """What the builder makes of /proc/self: ids, start, argv and the
    environment as read, placeholders named; the policy stage then redacts
    argv and keeps only the trace context of the environment."""
    def observed_self(with_ids):
        events = observed_execs(ident, with_ids=with_ids)
        return next(ev for ev in events if ev.host_pid == os.getpid())

    me = observed_self(True)
    assert me.observed and (me.uid, me.euid, me.gid, me.egid) == (os.getuid(), os.geteuid(), os.getgid(), os.getegid())
    cmdline = psutil.Process().cmdline()
    assert me.argv == cmdline and me.argc == len(cmdline) and not me.argv_truncated
    with open("/proc/self/environ", "rb") as f:
        environ = [e.decode("utf-8", "backslashreplace") for e in f.read().split(b"\0") if e]
    assert me.env == environ and me.envc == len(environ)
    ExecPolicy(RedactionPolicy(), 1, lambda env: {"TRACEPARENT": env[0]}).apply(me)
    assert me.env == [] and me.env.trace_context == {"TRACEPARENT": environ[0]}
    assert me.argv == RedactionPolicy().argv(cmdline) and me.argv.redacted
    assert me.start_ticks == int(proc_stat_fields(os.getpid())[19])
    assert me.process_start_time == ident.boot_ns_to_epoch_ns(me.start_ticks * ident.ns_per_tick)
    assert me.pathname == os.readlink("/proc/self/exe") and me.inode == os.stat("/proc/self/exe").st_ino
    assert (me.host_ppid, me.image_ppid) == (os.getppid(), os.getppid())
    assert me.parent_start_ticks == int(proc_stat_fields(os.getppid())[19])
    assert "pwd" in me.unavailable and "uid" not in me.unavailable
    no_ids = observed_self(False)
    assert (no_ids.uid, no_ids.euid, no_ids.gid, no_ids.egid) == (-1,) * 4
    assert {"uid", "euid", "gid", "egid"} <= set(no_ids.unavailable)


@pytest.mark.needs_host_pidns
def test_observed_kernel_thread(ident):
    # Whether pid 2 is kthreadd is read from /proc, not from the table under
    # test: a reader that misses it fails instead of skipping.
    lacks = MACHINE_LACKS["needs_host_pidns"]()
    if lacks:
        pytest.skip(lacks)
    table, _ = observe(ident)
    kthreadd = table.get(2)
    assert kthreadd is not None and kthreadd.comm == "kthreadd"
    assert kthreadd.exe == "" and kthreadd.argv == []
    assert kthreadd.exec_id == ident.exec_id(2, kthreadd.start_ticks, 0, 0)


def test_observed_odd_comm_and_zombie(ident, tmp_path):
    odd = tmp_path / "a) b (c)"
    odd.symlink_to("/bin/sleep")
    sleeper = subprocess.Popen([str(odd), "30"])
    zombie = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while proc_stat_fields(zombie.pid)[0] != b"Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        table, _ = observe(ident)
        info = table.get(sleeper.pid)
        assert info is not None
        assert info.comm == "a) b (c)"
        assert info.ppid == os.getpid()
        assert info.argv == [str(odd), "30"]
        assert info.exe == os.path.realpath("/bin/sleep")
        assert table.get(zombie.pid) is None  # exited already: no exit event will come
    finally:
        sleeper.kill()
        sleeper.wait()
        zombie.wait()


def test_observed_skips_what_vanished(ident, tmp_path):
    (tmp_path / "123").mkdir()  # no stat file: gone between listdir and read
    (tmp_path / "self").mkdir()
    (tmp_path / "456").mkdir()
    (tmp_path / "456" / "stat").write_bytes(b"456 (weird) comm)) S 1 456 456 0 -1 "
                                            + b"0 " * 13 + b"777 0 0\n")
    (tmp_path / "456" / "cmdline").write_bytes(b"a\0b c\0")
    table, n = observe(ident, proc=str(tmp_path))
    assert n == 1
    info = table.get(456)
    assert (info.comm, info.ppid, info.start_ticks, info.argv, info.exe) == \
        ("weird) comm)", 1, 777, ["a", "b c"], "")


def test_observed_at_scale(ident):
    """~300 processes read from /proc all become observed exec events the
    agent handles. (Its cost is a benchmark, not a test: bench/startup_cost.py
    times start-up to the ready file, which includes this work.)"""
    children = [subprocess.Popen(["sleep", "60"]) for _ in range(300 - len(psutil.pids()))]
    try:
        before = set(psutil.pids())
        agent = _observed_by_agent(ident)
        after = set(psutil.pids())
        seen = {info.pid for info in agent.table.entries()}
        assert {c.pid for c in children} <= seen
        # Every process alive before the read and after it was alive
        # throughout, so read, but for a pid reused in between: the rest of
        # the machine's (another test's storm) come and go by the hundred.
        assert len((before & after) - seen) <= 5
    finally:
        for c in children:
            c.kill()
        for c in children:
            c.wait()


def _observed_by_agent(ident):
    """The agent's start-up work: read /proc, handle every observed event."""
    from otel_exec.agent import Agent
    from otel_exec.config import Config

    agent = Agent(Config(), [], ident)
    agent.observe_running()
    return agent


def test_lru_bound_and_eviction():
    assert ProcessTable().max_entries == DEFAULT_MAX_ENTRIES == 65536
    table = ProcessTable(max_entries=3)
    for pid in (1, 2, 3, 4):
        table.on_exec(exec_ev(pid, 0, pid, f"e{pid}"))
    assert len(table) == 3 and table.evicted == 1
    assert table.get(1) is None  # the oldest went first
    table.get(2)  # a use: 3 is now the least recent
    table.on_exec(exec_ev(5, 0, 5, "e5"))
    assert table.evicted == 2 and table.get(3) is None
    dropped = []
    table.on_drop = dropped.append
    table.on_exec(exec_ev(6, 0, 6, "e6"))
    assert [i.exec_id for i in dropped] == ["e4"]  # told, so an open span can still end


def test_exec_exit_flow():
    table = ProcessTable()
    table.on_exec(exec_ev(100, 1, 50, "bash-id", path="/bin/bash", argv=("bash",), ts=10))
    _, previous = table.on_exec(exec_ev(101, 100, 60, "ls-id", parent_exec_id="bash-id", path="/bin/ls",
                                        argv=("ls", "-l"), ts=20))
    assert previous is None  # a fork+exec: no earlier image of this process
    now = table.get(101)
    assert (now.exec_id, now.parent_exec_id, now.exe, now.argv, now.exec_time, now.seeded_from_proc) == \
        ("ls-id", "bash-id", "/bin/ls", ["ls", "-l"], 20, False)
    assert [a.exec_id for a in table.ancestors(101)] == ["bash-id"]

    # Re-exec of the same process: the previous image is returned.
    _, again = table.on_exec(exec_ev(101, 100, 60, "cat-id", path="/bin/cat", ts=30))
    assert again is now

    ended = table.on_exit(exit_ev(101, 60, code=3))
    assert (ended.exec_id, ended.exit_code, ended.signal) == ("cat-id", 3, None)
    assert table.get(101) is None and len(table) == 1
    assert table.on_exit(exit_ev(101, 60)) is None


def test_exit_by_signal():
    table = ProcessTable()
    table.on_exec(exec_ev(7, 1, 5, "id"))
    ended = table.on_exit(exit_ev(7, 5, code=None, sig=signal.SIGKILL))
    assert (ended.exit_code, ended.signal) == (None, signal.SIGKILL)


def test_exec_parent_id_falls_back_to_event():
    table = ProcessTable()
    assert table.on_exec(exec_ev(5, 4, 9, "e", parent_exec_id="kernel"))[1] is None
    assert table.get(5).parent_exec_id == "kernel"


def test_pid_reuse():
    table = ProcessTable()
    table.on_exec(exec_ev(200, 1, 100, "old"))
    # The exit of the old holder was missed; pid 200 now belongs to a process
    # started later. Its exec must not report the stale entry as its past.
    assert table.on_exec(exec_ev(200, 1, 300, "new"))[1] is None
    assert table.get(200).exec_id == "new"
    # An exit of a process the table holds a stale entry for drops the entry.
    table.on_exec(exec_ev(201, 1, 100, "old2"))
    assert table.on_exit(exit_ev(201, 400)) is None
    assert table.get(201) is None


def test_ancestors_stop_at_reused_parent_pid_and_limit():
    table = ProcessTable()
    table.on_exec(exec_ev(10, 1, 100, "child"))
    table.on_exec(exec_ev(1, 0, 500, "later-holder-of-pid-1"))
    assert table.ancestors(10) == []
    for pid in range(20, 30):
        table.on_exec(exec_ev(pid, pid - 1, 1000 + pid, f"p{pid}"))
    assert [a.pid for a in table.ancestors(29, limit=3)] == [28, 27, 26]
    assert [a.pid for a in table.ancestors(29)] == list(range(28, 19, -1))
    assert table.ancestors(999) == []


def test_exec_of_known_observed_process(ident):
    table, _ = observe(ident)
    me = table.get(os.getpid())
    _, prev = table.on_exec(exec_ev(os.getpid(), os.getppid(), me.start_ticks, "new-image",
                                    path=sys.executable))
    assert prev is me  # a re-exec of a process found in /proc


def test_table_size_must_be_positive():
    with pytest.raises(ValueError, match="^max_entries must be at least 1$"):
        ProcessTable(max_entries=0)
    one = ProcessTable(max_entries=1)
    one.on_exec(exec_ev(1, 0, 1, "e1"))
    one.on_exec(exec_ev(2, 0, 2, "e2"))
    assert [i.exec_id for i in one.entries()] == ["e2"] and one.evicted == 1


def test_reused_pid_drops_the_stale_image_and_keeps_the_new_one():
    table = ProcessTable()
    dropped = []
    table.on_drop = dropped.append
    table.on_exec(exec_ev(7, 1, 100, "old", path="/bin/old"))
    info, previous = table.on_exec(exec_ev(7, 1, 200, "new", path="/bin/new"))
    assert previous is None  # a different process: not its past image
    assert [d.exec_id for d in dropped] == ["old"]
    assert (info.exec_id, info.comm, info.exe) == ("new", "new", "/bin/new")
    assert table.entries() == [info]


def test_parent_started_in_the_same_tick_is_an_ancestor():
    table = ProcessTable()
    table.on_exec(exec_ev(10, 1, 500, "parent"))
    table.on_exec(exec_ev(11, 10, 500, "child"))  # forked and exec'd within one clock tick
    assert [a.exec_id for a in table.ancestors(11)] == ["parent"]
    table.on_exec(exec_ev(12, 10, 499, "older-than-parent"))  # a reused pid's parent: not an ancestor
    assert table.ancestors(12) == []


def test_image_parent_is_not_an_earlier_holder_of_its_pid():
    """An exec whose kernel record could not read the parent's executable
    (the parent was exiting) takes the parent's exec id from the table: never
    that of an earlier process with the same pid whose entry is still there
    (its exit missed, or the pid reused before the record was written)."""
    table = ProcessTable()
    table.on_exec(exec_ev(300, 1, 100, "earlier-holder"))
    child = exec_ev(301, 300, 250, "child", parent_exec_id="")
    child.parent_start_ticks = 200  # the real parent, started after the entry's process
    assert table.image_parent(child) is None
    child.parent_start_ticks = 100
    assert table.image_parent(child).exec_id == "earlier-holder"
    child.parent_start_ticks = None  # a backend that does not read it
    assert table.image_parent(child).exec_id == "earlier-holder"
