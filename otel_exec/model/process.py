"""A live process and the image it runs, as the process table keeps it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ProcessInfo:
    """One process and the image it runs; its span, if any, is span
    lineage's (otel_exec.lineage.spans.ProcessSpan).

    ``argv`` may be shared with other entries and events: treat it as
    read-only.
    """

    pid: int  # host pid
    ppid: int
    start_ticks: int  # clock ticks since boot, as /proc/PID/stat field 22
    exec_id: str
    parent_exec_id: str
    comm: str
    exe: str  # path of the executable; "" for kernel threads or when unreadable
    argv: list[str] | None
    seeded_from_proc: bool  # found in /proc at start (an observed exec event)
    exec_time: int | None  # ns since epoch of the exec; None when found in /proc
    exit_code: int | None = None
    signal: int | None = None
