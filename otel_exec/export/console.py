"""Console exporter: one line per exec, human-readable or JSON Lines."""
from __future__ import annotations

import json
import os
import re
import shlex
import time
from dataclasses import asdict
from typing import Iterable, TextIO

from otel_exec.host import safefs
from otel_exec.errors import UsageError
from otel_exec.model.events import ExecEvent
from otel_exec.model.executable import ExecutableIdentity
from otel_exec.lineage.proctable import ProcessInfo

# shared is a cache key, parent_start_ticks only checks the parent's table entry.
EXEC_FIELDS = [name for name in ExecEvent.__slots__ if name not in ("shared", "parent_start_ticks")]
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


def pretty_line(ev: ExecEvent) -> str:
    ts = time.strftime("%H:%M:%S", time.localtime(ev.timestamp / 1e9))
    ms = ev.timestamp // 1_000_000 % 1000
    if "argv" in ev.unavailable:
        cmd = "(argv unavailable)"
    else:
        cmd = shlex.join(ev.argv).translate(_CONTROL) + (" …" if ev.argv_truncated else "")
    where = f" [{ev.container_id[:12]}]" if ev.container_id else ""
    # Without the resolved path (--no-field paths), the path as exec'd.
    path = (ev.cmdpath if "pathname" in ev.unavailable else ev.pathname).translate(_CONTROL)
    rate = f" (1 of {ev.sample_rate})" if ev.sample_rate and ev.sample_rate > 1 else ""
    return f"{ts}.{ms:03d} {ev.host_pid:>7} {ev.host_ppid:>7} {ev.uid:>5}{where} {path}: {cmd}{rate}"


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


class ConsoleExporter:
    """Lines are held until flush(), the end of a drain of the ring buffer,
    and written after the sinks before it (the spool) flushed: an exec
    printed is an exec already durable elsewhere. JSON objects leave out the
    fields --no-field switched off (`not_collected`); `unavailable` names
    them."""

    def __init__(self, out: TextIO, fmt: str, not_collected: tuple[str, ...] = ()) -> None:
        self.out = out
        self.jsonl = fmt == "jsonl"
        self.fields = [name for name in EXEC_FIELDS if name not in not_collected]
        self._lines: list[str] = []
        if not self.jsonl:
            out.write(f"{'TIME':12} {'PID':>7} {'PPID':>7} {'UID':>5} PATH: ARGV\n")

    def on_exec(self, ev: ExecEvent, info: ProcessInfo, previous: ProcessInfo | None) -> None:
        if self.jsonl:
            self._lines.append(json_line(exec_to_dict(ev, self.fields)))
        else:
            self._lines.append(pretty_line(ev))

    def start(self) -> None:
        """Nothing to start: lines go out from the reader thread."""

    def seed(self, infos: list[ProcessInfo]) -> None:
        pass

    def on_exit(self, info: ProcessInfo, timestamp: int) -> None:
        pass

    def on_unreported_exec(self, info: ProcessInfo, timestamp: int) -> None:
        pass

    def on_drop(self, info: ProcessInfo) -> None:
        pass

    def flush(self) -> None:
        if self._lines:
            self.out.write("\n".join(self._lines) + "\n")
            self._lines.clear()
        self.out.flush()

    def close(self, still_open: list[ProcessInfo], timeout_s: float) -> None:
        self.flush()

    def stats(self) -> dict[str, int]:
        return {}
