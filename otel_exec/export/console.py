"""The console sink: one line per exec and per exit, the terminal view or JSON Lines."""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import time
from dataclasses import asdict
from typing import Iterable, Mapping, TextIO

from otel_exec.host import safefs
from otel_exec.errors import UsageError
from otel_exec.model.events import ExecEvent
from otel_exec.lineage.spans import ProcessSpan
from otel_exec.model.executable import ExecutableIdentity
from otel_exec.model.process import ProcessInfo
from otel_exec.policy.redact import REDACTED

# shared is a cache key, parent_start_ticks only checks the parent's table
# entry, observed is False on every exec printed (on_observed prints none).
EXEC_FIELDS = [name for name in ExecEvent.__slots__ if name not in ("shared", "parent_start_ticks", "observed")]
# Objects, written as dicts of the values they have (exec_to_dict).
IDENTITY_FIELDS = ("executable_identity", "script_identity")
# A newline or escape sequence in a path or argument must not forge lines or
# drive the terminal: C0 and C1 controls print as \xNN, line and paragraph
# separators and bidirectional controls (which reorder what a terminal or
# editor shows) as \uXXXX.
_C0_C1 = [*range(32), 127, *range(0x80, 0xA0)]
_INVISIBLE = [0x200E, 0x200F, 0x061C, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_CONTROL = {**{c: f"\\x{c:02x}" for c in _C0_C1}, **{c: f"\\u{c:04x}" for c in _INVISIBLE}}
# JSON escapes C0 controls itself; the rest become \uXXXX escapes, so a
# line read back is the same string and the file shows none of them raw.
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in [127, *range(0x80, 0xA0), *_INVISIBLE]}
# A kubepods cgroup names the pod by its UID (underscores in the systemd driver).
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f_-]{27})")
_FAILURE_COLOUR = "\x1b[31m"  # red: a non-zero exit code
_SIGNAL_COLOUR = "\x1b[1;35m"  # bold magenta: ended by a signal
_RESET = "\x1b[0m"
_REDACTED_COLOURED = f"\x1b[7m{REDACTED}{_RESET}"  # reverse video: a hidden value, not text
_TREE_MAX = 65536  # --tree depths kept, as the process table's default bound
_JSON_ESCAPED = re.compile("[" + "".join(re.escape(chr(c)) for c in _JSON_ESCAPES) + "]")


def json_line(obj: object) -> str:
    """One JSON Lines line: UTF-8 text, no raw control, separator or bidi
    character anywhere (json.dumps alone writes C1 and U+2028 raw)."""
    line = json.dumps(obj, ensure_ascii=False)
    if line.isascii():  # the common case, one C-level pass: nothing to escape but DEL
        return line.replace("\x7f", "\\u007f") if "\x7f" in line else line
    # In JSON text these characters only occur inside strings: escaping them
    # in place keeps every value.
    return _JSON_ESCAPED.sub(lambda m: _JSON_ESCAPES[ord(m.group())], line)


# By id(), as the OTLP encoder does: a storm hands one identity object over
# and over; the object is kept in the value, so its id is not reused.
_identity_dicts: dict[int, tuple[ExecutableIdentity, dict[str, object]]] = {}


def _identity_dict(identity: ExecutableIdentity) -> dict[str, object]:
    hit = _identity_dicts.get(id(identity))
    if hit is None or hit[0] is not identity:
        if len(_identity_dicts) >= 4096:
            _identity_dicts.clear()
        hit = _identity_dicts[id(identity)] = (identity, {k: v for k, v in asdict(identity).items()
                                                          if v is not None})
    return hit[1]


def exec_to_dict(ev: ExecEvent, fields: list[str] = EXEC_FIELDS) -> dict[str, object]:
    out = {name: getattr(ev, name) for name in fields}
    for name in IDENTITY_FIELDS:
        identity = out.get(name)
        if identity is not None:
            out[name] = _identity_dict(identity)
    return out


def _clock(timestamp_ns: int) -> str:
    ms = timestamp_ns // 1_000_000 % 1000
    return f"{time.strftime('%H:%M:%S', time.localtime(timestamp_ns / 1e9))}.{ms:03d}"


