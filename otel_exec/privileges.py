"""Least privilege: once the programs are attached and /proc is seeded, the
agent needs no capability to read the ring buffer (memory-mapped) or its
counters (memory-mapped too), so it drops every one it does not keep, and
can switch to an unprivileged user (--user).

Kept capabilities are those a source still needs at run time (the BCC
source reads /proc of other users' processes). Dropped means gone from the
effective, permitted, inheritable, ambient and bounding sets, with
no_new_privs set, so nothing the agent could exec would regain them.
"""
from __future__ import annotations

import ctypes
import os
import pwd

from .errors import PrivilegeError, UsageError

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_DAC_READ_SEARCH = 2
CAP_SYS_PTRACE = 19
CAP_LAST = 63


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


def raise_reader_priority() -> None:
    """Let the reader thread preempt the processes it watches: in a burst
    of hundreds of processes exec'ing at once it would otherwise get a
    small share of a core and the ring buffer would fill (test_hostile's
    burst). The reader needs little CPU, so nobody starves. On Linux a
    nice value is per thread: the export threads, started earlier, keep
    theirs. Best effort: without CAP_SYS_NICE the nice value stays."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, READER_NICE)
    except PermissionError:
        pass


def drop(user: pwd.struct_passwd | None, keep: set[int], own: list[str]) -> None:
    """Drop to `keep` capabilities, as `user` if given. `own` lists paths
    (the spool) that user must be able to write: they are chowned first."""
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    # The bounding set only limits what an exec could gain, and the agent
    # never execs (no_new_privs below seals that too): dropping from it
    # needs CAP_SETPCAP, which a unit may not grant, so it is best effort.
    for cap in range(CAP_LAST + 1):
        if cap not in keep and _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break
    if user is not None:
        try:
            for path in own:
                for root, dirs, files in os.walk(path):
                    for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                        os.chown(name, user.pw_uid, user.pw_gid)
            # Keep the permitted set across the uid change, then narrow it.
            _check(_libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keep capabilities across setuid")
            os.setgroups([])
            os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
            os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)
        except PermissionError as e:
            raise PrivilegeError(f"cannot switch to user {user.pw_name}: {e.strerror} "
                                 "(--user needs CAP_SETUID, CAP_SETGID and CAP_CHOWN)") from None
        _check(_libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), "reset keep-capabilities")
    _set_caps(keep)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")
