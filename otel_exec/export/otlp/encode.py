"""Events -> OTLP log records, spans and the export requests that carry
them, encoded (docs/attributes.md).

Attribute keys come from otel_exec.export.otlp.attributes. An exec's
attributes are encoded once; its log record carries all of them, its span
its ids and what names the process in a trace view (SPAN_SLIM), or with
--span-attributes full the same set as the log record (SPAN_FULL,
SPAN_FULL_ENV). What every exec of one command from one context shares is
encoded once per shared part of the kernel record (ExecEvent.shared) and
kept here.
"""
from __future__ import annotations

import os
import shlex
import signal
import stat
import struct
import time
from typing import Callable

from otel_exec import __version__
from otel_exec.model.blocks import BoundedCache
from otel_exec.export.otlp import attributes as keys
from otel_exec.export.otlp import protowire as w
from otel_exec.export.otlp import shape
from otel_exec.export.otlp.shape import RecordLimits
from otel_exec.lineage.spans import ProcessSpan
from otel_exec.model.events import ExecEvent
from otel_exec.model.executable import COMPLETE, ExecutableIdentity
from otel_exec.model.process import ProcessInfo
from otel_exec.native import native_module

IMPLEMENTATION = "python"  # or "native": _encode_native does the per-exec encoding (end of this module)

EVENT_NAME = "otel_exec.process.exec"
OBSERVED_EVENT_NAME = "otel_exec.process.observed"  # running when the agent started
GAP_EVENT_NAME = "otel_exec.agent.gap"  # an interval no agent watched
EXIT_EVENT_NAME = "otel_exec.process.exit"  # an image ended: how, and its span
SEVERITY_WARN = 13
SEVERITY_INFO = 9
SPAN_KIND_INTERNAL = 1
STATUS_ERROR = 2

# Which exec attributes a span carries: each fact is sent once, on the log
# record, unless the user asks for them on spans too (span_set()).
SPAN_SLIM = 0  # its ids and what names the process in a trace view (docs/attributes.md#spans)
SPAN_FULL = 1  # every exec attribute but the environment (--span-attributes full)
SPAN_FULL_ENV = 2  # every exec attribute (--span-env)


def span_set(span_attributes: str, span_env: bool) -> int:
    """The span's set from --span-attributes (config.SPAN_ATTRIBUTE_SETS)
    and --span-env (which puts the environment on spans too, so it implies
    the full set)."""
    return SPAN_FULL_ENV if span_env else SPAN_FULL if span_attributes == "full" else SPAN_SLIM

# stdin_type as a word: the S_IFMT names of stat(2)
_FILE_TYPES = {stat.S_IFREG: "reg", stat.S_IFDIR: "dir", stat.S_IFCHR: "chr", stat.S_IFBLK: "blk",
               stat.S_IFIFO: "fifo", stat.S_IFSOCK: "sock", stat.S_IFLNK: "lnk"}

# TASK_COMM_LEN - 1: the kernel's comm is the first 15 bytes of the exec'd
# file's base name; compared in characters, so a name cut inside a multi-byte
# character is sent rather than left out.
_COMM_CHARS = 15

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


# An attribute encoder: _kv, or one that leaves out what is unavailable (_keeping),
# or one that collects (key, value) pairs to shape (_collecting).
KeyValueEncoder = Callable[[str, w.Value], bytes]


# An exec always runs a regular file: otel_exec.file.type is left out at this
# value unless --record-attributes full.
_EXEC_FILE_TYPE = "reg"


def _image_kvs(pathname: str, dev: int, inode: int, ctime: int, mode: int, cmdpath: str, interp: str,
               ld_path: str, ld_dev: int, ld_inode: int, ld_ctime: int, kv: KeyValueEncoder,
               derived: bool) -> list[bytes]:
    """derived (--record-attributes full): also the attributes that others
    of the record say exactly (docs/attributes.md)."""
    file_type = _FILE_TYPES.get(stat.S_IFMT(mode), "unknown")
    kvs = [
        kv(keys.EXECUTABLE_PATH, pathname),
        kv(keys.EXECUTABLE_NAME, os.path.basename(pathname)),
        kv(keys.FILE_INODE, str(inode)),
        kv(keys.FILE_MODE, f"{stat.S_IMODE(mode):04o}"),
        kv(keys.FILE_CHANGED, iso8601(ctime)),
        kv(keys.FILE_DEV, dev),
        kv(keys.CMDPATH, cmdpath),
    ]
    if derived or file_type != _EXEC_FILE_TYPE:
        kvs.append(kv(keys.FILE_TYPE, file_type))
    if interp != cmdpath:  # a `#!` script or binfmt_misc: the same path otherwise, sent once
        kvs.append(kv(keys.INTERP, interp))
    if ld_path or ld_inode:  # the identity alone when --no-field paths
        kvs.append(kv(keys.INTERPRETER_PATH, ld_path))
        if derived or ld_dev != dev:  # the loader on the executable's file system: otel_exec.file.dev
            kvs.append(kv(keys.INTERPRETER_DEV, ld_dev))
        kvs += (kv(keys.INTERPRETER_INODE, str(ld_inode)), kv(keys.INTERPRETER_CHANGED, iso8601(ld_ctime)))
    return kvs


