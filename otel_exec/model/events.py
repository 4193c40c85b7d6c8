"""Typed events: what the kernel reported, decoded, before any export mapping.

Field names are the console JSON keys (see docs/fields.md). Strings that were
not valid UTF-8 in the kernel keep their bytes as ``\\xNN`` escapes (Python's
``backslashreplace``), so a path or argument is never dropped or mangled.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, fields
from typing import Any

from otel_exec.model.executable import ExecutableIdentity


class Strings(list[str]):
    """A decoded argv or env list. Identical blocks (a storm of one command,
    the shared environment of a build) decode to one shared instance, which
    the policy (otel_exec.policy.stage) redacts in place, once, before any
    later stage sees it: `redacted` says it has. `trace_context`: the W3C
    context of an env as the process had it, read before redaction (the
    policy) or cached by span lineage."""

    __slots__ = ("trace_context", "redacted")

    def __init__(self, items: Iterable[str] = ()) -> None:
        list.__init__(self, items)
        self.redacted = False


class SharedExec:
    """What every exec of one command from one context has in common (the
    shared part of the kernel record), decoded once: `fields` are the
    values of ExecEvent's SHARED_FIELDS, in that order (SharedExec.of
    checks it); `parent_exe` the kernel dev and inode of the
    parent's executable; `sampled`: the kernel's sampling draw kept these
    execs (OE_F_SAMPLED). Later stages key what they derive from it by
    this object, and keep it only if `repeats`: the decoder's memo kept
    it (its command came again), a one-off exec's is not worth keeping."""

    __slots__ = ("fields", "parent_exe", "sampled", "repeats")

    def __init__(self, fields: tuple[object, ...], parent_exe: tuple[int, int] | None = (0, 0),
                 sampled: bool = False) -> None:
        self.fields = fields
        self.parent_exe = parent_exe
        self.sampled = sampled
        self.repeats = False

    @classmethod
    def of(cls, parent_exe: tuple[int, int] | None, sampled: bool, named: tuple[object, ...]) -> SharedExec:
        """From ("uid", uid, "gid", gid, ...): each of the SHARED_FIELDS,
        in that order, followed by its value. The names are checked on
        every call (a cheap tuple comparison, unlike ~30 keywords): a field
        moved or renamed in ExecEvent is an error, never a shifted value."""
        if named[::2] != SHARED_FIELDS:
            raise ValueError(f"SharedExec.of got the fields {named[::2]}; ExecEvent's shared fields are, "
                             f"in order: {SHARED_FIELDS}")
        return cls(named[1::2], parent_exe, sampled)


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
    # Found running in /proc at start (otel_exec.host.procevents), not
    # reported by the kernel: its timestamp is when /proc was read, the
    # fields /proc did not give are placeholders named in `unavailable`.
    observed: bool = False
    # What the executed file is by content (otel_exec.host.executables);
    # None when identity is off. For a `#!` script, the script's too.
    executable_identity: ExecutableIdentity | None = None
    script_identity: ExecutableIdentity | None = None


# The fields the decoder reads from the shared part of the record; the rest
# are per exec (sample_rate: set by the policy).
SHARED_FIELDS: tuple[str, ...] = ExecEvent.__slots__[
    ExecEvent.__slots__.index("uid"):ExecEvent.__slots__.index("sample_rate")]


def per_exec_constructor(event: type, shared_fields: tuple[str, ...]) -> Callable[..., Any]:
    """A function building `event` (a slots dataclass) from a SharedExec,
    whose `fields` hold the values of `shared_fields` in that order, and
    every other field by keyword (those with a default may be left out).

    Keywords on the dataclass itself would be the safe way, and a slow one
    on the decoder's per-exec path (~40 of them); a positional call shifts
    values when a field moves. The generated function sets each field by
    its name instead, in place of the dataclass's __init__ (which does the
    same, and nothing else: no __post_init__). A shared name the dataclass
    lacks is an error here, at import; a per-exec one at the first call."""
    names = [f.name for f in fields(event)]
    unknown = [n for n in (*shared_fields, "shared") if n not in names]
    if unknown:
        raise TypeError(f"{event.__name__} has no field {', '.join(unknown)}")
    namespace: dict[str, Any] = {"_new": object.__new__, "_event": event}
    params = []
    for f in fields(event):
        if f.name in shared_fields or f.name == "shared":
            continue
        if f.default_factory is not MISSING:
            raise TypeError(f"{event.__name__}.{f.name}: a default_factory is not supported")
        if f.default is not MISSING:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        else:
            params.append(f.name)
    body = ["ev = _new(_event)", *(f"ev.{n} = {n}" for n in names if n not in shared_fields)]
    if shared_fields:
        body.append(f"({', '.join(f'ev.{n}' for n in shared_fields)},) = shared.fields")
    name = f"{event.__name__.lower()}_from_shared"
    lines = [f"def {name}(shared, *, {', '.join(params)}):", *(f"    {line}" for line in [*body, "return ev"])]
    source = "\n".join(lines) + "\n"
    exec(source, namespace)  # noqa: S102 - source made of the dataclass's field names
    return namespace[name]  # type: ignore[no-any-return]


# ExecEvent from a SharedExec and its per-exec fields by keyword.
exec_event_from_shared = per_exec_constructor(ExecEvent, SHARED_FIELDS)


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
