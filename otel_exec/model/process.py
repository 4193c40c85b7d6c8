"""A live process and the image it runs, as the process table keeps it."""
from __future__ import annotations


# A plain class with slots, not a dataclass: this module is on the start-up
# path (docs/architecture.md, Rules).
class ProcessInfo:
    """One process and the image it runs; its span, if any, is span
    lineage's (otel_exec.lineage.spans.ProcessSpan).

    ``argv`` may be shared with other entries and events: treat it as
    read-only.
    """

    # otel_exec.lineage._lineage_native fills these slots as __init__ does
    # (tests/lineage/test_lineage_native.py compares every one).
    __slots__ = ("pid", "ppid", "start_ticks", "exec_id", "parent_exec_id", "comm", "exe", "argv", "seeded_from_proc",
                 "exec_time", "exit_code", "signal")

    def __init__(self, pid: int, ppid: int, start_ticks: int, exec_id: str, parent_exec_id: str, comm: str, exe: str,
                 argv: list[str] | None, seeded_from_proc: bool, exec_time: int | None, exit_code: int | None = None,
                 signal: int | None = None) -> None:
        self.pid = pid  # host pid
        self.ppid = ppid
        self.start_ticks = start_ticks  # clock ticks since boot, as /proc/PID/stat field 22
        self.exec_id = exec_id
        self.parent_exec_id = parent_exec_id
        self.comm = comm
        self.exe = exe  # path of the executable; "" for kernel threads or when unreadable
        self.argv = argv
        self.seeded_from_proc = seeded_from_proc  # found in /proc at start (an observed exec event)
        self.exec_time = exec_time  # ns since epoch of the exec; None when found in /proc
        self.exit_code = exit_code
        self.signal = signal
