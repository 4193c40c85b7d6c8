"""Executable identity per exec (docs/fields.md#executable-identity): which
file the process executed, read by a bounded worker, cached.

The reader thread opens the executed file while the exec is fresh, and
proves it is the one the kernel loaded: the process's own /proc/PID/exe
(procfs.open_exe) when the agent may open it, else the reported path,
accepted only if fstat gives the device, inode and ctime the kernel
reported. Without capabilities (CO-RE after the privilege drop) the path
is what works: /proc/PID/exe of another user's process, of a setuid one,
or of one holding capabilities is refused to a process without
CAP_SYS_PTRACE. The open descriptor goes to the worker, which computes
otel_exec.host.exefile.identify; the reader waits for it at most
`wait_s`, then the exec record says "pending" and the value follows on
the span.

The cache is keyed by the kernel's (dev, inode, ctime) of the executed
file and keeps the size it read: an exec storm of one binary costs one
computation. It holds at most `cache_entries`, dropping the one stored
first. A flag found before the worker (changed, gone, ...) is not cached:
the next exec tries again; a read error on the worker is (unreadable).
"""
from __future__ import annotations

import os
import queue
import re
import stat
import threading
from collections import OrderedDict

from otel_exec.host import exefile, procfs
from otel_exec.model.events import ExecEvent, SharedExec
from otel_exec.model.executable import (BUSY, BY_PATH, CHANGED, GONE, MEMFD, NO_PATH, PENDING, UNREADABLE,
                                        ExecutableIdentity)

DEFAULT_WAIT_S = 0.005
DEFAULT_CACHE_ENTRIES = 4096
DEFAULT_SHA256_MAX_BYTES = 256 << 20
QUEUE_MAX = 256

PENDING_IDENTITY = ExecutableIdentity(PENDING)
_FLAGGED = {status: ExecutableIdentity(status) for status in (BUSY, CHANGED, GONE, MEMFD, NO_PATH, UNREADABLE)}
# Without these the executed file cannot be told from another (the BCC
# backend, when the process was gone before /proc was read).
_IDENTIFYING_FIELDS = ("dev", "inode", "ctime")


# The `done` of every filled Slot.
_FILLED = threading.Event()
_FILLED.set()


class Slot:
    """One file's identity: filled once by the worker (or at once with a
    flag), read by the reader thread and the span encoder.

    A filled slot waits on nothing: its own Event (with its Condition,
    lock and deque, most of an entry's memory) goes, and `done` is one
    Event set for good, shared by every filled slot; a waiter that took
    the slot's own Event before still sees it set."""

    __slots__ = ("result", "done")

    def __init__(self, result: ExecutableIdentity | None = None) -> None:
        self.result = result
        self.done = _FILLED if result is not None else threading.Event()

    def fill(self, result: ExecutableIdentity) -> None:
        self.result = result
        self.done.set()
        self.done = _FILLED


