"""Events -> OTLP log records and spans, encoded (docs/attributes.md).

Attribute names follow the OpenTelemetry semantic conventions where one
exists; every other field lives under the `otel_exec.` namespace. An exec's
attributes are encoded once and used by both its log record and its span.
"""
from __future__ import annotations

import os
import shlex
import signal
import stat
import struct
import time

from otel_exec.export.otlp import protowire as w
from otel_exec.model.events import ExecEvent
from otel_exec.model.executable import COMPLETE, ExecutableIdentity
from otel_exec.lineage.proctable import ProcessInfo

EVENT_NAME = "otel_exec.process.exec"
OBSERVED_EVENT_NAME = "otel_exec.process.observed"  # running when the agent started
GAP_EVENT_NAME = "otel_exec.agent.gap"  # an interval no agent watched
SEVERITY_WARN = 13
SEVERITY_INFO = 9
SPAN_KIND_INTERNAL = 1
STATUS_ERROR = 2
ENV_PREFIX = "process.environment_variable."

# stdin_type as a word: the S_IFMT names of stat(2)
_FILE_TYPES = {stat.S_IFREG: "reg", stat.S_IFDIR: "dir", stat.S_IFCHR: "chr", stat.S_IFBLK: "blk",
               stat.S_IFIFO: "fifo", stat.S_IFSOCK: "sock", stat.S_IFLNK: "lnk"}

_heads: dict[str, bytes] = {}
_LOG_ATTR = w.tag(6, w.LEN)  # LogRecord.attributes
_SPAN_ATTR = w.tag(9, w.LEN)  # Span.attributes


def _h(key: str) -> bytes:
    head = _heads.get(key)
    if head is None:
        if len(_heads) >= 8192:  # env key names are unbounded
            _heads.clear()
        head = _heads[key] = w.key_head(key)
    return head


def _kv(key: str, value: w.Value) -> bytes:
    return w.key_value(_h(key), w.any_value(value))


class Attrs:
    """Encoded attributes, framed once as LogRecord.attributes and once as
    Span.attributes (the same KeyValues under another field number)."""

    __slots__ = ("log", "span")

    def __init__(self, log: bytes, span: bytes) -> None:
        self.log = log
        self.span = span

    @classmethod
    def of(cls, kvs: list[bytes]) -> Attrs:
        if not kvs:
            return cls(b"", b"")
        framed = [w.varint(len(kv)) + kv for kv in kvs]
        return cls(_LOG_ATTR + _LOG_ATTR.join(framed), _SPAN_ATTR + _SPAN_ATTR.join(framed))

    @classmethod
    def concat(cls, parts: tuple[Attrs, ...]) -> Attrs:
        return cls(b"".join(p.log for p in parts), b"".join(p.span for p in parts))


_seconds: dict[int, str] = {}


