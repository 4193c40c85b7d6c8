"""Host identity, clock conversion and the stable id of an exec.

An exec id must come out the same whether it is computed from a kernel
event (task->start_boottime, bprm->file) or from /proc for a process that
was already running when the agent started (/proc/PID/stat start time,
os.stat('/proc/PID/exe')), so both sides reduce their inputs to the same
units first: start time in clock ticks since boot, exe device in user-space
st_dev encoding.
"""
from __future__ import annotations

import hashlib
import os
import socket
import struct
import time
from dataclasses import dataclass, field

MACHINE_ID_PATHS = ("/etc/machine-id", "/var/lib/dbus/machine-id")
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

# Kernel dev_t inside the kernel (and so in BPF): MAJOR << 20 | MINOR.
_KERNEL_MINOR_BITS = 20
_KERNEL_MINOR_MASK = (1 << _KERNEL_MINOR_BITS) - 1

_CLOCK_SAMPLES = 5
_EXEC_ID_FIELDS = struct.Struct("<QQQQ")  # pid, start ticks, exe dev, exe inode


def kernel_dev_to_user(kdev: int) -> int:
    """Kernel-internal dev_t (MAJOR << 20 | MINOR) -> st_dev encoding."""
    return os.makedev(kdev >> _KERNEL_MINOR_BITS, kdev & _KERNEL_MINOR_MASK)


def _read_id(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _clock_bracket() -> tuple[int, int]:
    """(width, offset): a REALTIME read between two BOOTTIME reads."""
    before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    real = time.clock_gettime_ns(time.CLOCK_REALTIME)
    after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    return after - before, real - (before + after) // 2


def _realtime_minus_boottime_ns() -> int:
    # The narrowest bracket of a few tries bounds the error by its half-width
    # (usually well under a microsecond), whatever preemption hit the others.
    return min(_clock_bracket() for _ in range(_CLOCK_SAMPLES))[1]


@dataclass(frozen=True, slots=True)
class HostIdentity:
    """What stays fixed for this host until it reboots.

    ``realtime_minus_boottime_ns`` is sampled once: if the wall clock is
    stepped later (NTP, an admin), converted times shift with it only when a
    new identity is taken with ``current()``; exec ids do not depend on it.
    """

    machine_id: str
    boot_id: str
    clk_tck: int
    realtime_minus_boottime_ns: int
    # What every exec id hashes first (the C decoder hashes it too), and the
    # hash state after it, so that each id costs one copy and one small update.
    _id_host_part: bytes = field(init=False, repr=False, compare=False)
    _id_prefix: hashlib._Hash = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # NUL-terminated: neither id can contain NUL, so the split between
        # them is unambiguous.
        host_part = f"{self.machine_id}\0{self.boot_id}\0".encode("utf-8", "surrogateescape")
        prefix = hashlib.blake2b(digest_size=16)
        prefix.update(host_part)
        object.__setattr__(self, "_id_host_part", host_part)
        object.__setattr__(self, "_id_prefix", prefix)

    @classmethod
    def current(cls) -> HostIdentity:
        """This host, now. The machine id falls back to the hostname where
        neither machine-id file exists (minimal containers); the boot id is
        empty where /proc does not offer one, which only weakens exec ids
        across reboots."""
        machine_id = next(filter(None, map(_read_id, MACHINE_ID_PATHS)), "") or socket.gethostname()
        return cls(
            machine_id=machine_id,
            boot_id=_read_id(BOOT_ID_PATH),
            clk_tck=os.sysconf("SC_CLK_TCK"),
            realtime_minus_boottime_ns=_realtime_minus_boottime_ns(),
        )

    def boot_ns_to_epoch_ns(self, boot_ns: int) -> int:
        """CLOCK_BOOTTIME ns (BPF's bpf_ktime_get_boot_ns) -> ns since epoch."""
        return boot_ns + self.realtime_minus_boottime_ns

    @property
    def ns_per_tick(self) -> int:
        return 1_000_000_000 // self.clk_tck

    def ticks_from_boot_ns(self, ns: int) -> int:
        """Boot-time ns -> clock ticks, truncated as the kernel does for
        /proc/PID/stat field 22 (nsec_to_clock_t)."""
        return ns // self.ns_per_tick

    def exec_id(self, pid: int, start_ticks: int, exe_dev: int, exe_inode: int) -> str:
        """32 hex chars naming one process image on this host and boot.

        ``pid`` is the host pid, ``start_ticks`` the process start in clock
        ticks since boot, ``exe_dev`` (st_dev encoding) and ``exe_inode`` the
        executable; a process without one (kernel thread) passes 0, 0. A
        process that execs the very same file again keeps its exec id: the
        span layer tells the two images apart by exec time.
        """
        h = self._id_prefix.copy()
        h.update(_EXEC_ID_FIELDS.pack(pid, start_ticks, exe_dev, exe_inode))
        return h.hexdigest()