def _context_kvs(uid: int, gid: int, euid: int, egid: int, pwd: str, cgroup_path: str, container: str | None,
                 hostname: str, mount_ns: int, pid_ns: int, cgroup_id: int, comm: str, prev_comm: str,
                 stdin_type: int, stdin_path: str, from_kernel: bool, argv_cut: bool, env_cut: bool,
                 envc: int, cut_paths: list[str], cmdpath: str, kv: KeyValueEncoder,
                 derived: bool) -> list[bytes]:
    """derived: as _image_kvs'. The comm is the kernel's base name of the
    path execve was given, cut to 15 bytes: left out when it is exactly
    that of otel_exec.cmdpath."""
    interactive = stdin_type == stat.S_IFCHR and stdin_path.startswith(("/dev/pts/", "/dev/tty"))
    kvs = [
        kv(keys.USER_ID, euid),
        kv(keys.REAL_USER_ID, uid),
        kv(keys.GROUP_ID, egid),
        kv(keys.REAL_GROUP_ID, gid),
        kv(keys.WORKING_DIRECTORY, pwd),
        kv(keys.CGROUP, f"0::{cgroup_path}"),
    ]
    if derived or interactive:  # false follows from otel_exec.stdin.type and otel_exec.stdin.path
        kvs.append(kv(keys.INTERACTIVE, interactive))
    if derived or comm != os.path.basename(cmdpath)[:_COMM_CHARS]:
        kvs.append(kv(keys.COMM, comm))
    kvs += [
        kv(keys.STDIN_TYPE, _FILE_TYPES.get(stdin_type, "none" if not stdin_type else "unknown")),
        kv(keys.MOUNT_NS, mount_ns),
        kv(keys.PID_NS, pid_ns),
        kv(keys.CGROUP_ID, cgroup_id),
        kv(keys.HOSTNAME, hostname),
        kv(keys.ENV_COUNT, envc),
    ]
    # Flags only when set, names only when known: an absent one says as
    # much as false or "" would, in no bytes.
    for key, value in ((keys.PREV_COMM, prev_comm), (keys.STDIN_PATH, stdin_path),
                       (keys.INVOKED_FROM_KERNEL, from_kernel), (keys.ARGV_TRUNCATED, argv_cut),
                       (keys.ENV_TRUNCATED, env_cut), (keys.CONTAINER_ID, container),
                       (keys.PATH_TRUNCATED, cut_paths)):
        if value:
            kvs.append(kv(key, value))
    return kvs


def _command_kvs(ev: ExecEvent, kv: KeyValueEncoder, derived: bool) -> tuple[bytes, ...]:
    """The command line, and with --sample-rate how many execs this record
    stands for. process.command is argv[0], the first of
    process.command_args: sent on its own only when argv is empty or
    derived (as _image_kvs')."""
    argv = ev.argv
    kvs = (kv(keys.COMMAND_ARGS, argv), kv(keys.ARGS_COUNT, ev.argc))
    if derived or not argv:
        kvs = (kv(keys.COMMAND, argv[0] if argv else ""), *kvs)
    return kvs if ev.sample_rate is None else (*kvs, kv(keys.SAMPLE_RATE, ev.sample_rate))


def _keeping(unavailable: tuple[str, ...]) -> KeyValueEncoder:
    """_kv for a record without the attributes of these unavailable fields:
    those come out empty, to be left out (_available)."""
    gone = keys.left_out(unavailable)

    def kv(key: str, value: w.Value) -> bytes:
        return b"" if key in gone else _kv(key, value)
    return kv


def _available(unavailable: tuple[str, ...], kvs: list[bytes]) -> list[bytes]:
    """otel_exec.unavailable naming the unavailable fields, then the
    attributes _keeping() kept."""
    return [_kv(keys.UNAVAILABLE, list(unavailable)), *filter(None, kvs)]


def _collecting(pairs: list[shape.Pair], gone: frozenset[str]) -> KeyValueEncoder:
    """An attribute encoder that collects (key, value) into pairs, to be
    shaped (shape.py) before they are encoded; the keys of unavailable
    fields (gone) are left out."""
    def kv(key: str, value: w.Value) -> bytes:
        if key not in gone:
            pairs.append((key, value))
        return b""
    return kv