class ExecutableIdentities:
    def __init__(self, sha256_max_bytes: int | None = DEFAULT_SHA256_MAX_BYTES,
                 cache_entries: int = DEFAULT_CACHE_ENTRIES, wait_s: float = DEFAULT_WAIT_S) -> None:
        self.sha256_max_bytes = sha256_max_bytes
        self.cache_entries = max(1, cache_entries)
        self.wait_s = wait_s
        # Executables by the kernel's (dev, inode, ctime); scripts, which the
        # kernel does not identify, by fstat's (dev, inode, ctime, size).
        self._cache: OrderedDict[tuple[int, ...], Slot] = OrderedDict()
        # Computed identities by the decoder's SharedExec of the execs that
        # found them (not a script's, and with every identifying field): the
        # execs of one command share that object, and their file with it,
        # so a storm's exec finds its identity without a key to build and
        # hash. Bounded as the cache, and only for a SharedExec the decoder
        # keeps (`repeats`).
        self._by_shared: dict[SharedExec, ExecutableIdentity] = {}
        self._queue: queue.Queue[tuple[int, Slot, bool] | None] = queue.Queue(QUEUE_MAX)
        self._thread: threading.Thread | None = None
        self.computed = 0
        self.cache_hits = 0
        self.flagged = 0
        self.read_errors = 0

    def start(self) -> None:
        """Start the worker: after the privilege drop, like every thread."""
        self._thread = threading.Thread(target=self._work, name="otel-exec-identity", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=5)
            except queue.Full:
                return  # a daemon thread: it ends with the agent
            self._thread.join(timeout=5)
            self._thread = None

    def on_exec(self, ev: ExecEvent) -> Slot | None:
        """Set ev.executable_identity (and ev.script_identity for a `#!`
        script); the slot whose value is still to come, else None."""
        shared = ev.shared
        if shared is not None and not ev.unavailable:
            known = self._by_shared.get(shared)
            if known is not None:
                self.cache_hits += 1
                ev.executable_identity = known
                return None
        script = ev.interp != ev.cmdpath and ev.cmdpath
        if script:
            if ev.unavailable and "interp" in ev.unavailable:
                ev.unavailable += ("script_identity",)  # whether it was a script is not known
            else:
                self._script(ev)
        if ev.unavailable and any(name in ev.unavailable for name in _IDENTIFYING_FIELDS):
            ev.unavailable += ("executable_identity",)
            self.flagged += 1
            return None
        key = (ev.dev, ev.inode, ev.ctime)
        slot = self._cache.get(key)
        if slot is not None:
            self.cache_hits += 1
        else:
            slot = self._open_and_queue(ev, key)
        result = slot.result
        if result is None and slot.done.wait(self.wait_s):
            result = slot.result
        if result is None:
            ev.executable_identity = PENDING_IDENTITY
        else:
            ev.executable_identity = result
            slot = None
            if shared is not None and shared.repeats and not script and not ev.unavailable:
                self._remember(shared, result)
        return slot

    def _remember(self, shared: SharedExec, result: ExecutableIdentity) -> None:
        by_shared = self._by_shared
        by_shared[shared] = result
        if len(by_shared) > self.cache_entries:
            del by_shared[next(iter(by_shared))]

    def _store(self, key: tuple[int, ...], slot: Slot) -> None:
        cache = self._cache
        cache[key] = slot
        if len(cache) > self.cache_entries:
            cache.popitem(last=False)

    def _flag(self, status: str) -> Slot:
        self.flagged += 1
        return Slot(_FLAGGED[status])

    def _open_and_queue(self, ev: ExecEvent, key: tuple[int, int, int]) -> Slot:
        fd = procfs.open_exe(ev.host_pid)
        if fd is not None and not _same_file(fd, ev):
            os.close(fd)  # the pid exec'd again or is another process now
            fd = None
        if fd is None:
            if ev.pathname.startswith("/memfd:"):
                return self._flag(MEMFD)
            # The resolved path, else the path as exec'd (also what is left
            # with --no-field paths); not a script's, which names the script.
            status = NO_PATH if "pathname" in ev.unavailable else GONE
            paths = [ev.pathname] if ev.pathname.startswith("/") else []
            if ev.cmdpath != ev.pathname and ev.interp == ev.cmdpath and ev.cmdpath.startswith("/"):
                paths.append(ev.cmdpath)
            for i, path in enumerate(paths):
                try:
                    fd = open_regular(path.encode() if "\\x" not in path else _unescaped(path), ev)
                except PermissionError:
                    found = UNREADABLE
                except OSError:
                    found = GONE
                else:
                    found = CHANGED
                if fd is not None:
                    break
                if i == 0 and paths[0] is ev.pathname:
                    status = found
            if fd is None:
                return self._flag(status)
        slot = Slot()
        if not self._submit(fd, slot, False):
            return self._flag(BUSY)
        self._store(key, slot)
        return slot

    def _script(self, ev: ExecEvent) -> None:
        """Set ev.script_identity: the script a `#!` exec ran. The kernel
        reports no inode for it, so it is opened by the path given to
        execve, from the process's working directory, and flagged as such;
        without that directory (BCC, process gone) it is unavailable."""
        if not ev.cmdpath.startswith("/") and "pwd" in ev.unavailable:
            ev.unavailable += ("script_identity",)
            self.flagged += 1
            return
        ev.script_identity = self._script_identity(ev)

    def _script_identity(self, ev: ExecEvent) -> ExecutableIdentity:
        path = ev.cmdpath if ev.cmdpath.startswith("/") else os.path.join(ev.pwd, ev.cmdpath)
        try:
            fd = open_regular(path, None)
        except PermissionError:
            fd, status = None, UNREADABLE
        except OSError:
            fd, status = None, GONE
        if fd is None:
            self.flagged += 1
            return _FLAGGED[status]
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size)
        slot = self._cache.get(key)
        if slot is not None:
            os.close(fd)
            self.cache_hits += 1
        else:
            slot = Slot()
            if not self._submit(fd, slot, True):
                self.flagged += 1
                return _FLAGGED[BUSY]
            self._store(key, slot)
        if slot.done.wait(self.wait_s) and slot.result is not None:
            return slot.result
        return PENDING_IDENTITY  # a script's value does not follow later

    def _submit(self, fd: int, slot: Slot, script: bool) -> bool:
        try:
            self._queue.put_nowait((fd, slot, script))
            return True
        except queue.Full:
            os.close(fd)
            return False

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            fd, slot, script = job
            try:
                size = os.fstat(fd).st_size
                result = exefile.identify(fd, size, self.sha256_max_bytes)
                if script:
                    result = ExecutableIdentity(BY_PATH, result.size, result.sha256, result.htlhash)
                self.computed += 1
            except OSError:
                self.read_errors += 1
                result = _FLAGGED[UNREADABLE]
            finally:
                os.close(fd)
            slot.fill(result)

    def stats(self) -> dict[str, int]:
        return {"executable_identity_computed": self.computed,
                "executable_identity_cache_hits": self.cache_hits,
                "executable_identity_flagged": self.flagged,
                "executable_identity_read_errors": self.read_errors}


_ESCAPED_BYTE = re.compile(rb"\\x([0-9a-f]{2})")


def _unescaped(path: str) -> bytes:
    """The bytes of a path whose non-UTF-8 bytes the decoder wrote as \\xNN
    (backslashreplace). A real backslash followed by xNN reads the same: the
    identity check of open_regular rejects a wrong guess."""
    return _ESCAPED_BYTE.sub(lambda m: bytes([int(m.group(1), 16)]), path.encode())


def open_regular(path: str | bytes, ev: ExecEvent | None) -> int | None:
    """A read-only descriptor of the regular file at path, when it is the
    one ev executed (ev None: any regular file); None when it is not.

    A path the agent did not resolve itself may name anything by now (a
    directory on the way replaced by a symlink to /dev): it is opened with
    O_PATH first, which runs no driver's open and reads nothing, checked,
    and only then opened for reading through /proc/self/fd, which reopens
    that inode and resolves no path again."""
    handle = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if ev is not None and not _same_file(handle, ev):
            return None
        if ev is None and not stat.S_ISREG(os.fstat(handle).st_mode):
            raise FileNotFoundError(path)
        return os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    finally:
        os.close(handle)


def _same_file(fd: int, ev: ExecEvent) -> bool:
    """Whether fd is the file the exec loaded, as the kernel reported it."""
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (stat.S_ISREG(st.st_mode) and st.st_dev == ev.dev and st.st_ino == ev.inode
            and st.st_ctime_ns == ev.ctime)
