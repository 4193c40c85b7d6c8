"""Exec events for the processes already running at start (as Tetragon's
procevents does): each process /proc lists becomes an ExecEvent marked
``observed``, handled on the same path as the kernel's events, so the
process table, span lineage and the exporters know no second way in.

An observed event carries what /proc tells: ids, start, executable, comm,
argv, the real and effective ids and, of the environment, the trace
context variables only (span lineage reads them; the exporters report no
environment of an observed process; envc counts the whole). Its timestamp is when
/proc was read, the same for every process of one start; the fields /proc
does not give are placeholders named in ``unavailable``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator

from otel_exec.model.blocks import split_block, text
from otel_exec.host import procfs
from otel_exec.host.identity import HostIdentity
from otel_exec.model.events import ExecEvent, Strings

NOT_READ = ("prev_comm", "pwd", "mount_ns", "pid_ns", "cgroup_id", "cgroup_path", "container_id", "hostname",
            "cmdpath", "ctime", "inode_mode", "interpreter_pathname", "interpreter_dev", "interpreter_inode",
            "interpreter_ctime", "interp", "stdin_type", "stdin_path")
"""ExecEvent fields an observed event has no value for."""


NO_IDS = ("uid", "gid", "euid", "egid")
"""The id fields, when they were not read (`with_ids` False)."""

PAUSE_EVERY = 64


def observed_execs(identity: HostIdentity, proc: str = procfs.PROC, with_ids: bool = True,
                   env_names: Collection[str] | None = None,
                   pause: Callable[[], None] = lambda: None) -> Iterator[ExecEvent]:
    """One observed exec event per process running now, oldest first (a
    parent before its children), argv and env as read (the policy stage
    redacts them like the kernel's); of the environment, only `env_names`
    when given. Made one at a time, as they are handled: with tens of
    thousands of processes a list of them all would be the agent's largest
    memory. A process's image parent is only resolved once every process
    has been read: its parent as /proc lists it, unless that pid's holder
    started after it (a reused pid). Without `with_ids` the user and group
    ids are not read: -1 and unavailable. `pause` is called every
    PAUSE_EVERY processes read and events made (the agent drains its ring
    buffer there, which fills meanwhile)."""
    found = []
    for p in procfs.running(proc, with_ids, env_names):
        found.append(p)
        if len(found) % PAUSE_EVERY == 0:
            pause()
    unavailable = NOT_READ if with_ids else NOT_READ + NO_IDS
    now = time.time_ns()
    by_pid = {p.pid: p for p in found}
    exec_ids = {p.pid: identity.exec_id(p.pid, p.start_ticks, p.exe_dev, p.exe_ino) for p in found}
    for n, p in enumerate(sorted(found, key=lambda p: (p.start_ticks, p.pid)), 1):
        if n % PAUSE_EVERY == 0:
            pause()
        parent = by_pid.get(p.ppid)
        if parent is not None and parent.start_ticks > p.start_ticks:
            parent = None
        start_ns = identity.boot_ns_to_epoch_ns(p.start_ticks * identity.ns_per_tick)
        args = split_block(p.cmdline, truncated=p.cmdline_cut)
        ids = p.ids or procfs.StatusIds()
        unread = -1  # an id not read: trusted by no --trust-traceparent list
        yield ExecEvent(
            timestamp=now, pid=p.pid, tid=p.pid, ppid=p.ppid, host_pid=p.pid, host_tid=p.pid,
            host_ppid=p.ppid, image_ppid=p.ppid if parent is not None else 0, process_start_time=start_ns,
            start_ticks=p.start_ticks, exec_id=exec_ids[p.pid],
            parent_exec_id=exec_ids[parent.pid] if parent is not None else "",
            uid=unread if ids.uid is None else ids.uid, gid=unread if ids.gid is None else ids.gid,
            euid=unread if ids.euid is None else ids.euid, egid=unread if ids.egid is None else ids.egid,
            comm=text(p.comm), prev_comm="", pwd="", mount_ns=0, pid_ns=0, cgroup_id=0, cgroup_path="",
            container_id=None, hostname="", cmdpath="", pathname=text(p.exe), dev=p.exe_dev, inode=p.exe_ino,
            ctime=0, inode_mode=0, interpreter_pathname="", interpreter_dev=0, interpreter_inode=0,
            interpreter_ctime=0, argv=Strings(args), interp="", stdin_type=0, stdin_path="",
            invoked_from_kernel=False, env=Strings(p.environ), argv_truncated=p.cmdline_cut, env_truncated=False,
            argc=len(args), envc=p.envc, path_truncated=[], unavailable=unavailable,
            parent_start_ticks=parent.start_ticks if parent is not None else None, observed=True)
