"""What the BCC backend knows of each host pid's current holder beyond
what the kernel map `procs` tells: its parent and start time, and the
exec_id of the images seen.

The kernel side only knows the forks it saw. For a process that forked
before the agent started, the parent and start time come from /proc,
read once at start (seed()) and kept up to date by the execs and exits
since; a lost exit record would leave stale knowledge behind, so then the
seeded knowledge is dropped (distrust()).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from otel_exec.host import procfs

_IMAGES_MAX = 65536
_NEVER = 1 << 63


@dataclass(slots=True)
class Known:
    """What user space knows of the current holder of a host pid: its
    parent (None once that died: reparented) and start time."""

    ppid: int | None
    ppid_kthread: bool
    start_ticks: int | None


class Lineage:
    def __init__(self) -> None:
        self._known: dict[int, Known] = {}
        self._children: dict[int, set[int]] = {}
        self._kthreads: set[int] = {0}
        self._known_since = _NEVER  # the knowledge holds for events after this boot time
        self._images: dict[tuple[int, int], str] = {}  # (host pid, image token) -> exec_id

    def seed(self) -> None:
        """Parents and start times of the processes running now, for execs
        of processes whose fork the kernel side did not see."""
        known, children, kthreads = self._known, self._children, self._kthreads
        for pid in procfs.pids():
            try:
                fields = procfs.stat_fields(procfs.read(f"/proc/{pid}/stat"))
            except OSError:
                continue
            if len(fields) <= procfs.STAT_STARTTIME or fields[procfs.STAT_STATE] in procfs.GONE_STATES:
                continue
            ppid = int(fields[procfs.STAT_PPID])
            if int(fields[procfs.STAT_FLAGS]) & procfs.PF_KTHREAD:
                kthreads.add(pid)
            known[pid] = Known(ppid, False, int(fields[procfs.STAT_STARTTIME]))
            children.setdefault(ppid, set()).add(pid)
        for k in known.values():
            k.ppid_kthread = k.ppid in kthreads
        self._known_since = time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def distrust(self) -> None:
        """An exit was lost: what was learnt may be stale, forget it."""
        self._known.clear()
        self._children.clear()
        self._known_since = _NEVER

    def trusted(self, pid: int, boot_ns: int) -> Known | None:
        """What is known of pid, for an event at boot_ns."""
        if boot_ns <= self._known_since:
            return None
        return self._known.get(pid)

    def learn(self, pid: int, ppid: int | None, ppid_kthread: bool, start_ticks: int | None) -> None:
        """pid exec'd: its parent and start time as the exec found them."""
        self._unlink(pid)
        self._known[pid] = Known(ppid, ppid_kthread, start_ticks)
        if ppid is not None:
            self._children.setdefault(ppid, set()).add(pid)

    def exited(self, pid: int, boot_ns: int) -> int | None:
        """pid exited at boot_ns: forget it (its children are reparented);
        the start time known for it, if any."""
        k = self._unlink(pid)
        for child in self._children.pop(pid, ()):
            c = self._known.get(child)
            if c is not None and c.ppid == pid:
                c.ppid = None  # reparented
        self._kthreads.discard(pid)
        if k is not None and boot_ns > self._known_since:
            return k.start_ticks
        return None

    def _unlink(self, pid: int) -> Known | None:
        k = self._known.pop(pid, None)
        if k is not None and k.ppid is not None:
            siblings = self._children.get(k.ppid)
            if siblings is not None:
                siblings.discard(pid)
        return k

    def remember_image(self, pid: int, token: int, exec_id: str) -> None:
        self._images[(pid, token)] = exec_id
        if len(self._images) > _IMAGES_MAX:
            del self._images[next(iter(self._images))]

    def image_exec_id(self, pid: int, token: int) -> str:
        """exec_id of the image pid began at boot time token, "" if unknown."""
        return self._images.get((pid, token), "")
