"""Least privilege: once the programs are attached and /proc is seeded, the
agent needs no capability to read the ring buffer (memory-mapped) or its
counters (memory-mapped too), so it drops every one it does not keep, and
can switch to an unprivileged user (--user).

Kept capabilities are those a source still needs at run time (the BCC
source reads /proc of other users' processes). Dropped means gone from the
effective, permitted, inheritable, ambient and bounding sets, with
no_new_privs set, so nothing the agent could exec would regain them.

Capabilities, the bounding set, the ambient set and no_new_privs belong to
a thread, not to the process: drop() changes only the calling thread, and a
thread started later inherits from the thread that starts it. So the drop
happens while the agent is one thread, before any exporter starts, and
check_threads() reads every thread's status afterwards to prove it.
"""
from __future__ import annotations

import ctypes
import os
import pwd
import threading

from otel_exec.errors import PrivilegeError, PrivilegeLeakError, UsageError

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_SYS_ADMIN, _CAP_PERFMON, _CAP_BPF = 21, 38, 39
CAP_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)


def effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def check_can_load_bpf() -> None:
    """Whether this process may load and attach eBPF programs (both backends)."""
    caps = effective_caps()
    has = lambda cap: bool(caps & (1 << cap))  # noqa: E731
    if has(_CAP_SYS_ADMIN) or (has(_CAP_BPF) and has(_CAP_PERFMON)):
        return
    who = "not running as root" if os.geteuid() != 0 else "root without the needed capabilities"
    raise PrivilegeError(f"{who}: loading eBPF needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); run with sudo")


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(f"cannot drop privileges: {what}: {os.strerror(err)}")


def _set_caps(keep: set[int]) -> None:
    mask = sum(1 << c for c in keep)
    data = (_Data * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = word
        data[i].inheritable = 0
    _check(_libc.capset(ctypes.byref(_Header(_LINUX_CAPABILITY_VERSION_3, 0)), data), "capset")


def resolve_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise UsageError(f"--user {name!r}: no such user") from None


# Nice value of the thread that drains the ring buffer (the caller of
# raise_reader_priority), like auditd's priority_boost.
READER_NICE = -10


def raise_reader_priority() -> int:
    """Let the reader thread preempt the processes it watches: in a burst
    of hundreds of processes exec'ing at once it would otherwise get a
    small share of a core and the ring buffer would fill (test_hostile's
    burst). The reader needs little CPU, so nobody starves. On Linux a
    nice value is per thread. Best effort: without CAP_SYS_NICE the nice
    value stays; an agent started at READER_NICE or higher priority keeps
    it. Returns the nice value the thread had."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    if before > READER_NICE:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, READER_NICE)
        except PermissionError:
            pass
    return before


def restore_other_threads_priority(nice: int) -> None:
    """Threads started by the reader (the exporters, after the privilege
    drop) inherit its raised priority: give them back `nice`. Lowering a
    priority needs no capability."""
    me = str(threading.get_native_id())
    for tid in os.listdir("/proc/self/task"):
        if tid != me:
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            except ProcessLookupError:
                pass  # the thread ended meanwhile


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(CAP_NAMES) - 1


def cap_name(cap: int) -> str:
    return CAP_NAMES[cap] if cap < len(CAP_NAMES) else f"capability {cap}"


# A plain class, not a dataclass: this module is on the start-up path
# (docs/architecture.md, Rules).
class Dropped:
    """What drop() left: what every thread may still hold."""

    def __init__(self, keep: frozenset[int], user: pwd.struct_passwd | None, bounding_cleared: bool) -> None:
        self.keep = keep
        self.user = user
        self.bounding_cleared = bounding_cleared  # False: no CAP_SETPCAP, the bounding set stayed


def drop(user: pwd.struct_passwd | None, keep: set[int]) -> Dropped:
    """Drop the calling thread to `keep` capabilities, as `user` if given.
    Threads that exist already keep theirs (check_threads finds them)."""
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    # The bounding set only limits what an exec could gain, and the agent
    # never execs (no_new_privs below seals that too): dropping from it
    # needs CAP_SETPCAP, which a unit may not grant, so it is best effort.
    bounding_cleared = True
    for cap in range(_last_cap() + 1):
        if cap not in keep and _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            bounding_cleared = False
            break
    if user is not None:
        try:
            # Keep the permitted set across the uid change, then narrow it.
            _check(_libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keep capabilities across setuid")
            os.setgroups([])
            os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
            os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)
        except PermissionError as e:
            raise PrivilegeError(f"cannot switch to user {user.pw_name}: {e.strerror} "
                                 "(--user needs CAP_SETUID and CAP_SETGID)") from None
        _check(_libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), "reset keep-capabilities")
    _set_caps(keep)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")
    return Dropped(frozenset(keep), user, bounding_cleared)


def _thread_excess(st: dict[str, str], dropped: Dropped) -> str | None:
    """What one thread's /proc status holds beyond `dropped`, or None."""
    allowed = sum(1 << c for c in dropped.keep)
    sets = {"CapEff": allowed, "CapPrm": allowed, "CapInh": 0, "CapAmb": 0}
    if dropped.bounding_cleared:
        sets["CapBnd"] = allowed
    for key, allowed_mask in sets.items():
        extra = int(st[key], 16) & ~allowed_mask
        if extra:
            first = (extra & -extra).bit_length() - 1
            return f"holds {cap_name(first)} in {key}"
    if st["NoNewPrivs"] != "1":
        return "has no_new_privs unset"
    if dropped.user is not None:
        uids, gids = set(st["Uid"].split()), set(st["Gid"].split())
        if uids != {str(dropped.user.pw_uid)} or gids != {str(dropped.user.pw_gid)}:
            return f"runs as uid {st['Uid'].split()[1]} gid {st['Gid'].split()[1]}, not as {dropped.user.pw_name}"
        if st["Groups"]:
            return f"keeps supplementary groups {st['Groups']}"
    return None


def check_threads(dropped: Dropped, tasks: str = "/proc/self/task") -> None:
    """Refuse to run (PrivilegeLeakError) if any thread of this process
    holds more than drop() left to the thread that called it."""
    for tid in sorted(os.listdir(tasks), key=int):
        try:
            with open(f"{tasks}/{tid}/status") as f:
                st = {k: v.strip() for k, _, v in (line.partition(":") for line in f)}
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        excess = _thread_excess(st, dropped)
        if excess:
            raise PrivilegeLeakError(f"thread {tid} ({st['Name']}) {excess} after the privilege drop; "
                                     "refusing to run (it started before the drop, or something gave it back)")
