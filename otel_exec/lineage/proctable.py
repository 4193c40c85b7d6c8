"""The user-space process table: what image each live host pid runs, and
its lineage.

Seeded once from /proc, then kept current by exec and exit events. A forked
child that has not exec'd runs its parent's image and needs no entry: an
exec names its image parent (``ExecEvent.image_ppid``).
Keyed by host pid and bounded: when full, the least recently used entry is
evicted (and counted), so a missed exit costs one slot until it ages out
rather than memory forever. Every per-event operation is O(1)
(``ancestors`` is O(limit)). Used from one thread: the one that drains the
ring buffer.

A pid is reused after its process dies, so an entry is only trusted for an
event whose start time (clock ticks since boot) matches; a mismatch means
the exit of the old holder was missed, and its entry is stale.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from otel_exec.core.decode import split_block, text
from otel_exec.model.events import ExecEvent, ExitEvent, UnreportedExecEvent
from otel_exec.host import procfs
from otel_exec.host.executables import Slot
from otel_exec.host.identity import HostIdentity

DEFAULT_MAX_ENTRIES = 65536
"""Default bound: twice the kernel's default pid_max of 32768, so a default
host fits whole. An entry costs about 200 bytes plus its strings (argv, ids,
paths): tens of MiB when full. Hosts that raise pid_max to 4194304 keep
their 65536 most recently active processes."""



@dataclass(slots=True)
class ProcessInfo:
    """One process and the image it runs.

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
    seeded_from_proc: bool
    exec_time: int | None  # ns since epoch of the exec; None when seeded
    exit_code: int | None = None
    signal: int | None = None
    # The span of this image, assigned by otel_exec.lineage.spans; owns_span turns
    # False once the span was ended and handed to the exporters.
    trace_id: bytes = b""
    span_id: bytes = b""
    parent_span_id: bytes = b""
    trace_state: str = ""
    traceparent: str = ""  # TRACEPARENT as this image's environment had it
    # A TRACEPARENT this image set that --trust-traceparent did not follow
    # (bounded and scanned): recorded on its span, not used as its parent.
    untrusted_traceparent: str = ""
    owns_span: bool = False
    span_start: int = 0  # ns since epoch
    span_attrs: tuple[bytes, ...] = ()  # encoded attribute parts, kept until the span ends
    # The executable identity still being computed when the exec was
    # recorded (otel_exec.host.executables.Slot): it rides on the span.
    late_identity: Slot | None = None


