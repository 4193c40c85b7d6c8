"""The one reader of /proc: what a live process's files say about it.

Used by the BCC backend (an exec's executable, interpreter, stdin, ids,
namespaces, argv/env while the process lives) and at start for every
process already running (``running``, made into observed exec events by
otel_exec.host.procevents). Every function reads with
os.open/os.read, bounded, and returns what it could read: a process may
exit between two reads, and a field that could not be read stays None.
"""
from __future__ import annotations

import os
import stat
import struct
from typing import Collection, Iterator

PROC = "/proc"
READ_MAX = 1 << 16
PF_KTHREAD = 0x00200000
AT_NULL, AT_BASE = 0, 7
_AUXV = struct.Struct("@LL")
_MAPS_MAX = 1 << 22
# Fields of /proc/PID/stat indexed from the state (field 3), the first field
# after the comm's closing parenthesis: comm may hold ') ' and spaces.
STAT_STATE = 3 - 3
STAT_PPID = 4 - 3
STAT_FLAGS = 9 - 3
STAT_STARTTIME = 22 - 3
GONE_STATES = (b"Z", b"X")  # zombie, dead: exited already, no exit event will come


def read(path: str | bytes, limit: int = READ_MAX) -> bytes:
    """Up to limit bytes of a /proc file (os.open/os.read skip the io stack:
    the start reads several files of every process on the host)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        size = 0
        while size < limit:
            chunk = os.read(fd, min(READ_MAX, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def stat_fields(raw: bytes) -> list[bytes]:
    """Fields of /proc/PID/stat from the state on."""
    return raw[raw.rfind(b")") + 2:].split()


def stat_comm(raw: bytes) -> bytes:
    """The comm of /proc/PID/stat: between the first '(' and the last ')'."""
    return raw[raw.find(b"(") + 1:raw.rfind(b")")]


def pids(proc: str = PROC) -> list[int]:
    return [int(name) for name in os.listdir(proc) if name.isdigit()]


def pid_ns(pid: int | str = "self", proc: str = PROC) -> int:
    """The inode of the pid namespace the process lives in (raises OSError
    when it is gone or unreadable)."""
    return os.stat(f"{proc}/{pid}/ns/pid").st_ino


def cgroup_path(pid: int, proc: str = PROC) -> str | None:
    """The process's cgroup v2 path as /proc/PID/cgroup shows it after
    "0::" (relative to the reader's cgroup namespace), or None when it
    cannot be read or the process is in no cgroup v2."""
    try:
        raw = read(f"{proc}/{pid}/cgroup")
    except OSError:
        return None
    for line in raw.splitlines():
        if line.startswith(b"0::"):
            return line[3:].decode("utf-8", "backslashreplace")
    return None


# The records below are plain classes with slots, not dataclasses: the agent
# imports this module at every start (docs/architecture.md, start-up).
class StatusIds:
    """The id lines of /proc/PID/status (real and effective columns)."""

    __slots__ = ("uid", "euid", "gid", "egid", "nspid")

    def __init__(self) -> None:
        self.uid: int | None = None
        self.euid: int | None = None
        self.gid: int | None = None
        self.egid: int | None = None
        self.nspid: list[int] | None = None


def status_ids(pid: int, proc: str = PROC) -> StatusIds | None:
    """None when the file cannot be read; a line that cannot be parsed
    leaves its fields None."""
    try:
        raw = read(f"{proc}/{pid}/status")
    except OSError:
        return None
    ids = StatusIds()
    try:
        for line in raw.splitlines():
            if line.startswith(b"Uid:"):
                parts = line.split()
                ids.uid, ids.euid = int(parts[1]), int(parts[2])
            elif line.startswith(b"Gid:"):
                parts = line.split()
                ids.gid, ids.egid = int(parts[1]), int(parts[2])
            elif line.startswith(b"NSpid:"):
                ids.nspid = [int(x) for x in line.split()[1:]]
    except (ValueError, IndexError):
        pass
    return ids


def environ(pid: int, names: Collection[str] | None = None, proc: str = PROC,
            limit: int = 1 << 20) -> tuple[list[str], int]:
    """The environment a process was started with, and how many entries it
    has; with `names`, only the entries of those variables are decoded and
    kept (read for every process at start, whole environments would cost
    memory by the hundred megabytes). ([], 0) when unreadable."""
    try:
        raw = read(f"{proc}/{pid}/environ", limit)
    except OSError:
        return [], 0
    entries = raw.split(b"\0")
    count = len(entries) - entries.count(b"")
    if names is not None:
        wanted = tuple(name.encode() + b"=" for name in names)
        entries = [e for e in entries if e.startswith(wanted)] if wanted else []
    return [e.decode("utf-8", "backslashreplace") for e in entries if e], count


class Running:
    """A process found running in /proc (``running``)."""

    __slots__ = ("pid", "ppid", "start_ticks", "comm", "exe", "exe_dev", "exe_ino", "cmdline", "cmdline_cut", "ids",
                 "environ", "envc")

    def __init__(self, pid: int, ppid: int, start_ticks: int, comm: bytes, exe: bytes, exe_dev: int, exe_ino: int,
                 cmdline: bytes, cmdline_cut: bool, ids: StatusIds | None, environ: list[str], envc: int) -> None:
        self.pid = pid
        self.ppid = ppid
        self.start_ticks = start_ticks
        self.comm = comm
        self.exe = exe  # b"" for kernel threads or when unreadable
        self.exe_dev = exe_dev
        self.exe_ino = exe_ino
        self.cmdline = cmdline
        self.cmdline_cut = cmdline_cut  # READ_MAX bytes read: the last argument may be partial
        self.ids = ids  # None when unreadable, or not asked for
        self.environ = environ  # the entries asked for (environ())
        self.envc = envc  # the environment's entries, all of them


def running(proc: str = PROC, with_ids: bool = True, env_names: Collection[str] | None = None) -> Iterator[Running]:
    """Every process running now, in the order /proc lists them; its ids
    (/proc/PID/status, the costliest file to read) only `with_ids`; of its
    environment, only the variables in `env_names` when given. One that
    vanishes while being read, or is a zombie already (no exit event will
    come), is skipped; one whose exe cannot be read (kernel thread,
    permission) has exe b"", dev and inode 0."""
    for pid in pids(proc):
        base = f"{proc}/{pid}"
        try:
            raw = read(base + "/stat")
            cmdline = read(base + "/cmdline")
        except OSError:
            continue  # exited meanwhile
        fields = stat_fields(raw)
        if raw.find(b"(") < 0 or len(fields) <= STAT_STARTTIME or fields[STAT_STATE] in GONE_STATES:
            continue
        exe_link = base + "/exe"
        try:
            exe = os.readlink(os.fsencode(exe_link))
            st = os.stat(exe_link)
            exe_dev, exe_ino = st.st_dev, st.st_ino
        except OSError:
            exe, exe_dev, exe_ino = b"", 0, 0
        env, envc = environ(pid, env_names, proc)
        yield Running(pid, int(fields[STAT_PPID]), int(fields[STAT_STARTTIME]), stat_comm(raw), exe,
                      exe_dev, exe_ino, cmdline, len(cmdline) == READ_MAX,
                      status_ids(pid, proc) if with_ids else None, env, envc)


class Snapshot:
    """/proc/PID as read for one exec; None fields could not be read."""

    __slots__ = ("start_ticks", "euid", "egid", "nspid", "exe", "exe_st", "interp_static", "interp", "stdin", "cwd",
                 "mnt_ns", "pid_ns", "uts_ns", "cmdline", "cmdline_whole", "environ", "environ_whole")

    def __init__(self) -> None:
        self.start_ticks: int | None = None
        self.euid: int | None = None
        self.egid: int | None = None
        self.nspid: list[int] | None = None
        self.exe: bytes | None = None
        self.exe_st: os.stat_result | None = None
        self.interp_static = False
        self.interp: tuple[bytes, os.stat_result] | None = None
        self.stdin: tuple[bytes, int] | None = None  # (path, S_IFMT); (b"", 0) when closed
        self.cwd: bytes | None = None
        self.mnt_ns: int | None = None
        self.pid_ns: int | None = None
        self.uts_ns: int | None = None
        self.cmdline: bytes | None = None
        self.cmdline_whole = False
        self.environ: bytes | None = None
        self.environ_whole = False


def snapshot(pid: int, want_cmdline: bool, want_environ: bool, block_limit: int) -> Snapshot | None:
    """What /proc/PID says now; None when the process is gone. cmdline and
    environ are read up to block_limit bytes."""
    base = f"{PROC}/{pid}"
    snap = Snapshot()
    try:
        snap.start_ticks = int(stat_fields(read(f"{base}/stat"))[STAT_STARTTIME])
    except (OSError, ValueError, IndexError):
        return None
    ids = status_ids(pid)
    if ids is not None:
        snap.euid, snap.egid, snap.nspid = ids.euid, ids.egid, ids.nspid
    try:
        snap.exe = os.readlink(f"{base}/exe".encode())
        snap.exe_st = os.stat(f"{base}/exe")
    except OSError:
        snap.exe = snap.exe_st = None
    _interpreter(base, snap)
    try:
        snap.stdin = (os.readlink(f"{base}/fd/0".encode()), stat.S_IFMT(os.stat(f"{base}/fd/0").st_mode))
    except FileNotFoundError:
        snap.stdin = (b"", 0)  # closed (the caller checks that against an exit)
    except OSError:
        snap.stdin = None
    try:
        snap.cwd = os.readlink(f"{base}/cwd".encode())
    except OSError:
        pass
    for attr, ns in (("mnt_ns", "mnt"), ("pid_ns", "pid"), ("uts_ns", "uts")):
        try:
            setattr(snap, attr, os.stat(f"{base}/ns/{ns}").st_ino)
        except OSError:
            pass
    if want_cmdline:
        try:
            snap.cmdline = read(f"{base}/cmdline", block_limit)
            snap.cmdline_whole = len(snap.cmdline) < block_limit and snap.cmdline.endswith(b"\0")
        except OSError:
            pass
    if want_environ:
        try:
            snap.environ = read(f"{base}/environ", block_limit)
            snap.environ_whole = len(snap.environ) < block_limit
        except OSError:
            pass
    return snap


def _interpreter(base: str, snap: Snapshot) -> None:
    """The ELF interpreter as the CO-RE backend finds it: auxv's AT_BASE
    and the file mapped there."""
    try:
        auxv = read(f"{base}/auxv")
    except OSError:
        return
    at_base = None
    complete = False
    for off in range(0, len(auxv) - _AUXV.size + 1, _AUXV.size):
        key, value = _AUXV.unpack_from(auxv, off)
        if key == AT_NULL:
            complete = True
            break
        if key == AT_BASE:
            at_base = value
    if not complete:
        return  # no mm (exiting): unknown
    if not at_base:
        snap.interp_static = True
        return
    try:
        maps = read(f"{base}/maps", _MAPS_MAX)
    except OSError:
        return
    for line in maps.splitlines():
        span = line.split(b" ", 1)[0]
        lo, _, hi = span.partition(b"-")
        try:
            if not int(lo, 16) <= at_base < int(hi, 16):
                continue
        except ValueError:
            return
        link = f"{base}/map_files/{span.decode()}"
        try:
            snap.interp = (os.readlink(link.encode()), os.stat(link))
            return
        except OSError:
            pass
        # map_files needs CAP_CHECKPOINT_RESTORE: the path maps shows,
        # accepted only if that file is the mapped inode.
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or b"\\012" in parts[5] or parts[5].endswith(b" (deleted)"):
            return
        try:
            major, minor = (int(x, 16) for x in parts[3].split(b":"))
            st = os.stat(parts[5])
        except (ValueError, OSError):
            return
        if st.st_ino == int(parts[4]) and (os.major(st.st_dev), os.minor(st.st_dev)) == (major, minor):
            snap.interp = (parts[5], st)
        return


def open_exe(pid: int, proc: str = PROC) -> int | None:
    """A read-only descriptor of the file a live process executed (also
    when deleted or a memfd), or None: gone, or refused (another user's,
    a setuid or capable process, without CAP_SYS_PTRACE)."""
    try:
        return os.open(f"{proc}/{pid}/exe", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