def iso8601(ns: int) -> str:
    secs, rem = divmod(ns, 1_000_000_000)
    prefix = _seconds.get(secs)
    if prefix is None:
        if len(_seconds) >= 4096:
            _seconds.clear()
        prefix = _seconds[secs] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{prefix}.{rem // 1_000_000:03d}Z"


def _image_kvs(pathname: str, dev: int, inode: int, ctime: int, mode: int, cmdpath: str, interp: str,
               ld_path: str, ld_dev: int, ld_inode: int, ld_ctime: int) -> list[bytes]:
    kv = _kv
    kvs = [
        kv("process.executable.path", pathname),
        kv("process.executable.name", os.path.basename(pathname)),
        kv("file.path", pathname),
        kv("file.inode", str(inode)),
        kv("file.mode", f"{stat.S_IMODE(mode):04o}"),
        kv("file.changed", iso8601(ctime)),
        kv("otel_exec.file.dev", dev),
        kv("otel_exec.file.type", _FILE_TYPES.get(stat.S_IFMT(mode), "unknown")),
        kv("otel_exec.cmdpath", cmdpath),
        kv("otel_exec.interp", interp),
    ]
    if ld_path or ld_inode:  # the identity alone when --no-field paths
        kvs += (
            kv("otel_exec.interpreter.path", ld_path),
            kv("otel_exec.interpreter.dev", ld_dev),
            kv("otel_exec.interpreter.inode", str(ld_inode)),
            kv("otel_exec.interpreter.changed", iso8601(ld_ctime)),
        )
    return kvs


def _context_kvs(uid: int, gid: int, euid: int, egid: int, pwd: str, cgroup_path: str, container: str | None,
                 hostname: str, mount_ns: int, pid_ns: int, cgroup_id: int, comm: str, prev_comm: str,
                 stdin_type: int, stdin_path: str, from_kernel: bool, argv_cut: bool, env_cut: bool,
                 envc: int, cut_paths: list[str]) -> list[bytes]:
    kv = _kv
    kvs = [
        kv("process.user.id", euid),
        kv("process.real_user.id", uid),
        kv("process.group.id", egid),
        kv("process.real_group.id", gid),
        kv("process.working_directory", pwd),
        kv("process.interactive", stdin_type == stat.S_IFCHR and stdin_path.startswith(("/dev/pts/", "/dev/tty"))),
        kv("process.linux.cgroup", f"0::{cgroup_path}"),
        kv("otel_exec.comm", comm),
        kv("otel_exec.prev_comm", prev_comm),
        kv("otel_exec.stdin.type", _FILE_TYPES.get(stdin_type, "none" if not stdin_type else "unknown")),
        kv("otel_exec.stdin.path", stdin_path),
        kv("otel_exec.invoked_from_kernel", from_kernel),
        kv("otel_exec.mount_ns", mount_ns),
        kv("otel_exec.pid_ns", pid_ns),
        kv("otel_exec.cgroup.id", cgroup_id),
        kv("otel_exec.uts.hostname", hostname),
        kv("otel_exec.env_count", envc),
        kv("otel_exec.argv_truncated", argv_cut),
        kv("otel_exec.env_truncated", env_cut),
    ]
    if container:
        kvs.append(kv("container.id", container))
    if cut_paths:
        kvs.append(kv("otel_exec.path_truncated", cut_paths))
    return kvs


def _env_kvs(env: list[str]) -> list[bytes]:
    """One attribute per key (OTLP forbids duplicates): the first value of a
    key set twice wins, as getenv(3) finds it; entries without "=" go into
    one array attribute."""
    kvs = []
    seen = set()
    bare = []
    for entry in env:
        key, sep, value = entry.partition("=")
        if not sep:
            bare.append(entry)
        elif key not in seen:
            seen.add(key)
            kvs.append(_kv(ENV_PREFIX + key, value))
    if bare:
        kvs.append(_kv("otel_exec.env_entries_without_value", bare))
    return kvs


_varint = w.varint


def _int_prefixes(key: str) -> tuple[bytes, ...]:
    """For each varint size L (index), everything of a framed KeyValue with
    an int value but the value's varint: prefix[L] + varint(v) is the whole."""
    head = _h(key)
    return (b"",) + tuple(_varint(len(head) + 2 + n) + head + _varint(1 + n) + w.tag(3, w.VARINT)
                          for n in range(1, 11))


def _str_prefix(key: str, size: int) -> bytes:
    """The same for a string value of a fixed encoded size."""
    head = _h(key)
    value_len = 1 + len(_varint(size)) + size
    return _varint(len(head) + len(_varint(value_len)) + value_len) + head + _varint(value_len) + \
        w.tag(1, w.LEN) + _varint(size)


_PID, _PPID, _VPID, _VPPID = (_int_prefixes(k) for k in (
    "process.pid", "process.parent_pid", "process.vpid", "otel_exec.vppid"))
_FIXED_STRINGS = {key: (_str_prefix(key, size), size) for key, size in (
    ("process.creation.time", len("2000-01-01T00:00:00.000Z")),
    ("otel_exec.exec_id", 32),  # identity.exec_id: 32 hex digits
    ("otel_exec.parent_exec_id", 32),
)}


_CREATED, _CREATED_SIZE = _FIXED_STRINGS["process.creation.time"]
_EXEC_ID, _EXEC_ID_SIZE = _FIXED_STRINGS["otel_exec.exec_id"]
_PARENT_EXEC_ID = _FIXED_STRINGS["otel_exec.parent_exec_id"][0]


def _framed_fixed(key: str, s: str) -> bytes:
    prefix, size = _FIXED_STRINGS[key]
    b = s.encode()
    if len(b) == size:
        return prefix + b
    kv = _kv(key, s)
    return _varint(len(kv)) + kv


def _shared_encoding(ev: ExecEvent, span_env: bool) -> tuple[Attrs, bytes]:
    """The attributes every exec sharing ev.shared has in common, and the
    log body. The environment goes on the log record, and on the span only
    with span_env: it is most of a record's bytes (docs/attributes.md)."""
    kvs = _image_kvs(ev.pathname, ev.dev, ev.inode, ev.ctime, ev.inode_mode, ev.cmdpath, ev.interp,
                     ev.interpreter_pathname, ev.interpreter_dev, ev.interpreter_inode, ev.interpreter_ctime)
    kvs += _context_kvs(ev.uid, ev.gid, ev.euid, ev.egid, ev.pwd, ev.cgroup_path, ev.container_id, ev.hostname,
                        ev.mount_ns, ev.pid_ns, ev.cgroup_id, ev.comm, ev.prev_comm, ev.stdin_type,
                        ev.stdin_path, ev.invoked_from_kernel, ev.argv_truncated, ev.env_truncated, ev.envc,
                        ev.path_truncated)
    argv = ev.argv
    kvs += (_kv("process.command", argv[0] if argv else ""), _kv("process.command_args", argv),
            _kv("process.args_count", ev.argc), *_sampling_kvs(ev))
    if ev.unavailable:  # --no-field: the same for every exec of the run, so cached with the rest
        kvs = _available(ev, kvs)
    env = Attrs.of(_env_kvs(ev.env))
    common = Attrs.of(kvs)
    attrs = Attrs(common.log + env.log, common.span + env.span if span_env else common.span)
    return attrs, _body(ev)


# ExecutableIdentity fields and their attributes: registry keys for the
# build ids (they join with OpenTelemetry profiles), otel_exec.* for the rest.
_EXECUTABLE_KEYS = (("gnu_build_id", "process.executable.build_id.gnu"),
                    ("go_build_id", "process.executable.build_id.go"),
                    ("htlhash", "process.executable.build_id.htlhash"),
                    ("sha256", "otel_exec.executable.sha256"), ("size", "otel_exec.executable.size"),
                    ("status", "otel_exec.executable.identity_status"))
_SCRIPT_KEYS = (("sha256", "otel_exec.script.sha256"),
                ("htlhash", "otel_exec.script.htlhash"), ("size", "otel_exec.script.size"),
                ("status", "otel_exec.script.identity_status"))
_LATE_KEY = "otel_exec.executable.identity_late"
_identities: dict[tuple[ExecutableIdentity, bool], list[bytes]] = {}
# By id(): an exec storm hands the same identity object over and over; the
# object is kept in the value, so its id cannot be reused while cached.
_exec_identities: dict[int, tuple[ExecutableIdentity, Attrs]] = {}


def _identity_kvs(identity: ExecutableIdentity, script: bool) -> list[bytes]:
    """The attributes of one identity (a few distinct ones per binary),
    encoded once each; the status only when it is not complete."""
    key = (identity, script)
    kvs = _identities.get(key)
    if kvs is None:
        kvs = []
        for field, name in _SCRIPT_KEYS if script else _EXECUTABLE_KEYS:
            value = getattr(identity, field)
            if value is not None and not (field == "status" and value == COMPLETE):
                kvs.append(_kv(name, value))
        if len(_identities) >= 4096:
            _identities.clear()
        _identities[key] = kvs
    return kvs


def identity_attrs(ev: ExecEvent) -> Attrs:
    """The exec's executable (and script) identity, when computed."""
    identity, script = ev.executable_identity, ev.script_identity
    if identity is None:
        return Attrs(b"", b"")
    if script is not None:
        return Attrs.of(_identity_kvs(identity, False) + _identity_kvs(script, True))
    hit = _exec_identities.get(id(identity))
    if hit is None or hit[0] is not identity:
        if len(_exec_identities) >= 4096:
            _exec_identities.clear()
        hit = _exec_identities[id(identity)] = (identity, Attrs.of(_identity_kvs(identity, False)))
    return hit[1]


def late_identity_attrs(identity: ExecutableIdentity) -> bytes:
    """Span.attributes of an identity that came after its exec record (whose
    status said pending): the values, and the final status under its own
    key, so that no key appears twice on the span."""
    kvs = [_kv(name, value) for field, name in _EXECUTABLE_KEYS
           if field != "status" and (value := getattr(identity, field)) is not None]
    return Attrs.of([*kvs, _kv(_LATE_KEY, identity.status)]).span


def _sampling_kvs(ev: ExecEvent) -> tuple[bytes, ...]:
    """With --sample-rate: how many execs this record stands for."""
    return () if ev.sample_rate is None else (_kv("otel_exec.sample_rate", ev.sample_rate),)


def _body(ev: ExecEvent) -> bytes:
    """LogRecord.body, the command line; none when argv is unavailable."""
    return b"" if "argv" in ev.unavailable else w.len_field(5, w.any_string(shlex.join(ev.argv)))


class ExecEncoding:
    """An exec's encoded attributes, in two parts that records join
    without copying them first: its own ids, and what it shares with
    every exec of one command from one context (encoded once, on
    ev.shared); and the log body."""

    __slots__ = ("ids", "common", "body")

    def __init__(self, ids: Attrs, common: Attrs, body: bytes) -> None:
        self.ids = ids
        self.common = common
        self.body = body

    def span_attrs(self) -> tuple[bytes, bytes]:
        return self.ids.span, self.common.span


# Event fields a backend may leave unverified (ExecEvent.unavailable) and the
# attributes that carry them: those are left out rather than sent empty.
_FIELD_ATTRIBUTES = {
    "pathname": ("process.executable.path", "process.executable.name", "file.path"),
    "dev": ("otel_exec.file.dev",), "inode": ("file.inode",), "ctime": ("file.changed",),
    "inode_mode": ("file.mode", "otel_exec.file.type"),
    "interpreter_pathname": ("otel_exec.interpreter.path",), "interpreter_dev": ("otel_exec.interpreter.dev",),
    "interpreter_inode": ("otel_exec.interpreter.inode",), "interpreter_ctime": ("otel_exec.interpreter.changed",),
    "stdin_type": ("otel_exec.stdin.type", "process.interactive"), "stdin_path": ("otel_exec.stdin.path",),
    "pwd": ("process.working_directory",), "mount_ns": ("otel_exec.mount_ns",), "pid_ns": ("otel_exec.pid_ns",),
    "cgroup_path": ("process.linux.cgroup",), "container_id": ("container.id",),
    "hostname": ("otel_exec.uts.hostname",), "process_start_time": ("process.creation.time",),
    "exec_id": ("otel_exec.exec_id",), "parent_exec_id": ("otel_exec.parent_exec_id",),
    "euid": ("process.user.id",), "egid": ("process.group.id",), "uid": ("process.real_user.id",),
    "gid": ("process.real_group.id",), "pid": ("process.vpid",), "ppid": ("otel_exec.vppid", "process.parent_pid"),
    "host_ppid": ("process.parent_pid",), "prev_comm": ("otel_exec.prev_comm",), "interp": ("otel_exec.interp",),
    "argv": ("process.command", "process.command_args"), "argc": ("process.args_count",),
    "argv_truncated": ("otel_exec.argv_truncated",), "envc": ("otel_exec.env_count",),
    "env_truncated": ("otel_exec.env_truncated",),
}


def _key_of(kv: bytes) -> str:
    """The key of an encoded KeyValue (keys are shorter than 128 bytes)."""
    return kv[2:2 + kv[1]].decode()


def _available(ev: ExecEvent, kvs: list[bytes]) -> list[bytes]:
    """kvs without the attributes of the fields in ev.unavailable, and
    otel_exec.unavailable naming those fields."""
    skip = {a for f in ev.unavailable for a in _FIELD_ATTRIBUTES.get(f, ())}
    return [_kv("otel_exec.unavailable", list(ev.unavailable)), *(kv for kv in kvs if _key_of(kv) not in skip)]


def _without_unavailable(ev: ExecEvent) -> ExecEncoding:
    """A backend that could not verify some fields (BCC), which vary from
    exec to exec: encoded per exec, ids included."""
    kvs = _available(ev, [
        _kv("process.pid", ev.host_pid), _kv("process.parent_pid", ev.host_ppid), _kv("process.vpid", ev.pid),
        _kv("otel_exec.vppid", ev.ppid), _kv("process.creation.time", iso8601(ev.process_start_time)),
        _kv("otel_exec.exec_id", ev.exec_id), _kv("otel_exec.parent_exec_id", ev.parent_exec_id),
        *_image_kvs(ev.pathname, ev.dev, ev.inode, ev.ctime, ev.inode_mode, ev.cmdpath, ev.interp,
                    ev.interpreter_pathname, ev.interpreter_dev, ev.interpreter_inode, ev.interpreter_ctime),
        *_context_kvs(ev.uid, ev.gid, ev.euid, ev.egid, ev.pwd, ev.cgroup_path, ev.container_id, ev.hostname,
                      ev.mount_ns, ev.pid_ns, ev.cgroup_id, ev.comm, ev.prev_comm, ev.stdin_type, ev.stdin_path,
                      ev.invoked_from_kernel, ev.argv_truncated, ev.env_truncated, ev.envc, ev.path_truncated),
        _kv("process.command", ev.argv[0] if ev.argv else ""), _kv("process.command_args", ev.argv),
        _kv("process.args_count", ev.argc), *_sampling_kvs(ev),
    ])
    env = Attrs.of(_env_kvs(ev.env))
    common = Attrs.of(kvs)
    return ExecEncoding(identity_attrs(ev), Attrs(common.log + env.log, common.span), _body(ev))


def exec_attributes(ev: ExecEvent, span_env: bool = False) -> ExecEncoding:
    """Every field of an exec (docs/attributes.md), encoded."""
    shared = ev.shared
    if ev.unavailable and shared is None:
        return _without_unavailable(ev)
    common = shared.encoded if shared is not None else None
    if common is None:
        common = _shared_encoding(ev, span_env)
        if shared is not None:
            shared.encoded = common
    attrs, body = common  # type: ignore[misc]
    v = _varint
    a, b, c, d = v(ev.host_pid), v(ev.host_ppid), v(ev.pid), v(ev.ppid)
    created, exec_id, parent = iso8601(ev.process_start_time).encode(), ev.exec_id.encode(), \
        ev.parent_exec_id.encode()
    pids = (_PID[len(a)] + a, _PPID[len(b)] + b, _VPID[len(c)] + c, _VPPID[len(d)] + d)
    if len(created) == _CREATED_SIZE and len(exec_id) == len(parent) == _EXEC_ID_SIZE:
        # Every exec the CO-RE backend reports: prefixes encoded once.
        ids = (*pids, _CREATED + created, _EXEC_ID + exec_id, _PARENT_EXEC_ID + parent)
    else:
        ids = (*pids, _framed_fixed("process.creation.time", created.decode()),
               _framed_fixed("otel_exec.exec_id", ev.exec_id),
               _framed_fixed("otel_exec.parent_exec_id", ev.parent_exec_id))
    log, span_ids = _LOG_ATTR + _LOG_ATTR.join(ids), _SPAN_ATTR + _SPAN_ATTR.join(ids)
    if ev.executable_identity is not None:
        identity = identity_attrs(ev)
        log, span_ids = log + identity.log, span_ids + identity.span
    return ExecEncoding(Attrs(log, span_ids), attrs, body)


def seeded_attributes(info: ProcessInfo) -> list[bytes]:
    """What /proc told about a process that was running before the agent."""
    attrs = [
        _kv("process.pid", info.pid),
        _kv("process.parent_pid", info.ppid),
        _kv("process.executable.path", info.exe),
        _kv("process.executable.name", os.path.basename(info.exe)),
        _kv("otel_exec.comm", info.comm),
        _kv("otel_exec.exec_id", info.exec_id),
        _kv("otel_exec.parent_exec_id", info.parent_exec_id),
        _kv("otel_exec.observed_from", "procfs"),
    ]
    if info.argv:
        attrs += (_kv("process.command", info.argv[0]), _kv("process.command_args", info.argv),
                  _kv("process.args_count", len(info.argv)))
    return attrs


_LOG_HEAD = w.tag(1, w.I64)  # time_unix_nano, then the timestamp
_LOG_SEVERITY = w.varint_field(2, SEVERITY_INFO) + w.len_field(3, b"INFO")
_LOG_IDS = w.fixed32_field(8, 1) + w.tag(9, w.LEN) + w.varint(16)  # flags: sampled; trace_id
_LOG_SPAN_ID = w.tag(10, w.LEN) + w.varint(8)
_LOG_OBSERVED = w.tag(11, w.I64)
_LOG_EVENT_NAME = w.len_field(12, EVENT_NAME.encode())
_U64 = struct.Struct("<Q").pack


_IN_SCOPE = w.tag(2, w.LEN)  # ScopeLogs.log_records, ScopeSpans.spans


def _in_scope(parts: tuple[bytes, ...] | list[bytes]) -> bytes:
    """The message made of `parts`, framed as a record of its scope block:
    the form records are queued and batched in (otlp.export_request)."""
    return b"".join((_IN_SCOPE, _varint(sum(map(len, parts))), *parts))


_LOG_TIME = struct.Struct("<BQ")  # time_unix_nano's tag (1, fixed64) and value
_LOG_AFTER_BODY_SIZE = len(_LOG_IDS) + 16 + len(_LOG_SPAN_ID) + 8 + len(_LOG_OBSERVED) + 8 + len(_LOG_EVENT_NAME)
_LOG_FIXED_SIZE = _LOG_TIME.size + len(_LOG_SEVERITY) + _LOG_AFTER_BODY_SIZE


def log_record(ev: ExecEvent, enc: ExecEncoding, info: ProcessInfo, observed_ns: int) -> bytes:
    """An opentelemetry.proto.logs.v1.LogRecord, framed (_in_scope): the
    hot path of every exec, so the length is summed from known sizes (ids
    are 16 and 8 bytes) rather than measured part by part."""
    body, ids, common = enc.body, enc.ids.log, enc.common.log
    return b"".join((_IN_SCOPE, _varint(_LOG_FIXED_SIZE + len(body) + len(ids) + len(common)),
                     _LOG_TIME.pack(_LOG_HEAD[0], ev.timestamp), _LOG_SEVERITY, body, ids, common,
                     _LOG_IDS, info.trace_id, _LOG_SPAN_ID, info.span_id, _LOG_OBSERVED, _U64(observed_ns),
                     _LOG_EVENT_NAME))


def observed_record(info: ProcessInfo, attrs: Attrs, now_ns: int) -> bytes:
    """A LogRecord for a process found in /proc at start-up, framed."""
    parts = [_LOG_HEAD, _U64(now_ns), _LOG_SEVERITY,
             w.len_field(5, w.any_string(shlex.join(info.argv or [info.comm]))), attrs.log]
    if info.owns_span:
        parts += (_LOG_IDS, info.trace_id, _LOG_SPAN_ID, info.span_id)
    parts += (_LOG_OBSERVED, _U64(now_ns), w.len_field(12, OBSERVED_EVENT_NAME.encode()))
    return _in_scope(parts)


def gap_record(start_ns: int, end_ns: int, seconds: float, clock_step_s: float = 0.0) -> bytes:
    """A LogRecord saying no agent watched from start_ns to end_ns (seconds
    long, measured on a clock no step changes): execs in between are
    missing, processes still running then appear as observed. A wall-clock
    step in between is an attribute of its own."""
    attrs = Attrs.of([_kv("otel_exec.gap.start", iso8601(start_ns)), _kv("otel_exec.gap.end", iso8601(end_ns)),
                      _kv("otel_exec.gap.seconds", seconds),
                      *([_kv("otel_exec.gap.clock_step_seconds", clock_step_s)] if clock_step_s else [])])
    body = f"otel-exec was not watching from {iso8601(start_ns)} to {iso8601(end_ns)}"
    return _in_scope((_LOG_HEAD, _U64(end_ns), w.varint_field(2, SEVERITY_WARN), w.len_field(3, b"WARN"),
                      w.len_field(5, w.any_string(body)), attrs.log, _LOG_OBSERVED, _U64(end_ns),
                      w.len_field(12, GAP_EVENT_NAME.encode())))


_SPAN_TRACE_ID = w.tag(1, w.LEN) + w.varint(16)
_SPAN_ID = w.tag(2, w.LEN) + w.varint(8)
_SPAN_PARENT = w.tag(4, w.LEN) + w.varint(8)
_SPAN_KIND_START = w.varint_field(6, SPAN_KIND_INTERNAL) + w.tag(7, w.I64)
_SPAN_END = w.tag(8, w.I64)
_names: dict[str, bytes] = {}
_endings: dict[tuple[str, bool, int | None, int | None], bytes] = {}


def _ending(reason: str, incomplete: bool, exit_code: int | None, signo: int | None) -> bytes:
    """Span.attributes of how an image ended, and its status: a handful of
    distinct values, encoded once each."""
    key = (reason, incomplete, exit_code, signo)
    hit = _endings.get(key)
    if hit is None:
        kvs = [_kv("otel_exec.span.ended_by", reason)]
        if incomplete:
            kvs.append(_kv("otel_exec.span.incomplete", True))
        error_type = None
        if signo is not None:
            kvs.append(_kv("otel_exec.exit.signal", signo))
            error_type = _signal_name(signo)
        elif exit_code is not None:
            kvs.append(_kv("process.exit.code", exit_code))
            error_type = str(exit_code) if exit_code else None
        status = b""
        if error_type is not None:
            kvs.append(_kv("error.type", error_type))
            status = w.len_field(15, w.len_field(2, f"exited with {error_type}".encode())
                                 + w.varint_field(3, STATUS_ERROR))
        hit = Attrs.of(kvs).span + status
        if len(_endings) < 4096:
            _endings[key] = hit
    return hit


def span(info: ProcessInfo, end_ns: int, reason: str, incomplete: bool = False) -> bytes:
    """An opentelemetry.proto.trace.v1.Span for a process image, framed
    (_in_scope), named after its executable; its attributes were kept
    since it started."""
    key = info.exe or f"\0{info.comm}"  # no executable (kernel thread): named by comm
    name = _names.get(key)
    if name is None:
        name = w.len_field(5, (os.path.basename(info.exe) or info.comm).encode("utf-8", "replace"))
        if len(_names) >= 4096:
            _names.clear()
        _names[key] = name
    parts = [_SPAN_TRACE_ID, info.trace_id, _SPAN_ID, info.span_id]
    if info.trace_state:
        parts.append(w.len_field(3, info.trace_state.encode()))
    if info.parent_span_id:
        parts += (_SPAN_PARENT, info.parent_span_id)
    parts += (name, _SPAN_KIND_START, _U64(info.span_start), _SPAN_END, _U64(max(end_ns, info.span_start)),
              *info.span_attrs, _ending(reason, incomplete, info.exit_code, info.signal))
    if info.untrusted_traceparent:
        parts.append(Attrs.of([_kv("otel_exec.traceparent.untrusted", info.untrusted_traceparent)]).span)
    late = info.late_identity
    if late is not None and late.result is not None:
        parts.append(late_identity_attrs(late.result))
    return _in_scope(parts)


def _signal_name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"
