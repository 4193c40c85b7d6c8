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
from datetime import datetime, timezone

from . import protowire as w
from .events import ExecEvent
from .proctable import ProcessInfo

EVENT_NAME = "otel_exec.process.exec"
SEVERITY_INFO = 9
SPAN_KIND_INTERNAL = 1
STATUS_ERROR = 2
ENV_PREFIX = "process.environment_variable."

# stdin_type as a word: the S_IFMT names of stat(2)
_FILE_TYPES = {stat.S_IFREG: "reg", stat.S_IFDIR: "dir", stat.S_IFCHR: "chr", stat.S_IFBLK: "blk",
               stat.S_IFIFO: "fifo", stat.S_IFSOCK: "sock", stat.S_IFLNK: "lnk"}

_heads: dict[str, bytes] = {}


def _h(key: str) -> bytes:
    head = _heads.get(key)
    if head is None:
        head = _heads[key] = w.key_head(key)
    return head


def _kv(key: str, value: w.Value) -> bytes:
    return w.key_value(_h(key), w.any_value(value))


def iso8601(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def command_line(argv: list[str]) -> str:
    return shlex.join(argv)


def exec_attributes(ev: ExecEvent) -> list[bytes]:
    """Every field of an exec as encoded KeyValues (docs/attributes.md)."""
    kv = _kv
    attrs = [
        kv("process.pid", ev.host_pid),
        kv("process.parent_pid", ev.host_ppid),
        kv("process.vpid", ev.pid),
        kv("process.executable.path", ev.pathname),
        kv("process.executable.name", os.path.basename(ev.pathname)),
        kv("process.command", ev.argv[0] if ev.argv else ""),
        kv("process.command_args", ev.argv),
        kv("process.args_count", ev.argc),
        kv("process.user.id", ev.euid),
        kv("process.real_user.id", ev.uid),
        kv("process.group.id", ev.egid),
        kv("process.real_group.id", ev.gid),
        kv("process.working_directory", ev.pwd),
        kv("process.creation.time", iso8601(ev.process_start_time)),
        kv("process.interactive", ev.stdin_type == stat.S_IFCHR and ev.stdin_path.startswith(("/dev/pts/", "/dev/tty"))),
        kv("process.linux.cgroup", f"0::{ev.cgroup_path}"),
        kv("file.path", ev.pathname),
        kv("file.inode", str(ev.inode)),
        kv("file.mode", f"{stat.S_IMODE(ev.inode_mode):04o}"),
        kv("file.changed", iso8601(ev.ctime)),
        kv("otel_exec.exec_id", ev.exec_id),
        kv("otel_exec.parent_exec_id", ev.parent_exec_id),
        kv("otel_exec.cmdpath", ev.cmdpath),
        kv("otel_exec.interp", ev.interp),
        kv("otel_exec.file.dev", ev.dev),
        kv("otel_exec.file.type", _FILE_TYPES.get(stat.S_IFMT(ev.inode_mode), "unknown")),
        kv("otel_exec.comm", ev.comm),
        kv("otel_exec.prev_comm", ev.prev_comm),
        kv("otel_exec.tid", ev.host_tid),
        kv("otel_exec.vtid", ev.tid),
        kv("otel_exec.vppid", ev.ppid),
        kv("otel_exec.stdin.type", _FILE_TYPES.get(ev.stdin_type, "none" if not ev.stdin_type else "unknown")),
        kv("otel_exec.stdin.path", ev.stdin_path),
        kv("otel_exec.invoked_from_kernel", ev.invoked_from_kernel),
        kv("otel_exec.mount_ns", ev.mount_ns),
        kv("otel_exec.pid_ns", ev.pid_ns),
        kv("otel_exec.cgroup.id", ev.cgroup_id),
        kv("otel_exec.uts.hostname", ev.hostname),
        kv("otel_exec.env_count", ev.envc),
        kv("otel_exec.argv_truncated", ev.argv_truncated),
        kv("otel_exec.env_truncated", ev.env_truncated),
    ]
    if ev.interpreter_pathname:
        attrs += (
            kv("otel_exec.interpreter.path", ev.interpreter_pathname),
            kv("otel_exec.interpreter.dev", ev.interpreter_dev),
            kv("otel_exec.interpreter.inode", str(ev.interpreter_inode)),
            kv("otel_exec.interpreter.changed", iso8601(ev.interpreter_ctime)),
        )
    if ev.container_id:
        attrs.append(kv("container.id", ev.container_id))
    if ev.path_truncated:
        attrs.append(kv("otel_exec.path_truncated", ev.path_truncated))
    for entry in ev.env:
        key, sep, value = entry.partition("=")
        if sep:
            attrs.append(kv(ENV_PREFIX + key, value))
        else:
            attrs.append(kv("otel_exec.env_entry_without_value", entry))
    return attrs


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


def log_record(ev: ExecEvent, attrs: list[bytes], info: ProcessInfo, observed_ns: int) -> bytes:
    """An opentelemetry.proto.logs.v1.LogRecord."""
    return b"".join((
        w.fixed64_field(1, ev.timestamp),
        w.varint_field(2, SEVERITY_INFO),
        w.len_field(3, b"INFO"),
        w.len_field(5, w.any_string(command_line(ev.argv))),
        w.repeated(6, attrs),
        w.fixed32_field(8, 1),  # flags: sampled
        w.len_field(9, info.trace_id),
        w.len_field(10, info.span_id),
        w.fixed64_field(11, observed_ns),
        w.len_field(12, EVENT_NAME.encode()),
    ))


def span_attributes(attrs: list[bytes]) -> bytes:
    return w.repeated(9, attrs)


def span(info: ProcessInfo, name: str, end_ns: int, extra: list[bytes]) -> bytes:
    """An opentelemetry.proto.trace.v1.Span for a process image. `extra`
    holds the attributes of how it ended; the rest were kept since its start."""
    error_type = None
    if info.signal is not None:
        extra = [*extra, _kv("otel_exec.exit.signal", info.signal)]
        error_type = _signal_name(info.signal)
    elif info.exit_code is not None:
        extra = [*extra, _kv("process.exit.code", info.exit_code)]
        if info.exit_code:
            error_type = str(info.exit_code)
    parts = [
        w.len_field(1, info.trace_id),
        w.len_field(2, info.span_id),
    ]
    if info.trace_state:
        parts.append(w.len_field(3, info.trace_state.encode()))
    if info.parent_span_id:
        parts.append(w.len_field(4, info.parent_span_id))
    parts += (
        w.len_field(5, name.encode("utf-8", "replace")),
        w.varint_field(6, SPAN_KIND_INTERNAL),
        w.fixed64_field(7, info.span_start),
        w.fixed64_field(8, max(end_ns, info.span_start)),
        info.span_attrs,
        w.repeated(9, extra),
    )
    if error_type is not None:
        parts.append(w.repeated(9, [_kv("error.type", error_type)]))
        parts.append(w.len_field(15, w.len_field(2, f"exited with {error_type}".encode())
                                 + w.varint_field(3, STATUS_ERROR)))
    return b"".join(parts)


def span_name(info: ProcessInfo) -> str:
    return os.path.basename(info.exe) or info.comm


def _signal_name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


def ended_by(reason: str) -> bytes:
    return _kv("otel_exec.span.ended_by", reason)


def incomplete() -> bytes:
    return _kv("otel_exec.span.incomplete", True)
