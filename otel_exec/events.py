"""Typed events: what the kernel reported, decoded, before any export mapping.

Field names are the console JSON keys (see docs/fields.md). Strings that were
not valid UTF-8 in the kernel keep their bytes as ``\\xNN`` escapes (Python's
``backslashreplace``), so a path or argument is never dropped or mangled.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ExecEvent:
    timestamp: int  # ns since epoch, from the kernel event time
    pid: int
    tid: int
    ppid: int
    host_pid: int
    host_tid: int
    host_ppid: int
    uid: int
    gid: int
    euid: int
    egid: int
    comm: str
    prev_comm: str
    pwd: str
    mount_ns: int
    pid_ns: int
    cgroup_id: int
    cgroup_path: str
    container_id: str | None
    hostname: str
    process_start_time: int  # ns since epoch
    exec_id: str
    parent_exec_id: str
    cmdpath: str
    pathname: str
    dev: int  # user-space encoding, as st_dev
    inode: int
    ctime: int  # ns since epoch
    inode_mode: int
    interpreter_pathname: str
    interpreter_dev: int
    interpreter_inode: int
    interpreter_ctime: int
    argv: list[str]
    interp: str
    stdin_type: int
    stdin_path: str
    invoked_from_kernel: bool
    env: list[str]
    argv_truncated: bool
    env_truncated: bool
    argc: int  # the kernel's count, also when argv was truncated
    envc: int
    path_truncated: list[str] = field(default_factory=list)  # names of cut paths
    start_ticks: int = 0  # start time in clock ticks since boot, as /proc/PID/stat
    # The nearest ancestor that exec'd, whose image the parent runs: the
    # parent itself unless that is a forked copy (a subshell). Lineage.
    image_ppid: int = 0


@dataclass(slots=True)
class ExitEvent:
    timestamp: int
    pid: int  # host pid
    start_ticks: int
    exit_code: int | None  # set when the process exited normally
    signal: int | None  # set when a signal ended it
    core_dumped: bool
    comm: str


Event = ExecEvent | ExitEvent
