"""Console exporter: one line per exec, human-readable or JSON Lines."""
from __future__ import annotations

import json
import shlex
import time
from typing import TextIO

from .events import ExecEvent
from .proctable import ProcessInfo

EXEC_FIELDS = [name for name in ExecEvent.__slots__ if name != "shared"]
# A newline or escape sequence in a path or argument must not forge lines or
# drive the terminal: control characters print as \xNN.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127]}


def exec_to_dict(ev: ExecEvent) -> dict[str, object]:
    return {name: getattr(ev, name) for name in EXEC_FIELDS}


def pretty_line(ev: ExecEvent) -> str:
    ts = time.strftime("%H:%M:%S", time.localtime(ev.timestamp / 1e9))
    ms = ev.timestamp // 1_000_000 % 1000
    cmd = shlex.join(ev.argv).translate(_CONTROL) + (" …" if ev.argv_truncated else "")
    where = f" [{ev.container_id[:12]}]" if ev.container_id else ""
    path = ev.pathname.translate(_CONTROL)
    return f"{ts}.{ms:03d} {ev.host_pid:>7} {ev.host_ppid:>7} {ev.uid:>5}{where} {path}: {cmd}"


class ConsoleExporter:
    """Lines are held until flush(), the end of a drain of the ring buffer,
    and written after the sinks before it (the spool) flushed: an exec
    printed is an exec already durable elsewhere."""

    def __init__(self, out: TextIO, fmt: str) -> None:
        self.out = out
        self.jsonl = fmt == "jsonl"
        self._lines: list[str] = []
        if not self.jsonl:
            out.write(f"{'TIME':12} {'PID':>7} {'PPID':>7} {'UID':>5} PATH: ARGV\n")

    def on_exec(self, ev: ExecEvent, info: ProcessInfo, previous: ProcessInfo | None) -> None:
        if self.jsonl:
            self._lines.append(json.dumps(exec_to_dict(ev), ensure_ascii=False))
        else:
            self._lines.append(pretty_line(ev))

    def seed(self, infos: list[ProcessInfo]) -> None:
        pass

    def on_exit(self, info: ProcessInfo, timestamp: int) -> None:
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
