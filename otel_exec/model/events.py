"""Typed events: what the kernel reported, decoded, before any export mapping.

Field names are the console JSON keys (see docs/fields.md). Strings that were
not valid UTF-8 in the kernel keep their bytes as ``\\xNN`` escapes (Python's
``backslashreplace``), so a path or argument is never dropped or mangled.
"""
from __future__ import annotations

from dataclasses import dataclass

from otel_exec.model.executable import ExecutableIdentity


class SharedExec:
    """What every exec of one command from one context has in common (the
    shared part of the kernel record), decoded once: `fields` are the
    values of ExecEvent's shared fields, in order; `parent_exe` the kernel
    dev and inode of the parent's executable. Later stages cache what they
    derive from it in `encoded`."""

    __slots__ = ("fields", "parent_exe", "encoded")

    def __init__(self, fields: tuple[object, ...], parent_exe: tuple[int, int] | None = (0, 0)) -> None:
        self.fields = fields
        self.parent_exe = parent_exe
        self.encoded: object = None


@dataclass(slots=True)
class ExecEvent:
    # Per process
    timestamp: int  # ns since epoch, from the kernel event time
    pid: int
    tid: int
    ppid: int
    host_pid: int
    host_tid: int
    host_ppid: int
    # The nearest ancestor that exec'd, whose image the parent runs: the
    # parent itself unless that is a forked copy (a subshell). Lineage.
    image_ppid: int
    process_start_time: int  # ns since epoch
    start_ticks: int  # start time in clock ticks since boot, as /proc/PID/stat
    exec_id: str
    parent_exec_id: str
    # Shared by the execs of one command from one context (SharedExec)
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
    path_truncated: list[str]  # names of the paths cut by a bound
    # With --sample-rate N > 1: N when sampling kept this exec (it stands
    # for N), 1 when an always-keep option did; None without sampling.
    sample_rate: int | None = None
    shared: SharedExec | None = None  # not a field of the event: a cache key
    # Names of the fields the backend could not verify, or that --no-field
    # switched off (their values are placeholders: "", 0, [], None, False).
    # From the CO-RE backend only the latter; see docs/backends.md for BCC.
    unavailable: tuple[str, ...] = ()
    # The image parent's start in clock ticks since boot, when the backend
    # read it: tells its table entry from a stale one of an earlier holder
    # of the pid (see ProcessTable.image_parent).
    parent_start_ticks: int | None = None
    # What the executed file is by content (otel_exec.host.executables);
    # None when identity is off. For a `#!` script, the script's too.
    executable_identity: ExecutableIdentity | None = None
    script_identity: ExecutableIdentity | None = None


SHARED_FIELDS = ExecEvent.__slots__[ExecEvent.__slots__.index("uid"):ExecEvent.__slots__.index("shared")]


@dataclass(slots=True)
class ExitEvent:
    timestamp: int
    pid: int  # host pid
    start_ticks: int
    exit_code: int | None  # set when the process exited normally
    signal: int | None  # set when a signal ended it
    core_dumped: bool
    comm: str


@dataclass(slots=True)
class UnreportedExecEvent:
    """A process that had exec'd before exec'd again, and that exec was
    filtered or sampled out: the image it ran until then has ended."""

    timestamp: int
    pid: int  # host pid
    start_ticks: int


Event = ExecEvent | ExitEvent | UnreportedExecEvent