def _workload(ev: ExecEvent) -> str:
    """` [container]`, ` [container pod]` or ` [pod]` when known: the pod from
    the kubepods cgroup path (the pod's UID), short like the container id."""
    pod = _POD.search(ev.cgroup_path) if "pod" in ev.cgroup_path else None
    parts = [ev.container_id[:12]] if ev.container_id else []
    if pod:
        parts.append("pod " + pod.group(1)[:8])
    return f" [{' '.join(parts)}]" if parts else ""


def pretty_line(ev: ExecEvent) -> str:
    """The view's exec line, uncoloured, unindented."""
    return _exec_columns(ev) + _exec_text(ev)


def _exec_columns(ev: ExecEvent) -> str:
    return f"{_clock(ev.timestamp)} {ev.host_pid:>7} {ev.host_ppid:>7} {ev.uid:>5}{_workload(ev)} "


def _exec_text(ev: ExecEvent) -> str:
    if "argv" in ev.unavailable:
        cmd = "(argv unavailable)"
    else:
        cmd = shlex.join(ev.argv).translate(_CONTROL) + (" …" if ev.argv_truncated else "")
    # Without the resolved path (--no-field paths), the path as exec'd.
    path = (ev.cmdpath if "pathname" in ev.unavailable else ev.pathname).translate(_CONTROL)
    rate = f" (1 of {ev.sample_rate})" if ev.sample_rate and ev.sample_rate > 1 else ""
    return f"{path}: {cmd}{rate}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def duration_text(ns: int) -> str:
    # Each unit up to where its rounding would print the next one's 1.
    if ns < 999_500:
        return f"{ns / 1000:.0f}µs"
    if ns < 999_950_000:
        return f"{ns / 1e6:.1f}ms"
    if ns < 59_995_000_000:
        return f"{ns / 1e9:.2f}s"
    minutes, seconds = divmod(round(ns / 1e9), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def outcome_text(info: ProcessInfo) -> str:
    """`exit 0`, `exit 1`, `killed by SIGKILL`."""
    if info.signal:
        return f"killed by {signal_name(info.signal)}"
    return f"exit {info.exit_code if info.exit_code is not None else '?'}"


def exit_line(info: ProcessInfo, timestamp: int, indent: str = "") -> str:
    """The view's exit line, uncoloured, unindented: the outcome, how long
    the image ran (unknown for one running before the agent started)."""
    ran = duration_text(timestamp - info.exec_time) if info.exec_time is not None else "?"
    exe = (info.exe or info.comm).translate(_CONTROL)
    return f"{_clock(timestamp)} {info.pid:>7} {info.ppid:>7} {'':>5} {indent}{outcome_text(info)} after {ran}: {exe}"


def exit_to_dict(info: ProcessInfo, timestamp: int) -> dict[str, object]:
    return {"event": "exit", "timestamp": timestamp, "host_pid": info.pid, "host_ppid": info.ppid,
            "exec_id": info.exec_id, "comm": info.comm, "exe": info.exe, "exit_code": info.exit_code,
            "signal": info.signal, "signal_name": signal_name(info.signal) if info.signal else None,
            "exec_time": info.exec_time,
            "duration_ns": timestamp - info.exec_time if info.exec_time is not None else None}


def colour_wanted(out: TextIO, mode: str, environ: Mapping[str, str] = os.environ) -> bool:
    """--color auto: on a terminal, unless NO_COLOR is set (no-color.org)."""
    if mode != "auto":
        return mode == "always"
    return not environ.get("NO_COLOR") and out.isatty()


def open_output(path: str, trust: Iterable[int] = ()) -> TextIO:
    """--output, opened (as root, before the privilege drop) relative to its
    checked directory: created 0600, since records hold every user's argv
    and environment; an existing file must be a regular, singly linked
    file of root, the agent or `trust`, and is truncated."""
    try:
        dir_fd, name = safefs.split(path, trust=trust)
        try:
            fd = safefs.open_file(dir_fd, name, os.O_WRONLY | os.O_TRUNC, 0o600, trust=trust)
        finally:
            os.close(dir_fd)
    except safefs.UnsafePath as e:
        raise UsageError(f"--output: {e}") from None
    except OSError as e:
        raise UsageError(f"--output {path}: {e.strerror}") from None
    # UTF-8 whatever the locale: event text is never unencodable.
    return open(fd, "w", buffering=1 << 16, encoding="utf-8")


class ConsoleSink:
    """The console: the terminal view (`pretty`) or JSON Lines.

    Lines are held until flush(), the end of a drain of the ring buffer,
    and written after the sinks before it (the spool) flushed: an exec
    printed is an exec already durable elsewhere. JSON objects leave out the
    fields --no-field switched off (`not_collected`); `unavailable` names
    them. Exit records (lines) come for the images whose exec was reported;
    with `seeded_exits` also for processes found running at start (off when
    a filter is set: their execs were never matched against it)."""

    def __init__(self, out: TextIO, fmt: str, not_collected: tuple[str, ...] = (), *, colour: bool = False,
                 tree: bool = False, seeded_exits: bool = True) -> None:
        self.out = out
        self.jsonl = fmt == "jsonl"
        self.fields = [name for name in EXEC_FIELDS if name not in not_collected]
        self.colour = colour
        self.seeded_exits = seeded_exits
        # --tree: host pid -> depth below the first exec seen in its line.
        self._depth: dict[int, int] | None = {} if tree else None
        self._lines: list[str] = []
        if not self.jsonl:
            out.write(f"{'TIME':12} {'PID':>7} {'PPID':>7} {'UID':>5} PATH: ARGV | exit CODE after DURATION: PATH\n")

    def on_exec(self, ev: ExecEvent, span: ProcessSpan) -> None:
        if self.jsonl:
            self._lines.append(json_line(exec_to_dict(ev, self.fields)))
            return
        text = _exec_text(ev)
        if self.colour and REDACTED in text:
            text = text.replace(REDACTED, _REDACTED_COLOURED)
        if self._depth is not None:
            text = self._indent(ev.host_pid, ev.host_ppid) + text
        self._lines.append(_exec_columns(ev) + text)

    def _indent(self, pid: int, ppid: int) -> str:
        depth = self._depth
        assert depth is not None
        level = depth.get(ppid, -1) + 1
        if pid not in depth and len(depth) >= _TREE_MAX:
            del depth[next(iter(depth))]  # a missed exit ages out
        depth[pid] = level
        return "  " * (level - 1) + "└─ " if level else ""

    def start(self) -> None:
        """Nothing to start: lines go out from the reader thread."""

    def on_observed(self, ev: ExecEvent, span: ProcessSpan | None) -> None:
        """Processes found running at start are not printed."""

    def on_span_end(self, span: ProcessSpan) -> None:
        """An exit line for an image that ended by exiting; an image replaced
        by a re-exec or stopped being watched prints none."""
        info = span.process
        if span.ended_by != "exit":
            if span.ended_by == "evicted" and self._depth is not None:
                self._depth.pop(info.pid, None)
            return
        if info.exec_time is None and not self.seeded_exits:
            return
        if self.jsonl:
            self._lines.append(json_line(exit_to_dict(info, span.end_ns)))
            return
        level = self._depth.pop(info.pid, 0) if self._depth is not None else 0
        line = exit_line(info, span.end_ns, "  " * (level - 1) + "└─ " if level else "")
        if self.colour and (info.signal or info.exit_code):
            line = (_SIGNAL_COLOUR if info.signal else _FAILURE_COLOUR) + line + _RESET
        self._lines.append(line)

    def flush(self) -> None:
        if self._lines:
            self.out.write("\n".join(self._lines) + "\n")
            self._lines.clear()
        self.out.flush()

    def due(self) -> float:
        """Lines are written at every flush: nothing waits for a send."""
        return math.inf

    def close(self, timeout_s: float) -> None:
        self.flush()

    def stats(self) -> dict[str, int]:
        return {}