class ProcessTable:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.evicted = 0  # entries dropped to stay within max_entries
        # Told of every entry that leaves without an exit event (evicted, or
        # stale after a missed exit), so its open span can still be ended.
        self.on_drop: Callable[[ProcessInfo], None] | None = None
        self._procs: OrderedDict[int, ProcessInfo] = OrderedDict()

    def __len__(self) -> int:
        return len(self._procs)

    def get(self, pid: int) -> ProcessInfo | None:
        """The entry for a host pid; looking it up counts as a use."""
        info = self._procs.get(pid)
        if info is not None:
            self._procs.move_to_end(pid)
        return info

    def image_parent(self, ev: ExecEvent) -> ProcessInfo | None:
        """The entry for the exec's image parent, or None. An entry of an
        earlier holder of ``ev.image_ppid`` (its exit missed, or not yet
        read because the parent left and its pid was reused before this
        exec's record was written) started at another tick: it is not the
        parent, and an exec whose kernel record lacks the parent's image must
        not take its exec id."""
        info = self.get(ev.image_ppid)
        if info is not None and ev.parent_start_ticks not in (None, info.start_ticks):
            return None
        return info

    def ancestors(self, pid: int, limit: int = 64) -> list[ProcessInfo]:
        """Parent, grandparent, ... of ``pid`` as far as the table knows them,
        nearest first, at most ``limit``. A parent that started after its
        child is a later holder of a reused pid and ends the walk."""
        chain: list[ProcessInfo] = []
        info = self._procs.get(pid)
        while info is not None and len(chain) < limit:
            parent = self.get(info.ppid)
            if parent is None or parent.start_ticks > info.start_ticks:
                break
            chain.append(parent)
            info = parent
        return chain

    def on_exec(self, ev: ExecEvent) -> tuple[ProcessInfo, ProcessInfo | None]:
        """Install the new image of ``ev.host_pid``; return it and the
        process's previous image (a re-exec), or None."""
        previous = self._procs.pop(ev.host_pid, None)
        if previous is not None and previous.start_ticks != ev.start_ticks:
            self._dropped(previous)  # a reused pid's stale entry: not this process's past
            previous = None
        info = ProcessInfo(ev.host_pid, ev.host_ppid, ev.start_ticks, ev.exec_id, ev.parent_exec_id,
                           ev.comm, ev.pathname, ev.argv, False, ev.timestamp)
        self._put(info)
        return info, previous

    def on_exit(self, ev: ExitEvent) -> ProcessInfo | None:
        """Remove the process; return its entry marked with how it ended, or
        None if the table did not know it."""
        info = self._pop(ev.pid, ev.start_ticks)
        if info is not None:
            info.exit_code = ev.exit_code
            info.signal = ev.signal
        return info

    def on_unreported_exec(self, ev: UnreportedExecEvent) -> ProcessInfo | None:
        """The process exec'd an image that is not reported: remove the
        image it ran before and return it, or None if the table did not know
        it. Its children then have no image parent here (new traces), and
        its exit is ignored."""
        return self._pop(ev.pid, ev.start_ticks)

    def _pop(self, pid: int, start_ticks: int) -> ProcessInfo | None:
        info = self._procs.pop(pid, None)
        if info is not None and info.start_ticks != start_ticks:
            self._dropped(info)  # a reused pid's stale entry
            return None
        return info

    def seed_from_proc(self, identity: HostIdentity, proc: str = "/proc") -> int:
        """Add every process already running; return how many were added.

        A process that vanishes while being read is skipped; one whose exe
        cannot be read (kernel thread, permission) gets exe "" and the exec
        id of a process without executable. An entry an event already put in
        the table for the same process is kept, as events know more.
        """
        procs = self._procs
        seeded: list[ProcessInfo] = []
        for pid in procfs.pids(proc):
            base = f"{proc}/{pid}"
            try:
                stat = procfs.read(base + "/stat")
                cmdline = procfs.read(base + "/cmdline")
            except OSError:
                continue  # exited meanwhile
            fields = procfs.stat_fields(stat)
            if stat.find(b"(") < 0 or len(fields) <= procfs.STAT_STARTTIME \
                    or fields[procfs.STAT_STATE] in procfs.GONE_STATES:
                continue
            start_ticks = int(fields[procfs.STAT_STARTTIME])
            known = procs.get(pid)
            if known is not None and known.start_ticks == start_ticks:
                continue
            exe_link = base + "/exe"
            try:
                exe = text(os.readlink(os.fsencode(exe_link)))
                st = os.stat(exe_link)
                exe_dev, exe_ino = st.st_dev, st.st_ino
            except OSError:
                exe, exe_dev, exe_ino = "", 0, 0
            argv = split_block(cmdline, truncated=len(cmdline) == procfs.READ_MAX)
            info = ProcessInfo(pid, int(fields[procfs.STAT_PPID]), start_ticks,
                               identity.exec_id(pid, start_ticks, exe_dev, exe_ino), "",
                               text(procfs.stat_comm(stat)), exe, argv, True, None)
            self._put(info)
            seeded.append(info)
        # Parents are only all known once every process has been read.
        for info in seeded:
            parent = procs.get(info.ppid)
            if parent is not None and parent.start_ticks <= info.start_ticks:
                info.parent_exec_id = parent.exec_id
        return len(seeded)

    def _put(self, info: ProcessInfo) -> None:
        procs = self._procs
        procs[info.pid] = info
        procs.move_to_end(info.pid)
        if len(procs) > self.max_entries:
            self.evicted += 1
            self._dropped(procs.popitem(last=False)[1])

    def _dropped(self, info: ProcessInfo) -> None:
        if self.on_drop is not None:
            self.on_drop(info)

    def entries(self) -> list[ProcessInfo]:
        return list(self._procs.values())
