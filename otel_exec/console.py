"""Console exporter: one line per exec, human-readable or JSON Lines."""
from __future__ import annotations

import json
import shlex
import time
from typing import TextIO

from .events import ExecEvent

EXEC_FIELDS = ExecEvent.__slots__


def exec_to_dict(ev: ExecEvent) -> dict[str, object]:
    return {name: getattr(ev, name) for name in EXEC_FIELDS}


def pretty_line(ev: ExecEvent) -> str:
    ts = time.strftime("%H:%M:%S", time.localtime(ev.timestamp / 1e9))
    ms = ev.timestamp // 1_000_000 % 1000
    cmd = shlex.join(ev.argv) + (" …" if ev.argv_truncated else "")
    where = f" [{ev.container_id[:12]}]" if ev.container_id else ""
    return f"{ts}.{ms:03d} {ev.host_pid:>7} {ev.host_ppid:>7} {ev.uid:>5}{where} {ev.pathname}: {cmd}"


class ConsoleExporter:
    def __init__(self, out: TextIO, fmt: str) -> None:
        self.out = out
        self.jsonl = fmt == "jsonl"
        if not self.jsonl:
            out.write(f"{'TIME':12} {'PID':>7} {'PPID':>7} {'UID':>5} PATH: ARGV\n")

    def export(self, ev: ExecEvent) -> None:
        if self.jsonl:
            self.out.write(json.dumps(exec_to_dict(ev), ensure_ascii=False) + "\n")
        else:
            self.out.write(pretty_line(ev) + "\n")

    def flush(self) -> None:
        self.out.flush()