def _env_pairs(env: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """One (key, value) per key (OTLP forbids duplicates): the first value
    of a key set twice wins, as getenv(3) finds it; and the entries
    without "=" apart."""
    pairs = []
    seen = set()
    bare = []
    for entry in env:
        key, sep, value = entry.partition("=")
        if not sep:
            bare.append(entry)
        elif key not in seen:
            seen.add(key)
            pairs.append((key, value))
    return pairs, bare


def _env_kvs(env: list[tuple[str, str]], bare: list[str], per_key: int) -> list[bytes]:
    """The environment of a record that fits as it is (shape.fits), as
    shape.shape_record would send it: the first per_key variables as
    attributes of their own, the others as KEY=VALUE in one array, the
    entries without "=" in another."""
    kvs = [_kv(keys.ENV_PREFIX + k, v) for k, v in env[:per_key]]
    if len(env) > per_key:
        kvs.append(_kv(keys.ENV_REST, [f"{k}={v}" for k, v in env[per_key:]]))
    if bare:
        kvs.append(_kv(keys.ENV_WITHOUT_VALUE, bare))
    return kvs


_LOG_DROPPED = 7  # LogRecord.dropped_attributes_count
_SPAN_DROPPED = 10  # Span.dropped_attributes_count
_DEFAULT_LIMITS = RecordLimits()


# The attributes of an exec but its environment's, built with an attribute
# encoder (_kv, _keeping or _collecting): a list of what it returned.
AttributeBuilder = Callable[[KeyValueEncoder], list[bytes]]


def _repeats_derived(limits: RecordLimits, unavailable: tuple[str, ...]) -> bool:
    """Whether a record also sends the attributes that others of it say
    exactly (docs/attributes.md#exec-attributes): with --record-attributes
    full, and with unavailable fields (an attribute is left out as derived
    only when what it derives from is sent). A compact record does not."""
    return limits.repeat_derived or bool(unavailable)


def _shaped(ev: ExecEvent, attributes: AttributeBuilder, span_set: int, limits: RecordLimits,
            ids_count: int, derived: bool) -> tuple[Attrs, bytes]:
    """An exec's attributes shaped to the limits (shape.py) and encoded,
    with the log body. All go on the log record; on the span as span_set
    says: none of them (SPAN_SLIM: the caller adds its own), all but the
    environment, which is most of a record's bytes, or all
    (docs/attributes.md). Most records fit as they are, which a bound on
    their encoded size tells without sizing each value; the others are
    built again as (key, value) pairs and shaped. derived: the record's
    _repeats_derived()."""
    unavailable = ev.unavailable
    argv = None if "argv" in unavailable else ev.argv
    env, bare = _env_pairs(ev.env)
    # A compact record leaves out process.args_count when it is the length
    # of process.command_args: every argument read, and the record not cut.
    count_derived = not derived and argv is not None and ev.argc == len(argv) and not ev.argv_truncated
    if limits.log_value_length is None and limits.span_value_length is None:
        kvs = attributes(_keeping(unavailable)) if unavailable else attributes(_kv)
        common = _available(unavailable, kvs) if unavailable else kvs
        if count_derived:  # a record that fits is not cut
            common.remove(_kv(keys.ARGS_COUNT, ev.argc))
        # And otel_exec.env_count when it is the number of the environment's
        # entries the record carries (each key once, those without "=" too):
        # every entry read, none redacted away, none set twice. Only in a
        # record sent as it is, of which no shaping or limit took a variable.
        if not derived and not ev.env_truncated and ev.envc == len(env) + len(bare):
            common.remove(_kv(keys.ENV_COUNT, ev.envc))
        env_kvs = _env_kvs(env, bare, limits.env_attributes)
        line = None if argv is None else shlex.join(argv)
        if shape.fits(limits, len(common) + ids_count, len(env_kvs),
                      sum(map(len, common)) + sum(map(len, env_kvs)), argv, line):
            kvs = common + env_kvs
            on_span = len(kvs) if span_set == SPAN_FULL_ENV else len(common) if span_set == SPAN_FULL else 0
            return _limited(kvs, on_span, line, limits, ids_count)
    pairs: list[shape.Pair] = [(keys.UNAVAILABLE, list(unavailable))] if unavailable else []
    attributes(_collecting(pairs, keys.left_out(unavailable)))
    log = shape.shape_record(pairs, argv, env, bare, limits, limits.log_value_length, ids_count)
    if count_derived and log.common[0][0] != keys.RECORD_CUT:
        log.common.remove((keys.ARGS_COUNT, ev.argc))
    log_kvs = [_kv(k, v) for k, v in (*log.common, *log.env)]
    span_kvs: list[bytes] | int
    if span_set == SPAN_SLIM:
        span_kvs = 0
    elif limits.span_value_length == limits.log_value_length:
        span_kvs = len(log_kvs) if span_set == SPAN_FULL_ENV else len(log.common)
    else:
        on_span = shape.shape_record(pairs, argv, env, bare, limits, limits.span_value_length, ids_count)
        span_kvs = [_kv(k, v) for k, v in (*on_span.common, *(on_span.env if span_set == SPAN_FULL_ENV else ()))]
    return _limited(log_kvs, span_kvs, log.body, limits, ids_count)


def _limited(log_kvs: list[bytes], span_kvs: list[bytes] | int, body: str | None, limits: RecordLimits,
             ids_count: int) -> tuple[Attrs, bytes]:
    """The attributes framed for the log record and the span (span_kvs:
    its own, or how many of log_kvs it has, framed once for both), each
    within its count limit (OTEL_*_ATTRIBUTE_COUNT_LIMIT, after the
    ids_count ids encoded per exec and, on a span, room for how it ends):
    those past it are dropped and counted in the record's
    dropped_attributes_count."""
    framed = [_varint(len(kv)) + kv for kv in log_kvs]
    span_framed = framed[:span_kvs] if isinstance(span_kvs, int) else [_varint(len(kv)) + kv for kv in span_kvs]
    # A limit below what is encoded outside the shaping keeps none of these
    # (a negative slice would keep all but the last).
    log_keep = max(limits.log_count - ids_count, 0)
    span_keep = max(limits.span_count - ids_count - shape.SPAN_END_ATTRIBUTES, 0)
    log_attrs = _LOG_ATTR.join([b"", *framed[:log_keep]])  # each behind its tag; none: b""
    span_attrs = _SPAN_ATTR.join([b"", *span_framed[:span_keep]])
    if len(framed) > log_keep:
        log_attrs += w.varint_field(_LOG_DROPPED, len(framed) - log_keep)
    if len(span_framed) > span_keep:
        span_attrs += w.varint_field(_SPAN_DROPPED, len(span_framed) - span_keep)
    return Attrs(log_attrs, span_attrs), b"" if body is None else w.len_field(5, w.any_string(body))


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


_PID, _PPID, _VPID, _VPPID = (_int_prefixes(k) for k in (keys.PID, keys.PARENT_PID, keys.VPID, keys.VPPID))
_FIXED_STRINGS = {key: (_str_prefix(key, size), size) for key, size in (
    (keys.CREATION_TIME, len("2000-01-01T00:00:00.000Z")),
    (keys.EXEC_ID, 32),  # identity.exec_id: 32 hex digits
    (keys.PARENT_EXEC_ID, 32),
)}


_CREATED, _CREATED_SIZE = _FIXED_STRINGS[keys.CREATION_TIME]
_EXEC_ID, _EXEC_ID_SIZE = _FIXED_STRINGS[keys.EXEC_ID]
_PARENT_EXEC_ID = _FIXED_STRINGS[keys.PARENT_EXEC_ID][0]


def _framed_fixed(key: str, s: str) -> bytes:
    prefix, size = _FIXED_STRINGS[key]
    b = s.encode()
    if len(b) == size:
        return prefix + b
    kv = _kv(key, s)
    return _varint(len(kv)) + kv


def _slim_span_attrs(ev: ExecEvent, limits: RecordLimits, ids: tuple[shape.Pair, ...] = ()) -> bytes:
    """Span.attributes of a slim span (SPAN_SLIM) but the ids encoded per
    exec: the executable's path, the user and the container, which name
    the process in a trace view; the rest is on the log record the span's
    ids link to. ids: the pid and exec id, for a record encoded whole per
    exec (_without_unavailable)."""
    pairs = [*ids, (keys.EXECUTABLE_PATH, ev.pathname), (keys.USER_ID, ev.euid)]
    if ev.container_id:
        pairs.append((keys.CONTAINER_ID, ev.container_id))
    if ev.unavailable:
        gone = keys.left_out(ev.unavailable)
        pairs = [pair for pair in pairs if pair[0] not in gone]
    if limits.span_value_length is not None or len(ev.pathname) > shape.VALUE_MAX_BYTES // 4:
        pairs = shape.shape_record(pairs, None, [], [], limits, limits.span_value_length, 0).common
    return Attrs.of([_kv(k, v) for k, v in pairs]).span


def _shared_encoding(ev: ExecEvent, span_set: int, limits: RecordLimits) -> tuple[Attrs, bytes]:
    """The attributes every exec sharing ev.shared has in common, shaped
    (_shaped), and the log body. With --no-field the unavailable fields
    are the same for every exec of the run, so they are left out here,
    once per shared part."""
    derived = _repeats_derived(limits, ev.unavailable)

    def attributes(kv: KeyValueEncoder) -> list[bytes]:
        kvs = _image_kvs(ev.pathname, ev.dev, ev.inode, ev.ctime, ev.inode_mode, ev.cmdpath, ev.interp,
                         ev.interpreter_pathname, ev.interpreter_dev, ev.interpreter_inode, ev.interpreter_ctime, kv,
                         derived)
        kvs += _context_kvs(ev.uid, ev.gid, ev.euid, ev.egid, ev.pwd, ev.cgroup_path, ev.container_id, ev.hostname,
                            ev.mount_ns, ev.pid_ns, ev.cgroup_id, ev.comm, ev.prev_comm, ev.stdin_type,
                            ev.stdin_path, ev.invoked_from_kernel, ev.argv_truncated, ev.env_truncated, ev.envc,
                            ev.path_truncated, ev.cmdpath, kv, derived)
        kvs += _command_kvs(ev, kv, derived)
        return kvs
    identity = shape.identity_count(ev.executable_identity is not None, ev.script_identity is not None)
    attrs, body = _shaped(ev, attributes, span_set, limits, shape.IDS_COUNT + identity, derived)
    if span_set == SPAN_SLIM:
        attrs = Attrs(attrs.log, _slim_span_attrs(ev, limits))
    return attrs, body


# ExecutableIdentity fields and their attributes: registry keys for the
# build ids (they join with OpenTelemetry profiles), otel_exec.* for the rest.
_EXECUTABLE_KEYS = (("gnu_build_id", keys.BUILD_ID_GNU), ("go_build_id", keys.BUILD_ID_GO),
                    ("htlhash", keys.BUILD_ID_HTLHASH), ("sha256", keys.EXECUTABLE_SHA256),
                    ("size", keys.EXECUTABLE_SIZE), ("status", keys.EXECUTABLE_IDENTITY_STATUS))
_SCRIPT_KEYS = (("sha256", keys.SCRIPT_SHA256), ("htlhash", keys.SCRIPT_HTLHASH), ("size", keys.SCRIPT_SIZE),
                ("status", keys.SCRIPT_IDENTITY_STATUS))
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
    if identity is None or "executable_identity" in ev.unavailable:
        return Attrs(b"", b"")
    if script is not None and "script_identity" not in ev.unavailable:
        return Attrs.of(_identity_kvs(identity, False) + _identity_kvs(script, True))
    hit = _exec_identities.get(id(identity))
    if hit is None or hit[0] is not identity:
        if len(_exec_identities) >= 4096:
            _exec_identities.clear()
        hit = _exec_identities[id(identity)] = (identity, Attrs.of(_identity_kvs(identity, False)))
    return hit[1]


def late_identity_attrs(identity: ExecutableIdentity) -> Attrs:
    """The attributes of an identity that came after its exec record (whose
    status said pending), for its span and its exit record: the values, and
    the final status under its own key, so that no key appears twice on the
    span."""
    kvs = [_kv(name, value) for field, name in _EXECUTABLE_KEYS
           if field != "status" and (value := getattr(identity, field)) is not None]
    return Attrs.of([*kvs, _kv(keys.EXECUTABLE_IDENTITY_LATE, identity.status)])


class ExecEncoding:
    """An exec's encoded attributes, in two parts that records join
    without copying them first: its own ids, and what it shares with
    every exec of one command from one context (encoded once per
    ev.shared); and the log body."""

    __slots__ = ("ids", "common", "body")

    def __init__(self, ids: Attrs, common: Attrs, body: bytes) -> None:
        self.ids = ids
        self.common = common
        self.body = body

    def span_attrs(self) -> tuple[bytes, bytes]:
        return self.ids.span, self.common.span


def _without_unavailable(ev: ExecEvent, span_set: int, limits: RecordLimits) -> ExecEncoding:
    """A backend that could not verify some fields (BCC), which vary from
    exec to exec: encoded per exec, ids included."""
    in_own_pid_ns = ev.pid != ev.host_pid or ev.ppid != ev.host_ppid
    derived = _repeats_derived(limits, ev.unavailable)  # the full set: some fields are unavailable

    def attributes(kv: KeyValueEncoder) -> list[bytes]:
        return [
            kv(keys.PID, ev.host_pid), kv(keys.PARENT_PID, ev.host_ppid),
            *((kv(keys.VPID, ev.pid), kv(keys.VPPID, ev.ppid)) if in_own_pid_ns else ()),
            kv(keys.CREATION_TIME, iso8601(ev.process_start_time)),
            kv(keys.EXEC_ID, ev.exec_id), kv(keys.PARENT_EXEC_ID, ev.parent_exec_id),
            *_image_kvs(ev.pathname, ev.dev, ev.inode, ev.ctime, ev.inode_mode, ev.cmdpath, ev.interp,
                        ev.interpreter_pathname, ev.interpreter_dev, ev.interpreter_inode, ev.interpreter_ctime, kv,
                        derived),
            *_context_kvs(ev.uid, ev.gid, ev.euid, ev.egid, ev.pwd, ev.cgroup_path, ev.container_id, ev.hostname,
                          ev.mount_ns, ev.pid_ns, ev.cgroup_id, ev.comm, ev.prev_comm, ev.stdin_type, ev.stdin_path,
                          ev.invoked_from_kernel, ev.argv_truncated, ev.env_truncated, ev.envc, ev.path_truncated,
                          ev.cmdpath, kv, derived),
            *_command_kvs(ev, kv, derived),
        ]
    identity = shape.identity_count(ev.executable_identity is not None, ev.script_identity is not None)
    attrs, body = _shaped(ev, attributes, span_set, limits, identity, derived)
    ids = identity_attrs(ev)
    if span_set == SPAN_SLIM:
        attrs = Attrs(attrs.log, _slim_span_attrs(ev, limits, ((keys.PID, ev.host_pid), (keys.EXEC_ID, ev.exec_id))))
        ids = Attrs(ids.log, b"")
    return ExecEncoding(ids, attrs, body)


# ExecEvent.shared -> _shared_encoding() of it. Keyed by the object, which
# the entry keeps alive, so that an id is never reused while cached; bounded
# as the decoder bounds its own memo of shared parts (argv and env reach
# 128 KiB each). One OtlpSink per process: its span set is the only one.
_shared_encodings = BoundedCache()
_encoding_of_shared = _shared_encodings.get  # bound once: the per-exec lookup is one C call


def exec_attributes(ev: ExecEvent, span_set: int = SPAN_SLIM,
                    limits: RecordLimits = _DEFAULT_LIMITS) -> ExecEncoding:
    """Every field of an exec (docs/attributes.md), encoded within the
    limits (shape.py), for its log record and, as span_set says, its span
    (one set and one limits per process)."""
    shared = ev.shared
    if shared is None:
        if ev.unavailable:
            return _without_unavailable(ev, span_set, limits)
        attrs, body = _shared_encoding(ev, span_set, limits)
    else:
        common = _encoding_of_shared(shared)
        if common is None:
            common = _shared_encoding(ev, span_set, limits)
            if shared.repeats:  # a one-off exec's encoding is not asked for again
                _shared_encodings.keep(shared, common, len(common[0].log) + len(common[0].span) + len(common[1]))
        attrs, body = common
    native = _native_exec_ids(ev, span_set == SPAN_SLIM) if _native_exec_ids is not None else None
    if native is not None:
        log, span_ids = native
        if ev.executable_identity is not None:
            identity = identity_attrs(ev)
            log += identity.log
            if span_set != SPAN_SLIM:
                span_ids += identity.span
        return ExecEncoding(Attrs(log, span_ids), attrs, body)
    v = _varint
    a, b, c, d = v(ev.host_pid), v(ev.host_ppid), v(ev.pid), v(ev.ppid)
    created, exec_id, parent = iso8601(ev.process_start_time).encode(), ev.exec_id.encode(), \
        ev.parent_exec_id.encode()
    pid = _PID[len(a)] + a
    # The pids seen from the exec's own pid namespace only when that is not
    # the host's (they differ).
    pids = (pid, _PPID[len(b)] + b) if a == c and b == d else \
        (pid, _PPID[len(b)] + b, _VPID[len(c)] + c, _VPPID[len(d)] + d)
    if len(created) == _CREATED_SIZE and len(exec_id) == len(parent) == _EXEC_ID_SIZE:
        # Every exec the CO-RE backend reports: prefixes encoded once.
        exec_kv = _EXEC_ID + exec_id
        ids = (*pids, _CREATED + created, exec_kv, _PARENT_EXEC_ID + parent)
    else:
        exec_kv = _framed_fixed(keys.EXEC_ID, ev.exec_id)
        ids = (*pids, _framed_fixed(keys.CREATION_TIME, created.decode()), exec_kv,
               _framed_fixed(keys.PARENT_EXEC_ID, ev.parent_exec_id))
    log = _LOG_ATTR + _LOG_ATTR.join(ids)
    if span_set == SPAN_SLIM:
        span_ids = _SPAN_ATTR + pid + _SPAN_ATTR + exec_kv
        if ev.executable_identity is not None:
            log += identity_attrs(ev).log
    else:
        span_ids = _SPAN_ATTR + _SPAN_ATTR.join(ids)
        if ev.executable_identity is not None:
            identity = identity_attrs(ev)
            log, span_ids = log + identity.log, span_ids + identity.span
    return ExecEncoding(Attrs(log, span_ids), attrs, body)


def seeded_attributes(ev: ExecEvent, limits: RecordLimits = _DEFAULT_LIMITS) -> list[bytes]:
    """What /proc told about a process that was running before the agent
    (an observed exec event), shaped as an exec's (its argv is not bounded
    by the kernel's copy)."""
    pairs: list[shape.Pair] = [
        (keys.PID, ev.host_pid),
        (keys.PARENT_PID, ev.host_ppid),
        (keys.EXECUTABLE_PATH, ev.pathname),
        (keys.EXECUTABLE_NAME, os.path.basename(ev.pathname)),
        (keys.COMM, ev.comm),
        (keys.EXEC_ID, ev.exec_id),
        (keys.PARENT_EXEC_ID, ev.parent_exec_id),
        (keys.OBSERVED_FROM, "procfs"),
    ]
    if ev.argv:
        pairs += ((keys.COMMAND, ev.argv[0]), (keys.ARGS_COUNT, len(ev.argv)))
    shaped = shape.shape_record(pairs, ev.argv or None, [], [], limits, limits.log_value_length, 0)
    return [_kv(k, v) for k, v in shaped.common]


_LOG_HEAD = w.tag(1, w.I64)  # time_unix_nano, then the timestamp
_LOG_SEVERITY = w.varint_field(2, SEVERITY_INFO) + w.len_field(3, b"INFO")
# flags (the span's W3C trace flags: ProcessSpan.trace_flags), then trace_id's head; by flags value.
_LOG_IDS = tuple(w.fixed32_field(8, flags) + w.tag(9, w.LEN) + w.varint(16) for flags in range(256))
_LOG_SPAN_ID = w.tag(10, w.LEN) + w.varint(8)
_LOG_OBSERVED = w.tag(11, w.I64)
_LOG_EVENT_NAME = w.len_field(12, EVENT_NAME.encode())
_U64 = struct.Struct("<Q").pack


_IN_SCOPE = w.tag(2, w.LEN)  # ScopeLogs.log_records, ScopeSpans.spans


def _in_scope(parts: tuple[bytes, ...] | list[bytes]) -> bytes:
    """The message made of `parts`, framed as a record of its scope block:
    the form records are queued and batched in (export_request)."""
    return b"".join((_IN_SCOPE, _varint(sum(map(len, parts))), *parts))


_LOG_TIME = struct.Struct("<BQ")  # a one-byte fixed64 tag and the value: time_unix_nano, observed_time_unix_nano
_tagged_u64, _LOG_TIME_TAG, _LOG_OBSERVED_TAG = _LOG_TIME.pack, _LOG_HEAD[0], _LOG_OBSERVED[0]
_LOG_AFTER_BODY_SIZE = len(_LOG_IDS[0]) + 16 + len(_LOG_SPAN_ID) + 8 + len(_LOG_OBSERVED) + 8 + len(_LOG_EVENT_NAME)
_LOG_FIXED_SIZE = _LOG_TIME.size + len(_LOG_SEVERITY) + _LOG_AFTER_BODY_SIZE


def log_record(ev: ExecEvent, enc: ExecEncoding, span: ProcessSpan, observed_ns: int) -> bytes:
    """An opentelemetry.proto.logs.v1.LogRecord, framed (_in_scope): the
    hot path of every exec, so the length is summed from known sizes (ids
    are 16 and 8 bytes) rather than measured part by part."""
    body, ids, common = enc.body, enc.ids.log, enc.common.log
    return b"".join((_IN_SCOPE, _varint(_LOG_FIXED_SIZE + len(body) + len(ids) + len(common)),
                     _tagged_u64(_LOG_TIME_TAG, ev.timestamp), _LOG_SEVERITY, body, ids, common,
                     _LOG_IDS[span.trace_flags], span.trace_id, _LOG_SPAN_ID, span.span_id,
                     _tagged_u64(_LOG_OBSERVED_TAG, observed_ns), _LOG_EVENT_NAME))


def _py_exec_record(ev: ExecEvent, span: ProcessSpan, span_set: int, limits: RecordLimits,
                    observed_ns: int) -> bytes:
    """exec_attributes and log_record in one call: the exec's framed log
    record; span.attributes gets the exec's attributes for its span."""
    enc = exec_attributes(ev, span_set, limits)
    span.attributes = enc.span_attrs()
    return log_record(ev, enc, span, observed_ns)


def observed_record(ev: ExecEvent, span: ProcessSpan | None, attrs: Attrs, now_ns: int,
                    body_max_bytes: int = _DEFAULT_LIMITS.body_max_bytes) -> bytes:
    """A LogRecord for a process found in /proc at start-up (an observed
    exec event), framed; with the ids of its span if it has one."""
    body = shape.utf8_cut(shlex.join(ev.argv or [ev.comm]), body_max_bytes)
    parts = [_LOG_HEAD, _U64(now_ns), _LOG_SEVERITY, w.len_field(5, w.any_string(body)), attrs.log]
    if span is not None:
        parts += (_LOG_IDS[span.trace_flags], span.trace_id, _LOG_SPAN_ID, span.span_id)
    parts += (_LOG_OBSERVED, _U64(now_ns), w.len_field(12, OBSERVED_EVENT_NAME.encode()))
    return _in_scope(parts)


def gap_record(start_ns: int, end_ns: int, seconds: float, clock_step_s: float = 0.0) -> bytes:
    """A LogRecord saying no agent watched from start_ns to end_ns (seconds
    long, measured on a clock no step changes): execs in between are
    missing, processes still running then appear as observed. A wall-clock
    step in between is an attribute of its own."""
    attrs = Attrs.of([_kv(keys.GAP_START, iso8601(start_ns)), _kv(keys.GAP_END, iso8601(end_ns)),
                      _kv(keys.GAP_SECONDS, seconds),
                      *([_kv(keys.GAP_CLOCK_STEP, clock_step_s)] if clock_step_s else [])])
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
# (ended_by, incomplete, exit code, signal) -> _ending() of it
_endings: dict[tuple[str, bool, int | None, int | None], tuple[bytes, bytes]] = {}


def _exit_code(code: int | None, signo: int | None) -> int | None:
    """process.exit.code: the code, or for a signal death 128 + the signal,
    as shells report it ($?)."""
    return 128 + signo if signo is not None else code


def _ending(reason: str, incomplete: bool, code: int | None, signo: int | None) -> tuple[bytes, bytes]:
    """How an image ended, encoded for its span (attributes and status) and
    for its exit record (body and attributes); a handful of distinct
    values, encoded once each."""
    key = (reason, incomplete, code, signo)
    hit = _endings.get(key)
    if hit is None:
        kvs = [_kv(keys.ENDED_BY, reason)]
        if incomplete:
            kvs.append(_kv(keys.INCOMPLETE, True))
        error_type = None
        status_code = _exit_code(code, signo)
        if status_code is not None:
            kvs.append(_kv(keys.EXIT_CODE, status_code))
        if signo is not None:
            kvs.append(_kv(keys.EXIT_SIGNAL, signo))
            error_type = _signal_name(signo)
            text = f"killed by {error_type} (exit code {status_code})"
        elif code is not None:
            error_type = str(code) if code else None
            text = f"exited with code {code}"
        else:
            text = f"ended by {reason}"
        status = b""
        if error_type is not None:
            kvs.append(_kv(keys.ERROR_TYPE, error_type))
            status = w.len_field(15, w.len_field(2, f"exited with {error_type}".encode())
                                 + w.varint_field(3, STATUS_ERROR))
        attrs = Attrs.of(kvs)
        hit = (attrs.span + status, w.len_field(5, w.any_string(text)) + attrs.log)
        if len(_endings) < 4096:
            _endings[key] = hit
    return hit


def _new_span_name(info: ProcessInfo) -> bytes:
    """Span.name of an image (its executable's base name, or its comm
    without one: a kernel thread), encoded and kept in _names."""
    name = w.len_field(5, (os.path.basename(info.exe) or info.comm).encode("utf-8", "replace"))
    if len(_names) >= 4096:
        _names.clear()
    _names[info.exe or f"\0{info.comm}"] = name
    return name


def _span_extras(ended: ProcessSpan) -> bytes:
    """The rare Span.attributes after the end's: an untrusted TRACEPARENT,
    an executable identity computed after the exec record."""
    extras = Attrs.of([_kv(keys.TRACEPARENT_UNTRUSTED, ended.untrusted_traceparent)]).span \
        if ended.untrusted_traceparent else b""
    late = ended.late_identity
    if late is not None and late.result is not None:
        extras += late_identity_attrs(late.result).span
    return extras


def _py_span(ended: ProcessSpan) -> bytes:
    """An opentelemetry.proto.trace.v1.Span for an ended process image,
    framed (_in_scope), named after its executable; its attributes were
    kept since it started."""
    info = ended.process
    name = _names.get(info.exe or f"\0{info.comm}")  # no executable (kernel thread): named by comm
    if name is None:
        name = _new_span_name(info)
    parts = [_SPAN_TRACE_ID, ended.trace_id, _SPAN_ID, ended.span_id]
    if ended.trace_state:
        parts.append(w.len_field(3, ended.trace_state.encode()))
    if ended.parent_span_id:
        parts += (_SPAN_PARENT, ended.parent_span_id)
    parts += (name, _SPAN_KIND_START, _U64(ended.start_ns), _SPAN_END, _U64(max(ended.end_ns, ended.start_ns)),
              *ended.attributes, _ending(ended.ended_by, ended.incomplete, info.exit_code, info.signal)[0])
    if ended.untrusted_traceparent or ended.late_identity is not None:
        parts.append(_span_extras(ended))
    return _in_scope(parts)


_exe_names: dict[str, bytes] = {}
_EXIT_EVENT_NAME = w.len_field(12, EXIT_EVENT_NAME.encode())
# The duration attribute but its value (a double, 8 bytes), framed as a LogRecord attribute.
_DURATION = _LOG_ATTR + _varint(len(_h(keys.DURATION)) + 2 + 8) + _h(keys.DURATION) + _varint(9) + \
    w.tag(4, w.I64)
_F64 = struct.Struct("<d").pack


def _exe_name(exe: str) -> bytes:
    """process.executable.name of an image, framed as a LogRecord
    attribute: one per distinct executable, encoded once."""
    hit = _exe_names.get(exe)
    if hit is None:
        hit = Attrs.of([_kv(keys.EXECUTABLE_NAME, os.path.basename(exe))]).log if exe else b""
        if len(_exe_names) >= 4096:
            _exe_names.clear()
        _exe_names[exe] = hit
    return hit


# Everything of an exit record but how it ended, its exec id and, with
# --record-attributes full, its pid and executable name.
_EXIT_FIXED_SIZE = _LOG_TIME.size + len(_LOG_SEVERITY) + len(_LOG_ATTR) + len(_DURATION) + 8 + \
    _LOG_AFTER_BODY_SIZE - len(_LOG_EVENT_NAME) + len(_EXIT_EVENT_NAME)


def _py_exit_record(ended: ProcessSpan, observed_ns: int, repeat_derived: bool = False) -> bytes:
    """A LogRecord for an ended image (EXIT_EVENT_NAME), framed
    (_in_scope): how it ended (the span's end attributes), how long it ran,
    which exec it was, and the ids of its span, so that a logs-only backend
    sees every end and can find the span and the exec record. The pid and
    the executable's name are the exec record's, which the exec id and the
    trace ids join: sent here too only when repeat_derived (--record-attributes
    full, RecordLimits.repeat_derived). Once per image end, so summed from
    known sizes as log_record() is."""
    info = ended.process
    ending = _ending(ended.ended_by, ended.incomplete, info.exit_code, info.signal)[1]
    start_ns, end_ns = ended.start_ns, ended.end_ns
    if end_ns < start_ns:
        end_ns = start_ns
    exec_id = info.exec_id.encode()
    exec_kv = _EXEC_ID + exec_id if len(exec_id) == _EXEC_ID_SIZE else _framed_fixed(keys.EXEC_ID, info.exec_id)
    if repeat_derived:
        pid = _varint(info.pid)
        who = (_LOG_ATTR, _PID[len(pid)], pid)
        name = _exe_name(info.exe)
    else:
        who, name = (), b""
    # An identity computed after the exec record rides here and on the span.
    identity = ended.late_identity
    late = (late_identity_attrs(identity.result).log,) if identity is not None and identity.result is not None else ()
    size = _EXIT_FIXED_SIZE + len(ending) + sum(map(len, who)) + len(exec_kv) + len(name) + sum(map(len, late))
    return b"".join((_IN_SCOPE, _varint(size), _LOG_TIME.pack(_LOG_HEAD[0], end_ns), _LOG_SEVERITY, ending,
                     *who, _LOG_ATTR, exec_kv, name, _DURATION, _F64((end_ns - start_ns) / 1e9),
                     *late, _LOG_IDS[ended.trace_flags], ended.trace_id, _LOG_SPAN_ID, ended.span_id, _LOG_OBSERVED,
                     _U64(observed_ns),
                     _EXIT_EVENT_NAME))


def _signal_name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


# -- the request ------------------------------------------------------------

_SCOPE = w.len_field(1, b"otel-exec") + w.len_field(2, __version__.encode())
_SCOPE_FIELD = w.len_field(1, _SCOPE)
# ResourceLogs/ResourceSpans.schema_url and ScopeLogs/ScopeSpans.schema_url
# (both field 3): the semantic-conventions version the keys follow.
_SCHEMA_URL = w.len_field(3, keys.SCHEMA_URL.encode())


def encoded_resource(attrs: dict[str, object]) -> bytes:
    """An opentelemetry.proto.resource.v1.Resource of these attributes."""
    kvs = [w.key_value(w.key_head(k), w.any_value(v)) for k, v in attrs.items()]  # type: ignore[arg-type]
    return w.repeated(1, kvs)


def export_request(resource: bytes, records: list[bytes]) -> bytes:
    """ExportLogsServiceRequest or ExportTraceServiceRequest from records
    framed as log_record() and span() frame them: both nest resource (1),
    one scope block (2) holding scope (1), the records (2) and the schema
    URL (3), and the schema URL (3). The records are copied once, by one
    join."""
    size = len(_SCOPE_FIELD) + sum(map(len, records)) + len(_SCHEMA_URL)
    scope_head = w.tag(2, w.LEN) + w.varint(size)
    resource_field = w.len_field(1, resource)
    inner = len(resource_field) + len(scope_head) + size + len(_SCHEMA_URL)
    return b"".join((w.tag(1, w.LEN), w.varint(inner), resource_field, scope_head, _SCOPE_FIELD, *records,
                     _SCHEMA_URL, _SCHEMA_URL))


def _fixed64_of(record: bytes, field: int) -> int | None:
    """A fixed64 field of a record framed as the queues hold it (_in_scope),
    or None when it has none or is malformed."""
    try:
        for _, _, message in w.fields(record):
            if isinstance(message, bytes):
                for number, wire_type, value in w.fields(message):
                    if number == field and wire_type == w.I64:  # its value: 8 bytes
                        return int.from_bytes(value, "little")  # type: ignore[arg-type]
            return None
    except ValueError:
        return None
    return None


def log_time_ns(record: bytes) -> int | None:
    """When the event of a framed LogRecord happened: its time_unix_nano
    (the exec or exit; for an observed process or a gap, when it was seen)."""
    return _fixed64_of(record, 1)


def span_end_ns(record: bytes) -> int | None:
    """When the image of a framed Span ended: its end_time_unix_nano, the
    event that had it sent."""
    return _fixed64_of(record, 8)


def request_records(request: bytes) -> list[bytes]:
    """The records of a request export_request() built, framed again as
    log_record() and span() frame them: to split it."""
    for number, _, resource_block in w.fields(request):
        if number == 1:
            for inner, _, scope_block in w.fields(resource_block):  # type: ignore[arg-type]
                if inner == 2:
                    return [w.len_field(2, rec) for n, _, rec in w.fields(scope_block)  # type: ignore[arg-type]
                            if n == 2]  # type: ignore[arg-type]
    return []


# -- the native encoder -----------------------------------------------------
# _encode_native (the C twin of exec_attributes' ids, exec_record, span and
# exit_record, tests/export/test_encode_native.py) when it is built and
# native_wanted(); else the Python reference above. It takes this module's
# constants and caches, and calls back here for what is rare.

_native_exec_ids: Callable[[ExecEvent, bool], tuple[bytes, bytes] | None] | None = None
exec_record = _py_exec_record
span = _py_span
exit_record = _py_exit_record


def setup_native(module: object) -> None:
    """Hand _encode_native this module's constants, caches and the functions
    it calls for what is rare."""
    module.setup(  # type: ignore[attr-defined]
        pid_heads=_PID, ppid_heads=_PPID, vpid_heads=_VPID, vppid_heads=_VPPID, created_head=_CREATED,
        created_size=_CREATED_SIZE, exec_id_head=_EXEC_ID, parent_exec_id_head=_PARENT_EXEC_ID,
        exec_id_size=_EXEC_ID_SIZE, log_event_name=_LOG_EVENT_NAME, exit_event_name=_EXIT_EVENT_NAME,
        log_severity=_LOG_SEVERITY, duration_head=_DURATION, span_kind_start=_SPAN_KIND_START, names=_names,
        endings=_endings, exe_names=_exe_names, new_span_name=_new_span_name, ending=_ending,
        span_extras=_span_extras, exe_name=_exe_name, late_identity_attrs=late_identity_attrs,
        framed_fixed=_framed_fixed, exec_id_key=keys.EXEC_ID, py_span=_py_span,
        py_exit_record=_py_exit_record, py_exec_record=_py_exec_record, shared_encodings=_shared_encodings,
        identity_attrs=identity_attrs, span_slim=SPAN_SLIM)


_ENCODE_NATIVE = native_module("otel_exec.export.otlp._encode_native")
if _ENCODE_NATIVE is not None:
    setup_native(_ENCODE_NATIVE)
    _native_exec_ids = _ENCODE_NATIVE.exec_ids
    span, exit_record, exec_record = _ENCODE_NATIVE.span, _ENCODE_NATIVE.exit_record, _ENCODE_NATIVE.exec_record
    IMPLEMENTATION = "native"
