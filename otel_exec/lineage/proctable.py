"""The user-space process table: what image each live host pid runs, and
its lineage.

Filled at start by the observed exec events of the processes found in /proc
(otel_exec.host.procevents), then kept current by exec and exit events. A forked
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

from collections import OrderedDict
from typing import Callable

from otel_exec.model.events import ExecEvent, ExitEvent, UnreportedExecEvent
from otel_exec.model.process import ProcessInfo
from otel_exec.native import native_module

DEFAULT_MAX_ENTRIES = 65536
"""Default bound: twice the kernel's default pid_max of 32768, so a default
host fits whole. An entry costs about 200 bytes plus its strings (argv, ids,
paths): tens of MiB when full. Hosts that raise pid_max to 4194304 keep
their 65536 most recently active processes."""


def _image_parent(table: ProcessTable, ev: ExecEvent) -> ProcessInfo | None:
    """ProcessTable.image_parent's reference: the entry for the exec's image
    parent, or None. An entry of an earlier holder of ``ev.image_ppid``
    (its exit missed, or not yet read because the parent left and its pid
    was reused before this exec's record was written) started at another
    tick: it is not the parent, and an exec whose kernel record lacks the
    parent's image must not take its exec id."""
    procs = table._procs
    info = procs.get(ev.image_ppid)
    if info is not None:
        procs.move_to_end(ev.image_ppid)  # a use, as get() counts it
        started = ev.parent_start_ticks
        if started is not None and started != info.start_ticks:
            return None
    return info


def _on_exec(table: ProcessTable, ev: ExecEvent) -> tuple[ProcessInfo, ProcessInfo | None]:
    """ProcessTable.on_exec's reference: install the new image of
    ``ev.host_pid``; return it and the process's previous image (a
    re-exec), or None."""
    procs = table._procs
    pid = ev.host_pid
    previous = procs.pop(pid, None)
    if previous is not None and previous.start_ticks != ev.start_ticks:
        table._dropped(previous)  # a reused pid's stale entry: not this process's past
        previous = None
    info = ProcessInfo(pid, ev.host_ppid, ev.start_ticks, ev.exec_id, ev.parent_exec_id,
                       ev.comm, ev.pathname, ev.argv, False, ev.timestamp)
    procs[pid] = info  # a key just popped: it goes last, the most recent use
    if len(procs) > table.max_entries:
        table.evicted += 1
        table._dropped(procs.popitem(last=False)[1])
    return info, previous


def _on_exit(table: ProcessTable, ev: ExitEvent) -> ProcessInfo | None:
    """ProcessTable.on_exit's reference: remove the process; return its
    entry marked with how it ended, or None if the table did not know it."""
    # _pop's work, written out: an exit per exec, on the hot path.
    info = table._procs.pop(ev.pid, None)
    if info is not None:
        if info.start_ticks != ev.start_ticks:
            table._dropped(info)  # a reused pid's stale entry
            return None
        info.exit_code, info.signal = ev.exit_code, ev.signal
    return info


# The per-exec mechanics in C (the table's per-event methods, spans' ids):
# otel_exec.lineage._lineage_native when it is built and native_wanted().
LINEAGE_NATIVE = native_module("otel_exec.lineage._lineage_native")


class ProcessTable:
    # Slots: _lineage_native's methods read them by offset, not by name.
    __slots__ = ("max_entries", "evicted", "on_drop", "_procs")

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.evicted = 0  # entries dropped to stay within max_entries
        # Told of every entry that leaves without an exit event (evicted, or
        # stale after a missed exit), so its open span can still be ended
        # (otel_exec.lineage.spans).
        self.on_drop: Callable[[ProcessInfo], None] | None = None
        self._procs: OrderedDict[int, ProcessInfo] = OrderedDict()

    def __len__(self) -> int:
        return len(self._procs)

    def knows(self, ev: ExecEvent) -> bool:
        """Whether the table holds ev's process already (same pid and start):
        an observed event for it is not needed, events know more."""
        info = self._procs.get(ev.host_pid)
        return info is not None and info.start_ticks == ev.start_ticks

    def get(self, pid: int) -> ProcessInfo | None:
        """The entry for a host pid; looking it up counts as a use."""
        info = self._procs.get(pid)
        if info is not None:
            self._procs.move_to_end(pid)
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

    # The per-event methods: _lineage_native's when it is built and
    # native_wanted() (the same results, no Python frame per call), else
    # their reference above.
    image_parent: Callable[[ProcessTable, ExecEvent], ProcessInfo | None] = \
        LINEAGE_NATIVE.image_parent if LINEAGE_NATIVE is not None else _image_parent
    on_exec: Callable[[ProcessTable, ExecEvent], tuple[ProcessInfo, ProcessInfo | None]] = \
        LINEAGE_NATIVE.on_exec if LINEAGE_NATIVE is not None else _on_exec
    on_exit: Callable[[ProcessTable, ExitEvent], ProcessInfo | None] = \
        LINEAGE_NATIVE.on_exit if LINEAGE_NATIVE is not None else _on_exit

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

    def _dropped(self, info: ProcessInfo) -> None:
        if self.on_drop is not None:
            self.on_drop(info)

    def entries(self) -> list[ProcessInfo]:
        return list(self._procs.values())
