"""The on-disk spool: every encoded record is written here before it is
sent, and removed once the collector has it.

Per signal, an append-only sequence of segment files holds length-prefixed
records; a cursor file names the first record not yet acknowledged. The
reader (the export thread) sends from the cursor onwards, oldest first, and
moves the cursor after each batch the collector accepted (or rejected for
good: the export loop acks that too, so it blocks nothing behind it). So a
record the agent read from the kernel survives a collector outage, a
SIGKILL and a crash of the agent, and is sent after the next start (at
least once: a batch sent but not yet acknowledged is sent again, so every
record carries a stable id a backend can drop duplicates by).

Records appended in this run are also kept in memory (up to
RECENT_BYTES) until acknowledged, so the export thread sends them without
reading them back; the files are read only for what an earlier run left, or
what fell out of that window during a collector outage (or lag). A batch
read back is one pread, its records views of that buffer.

The agent runs as root and the directory may belong to its --user, who can
put anything in it. So the directory is opened once, checked, and every file
in it is created (O_EXCL), opened (O_NOFOLLOW, then checked: regular, one
link, a trusted owner) or removed relative to that descriptor, never by a
path. Segments are opened once and read through their descriptors: one
deleted while the export thread reads it (eviction, or an operator freeing
disk space) cannot make a read fail half way.

A disk that will not take a write (full, over quota, read-only, failing)
does not stop capture: the records of that drain, and the following ones,
wait in memory (HELD_BYTES per signal) and are sent first; writing is tried
again every second. When memory is full too, full_action says which
records give way; each is counted.

Why not SQLite: an INSERT per record costs more CPU than the agent's whole
per-exec budget, and a record is never updated or queried, only appended
and read back in order: segments give the same guarantees for a write()
per batch. The spool is bounded: when it exceeds max_bytes the oldest
segments are deleted and their records counted as evicted.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import pwd
import re
import resource
import stat
import struct
import threading
import time
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Callable

from otel_exec.host import safefs
from otel_exec.errors import PrivilegeError, UsageError
from otel_exec.native import native_module

log = logging.getLogger(__name__)

_LEN = struct.Struct("<I")
frame = _LEN.pack  # the length prefix of a record in a segment
SEGMENT_BYTES = 4 * 1024 * 1024
# A segment being written that the collector has all of is left for a new
# one once it holds this much: deleted at once, it frees the disk while the
# collector keeps up. Creating one file and unlinking another are journaled
# metadata updates, far dearer than an append: at low exec rates a smaller
# size meant a new segment at nearly every request.
SENT_SEGMENT_BYTES = 1024 * 1024
_IOV_MAX = 1024  # Linux's limit on buffers per writev()
# Read beyond the estimated size of a batch read back, for records larger than the average.
_READ_SLACK = 64 * 1024
# Appended records kept in memory for the export thread. During a storm up to
# two batches wait (the thread leaves the part of a batch that is not full
# and is woken once a full batch more came), plus what comes while it wakes:
# two default batches (batch.DEFAULT_MAX_EXPORT_BATCH_SIZE) of a storm's
# records with room to spare; else part of each is read back from the
# files, which costs the export thread more than the request. More waits
# only while the collector lags, and is read back then: a larger window let
# such a lag lift peak RSS (BENCHMARKS.md).
RECENT_BYTES = 4 * 1024 * 1024
# Records the disk would not take, per signal, kept until sent.
HELD_BYTES = 8 * 1024 * 1024
_DISK_RETRY_S = 1.0
# The cursor and heartbeat files are rewritten in place: a fixed width, so a
# shorter value never leaves the tail of a longer one behind.
_CURSOR_WIDTH = 32
_HEARTBEAT_WIDTH = 96
HEARTBEAT = "heartbeat"
LOCK = "lock"  # a file earlier versions flocked; the directory is flocked now
SIGNALS = ("logs", "traces")
FULL_ACTIONS = ("drop-oldest", "drop-newest")
_SEGMENT_NAME = re.compile(r"(logs|traces)-([0-9]{1,18})\.seg")
_OWN_FILES = {LOCK, HEARTBEAT, *(f"{s}.cursor" for s in SIGNALS)}
# Every record is a message framed as a field 2 (LEN) of its scope block
# (otel_exec.export.otlp.encode._in_scope): that tag, then a varint of the rest's length.
_RECORD_TAG = 0x12

def _write_framed(fd: int, records: list[bytes]) -> None:
    """Each record behind its length prefix (frame()), writev() straight
    from the records: no joined copy of a drain's worth of them (hundreds of
    KiB at the peak of a storm); at most _IOV_MAX buffers per call, a short
    write completed. The reference of _spool_native.write_framed."""
    parts: list[bytes] = [b""] * (2 * len(records))
    parts[0::2] = map(frame, map(len, records))
    parts[1::2] = records
    for i in range(0, len(parts), _IOV_MAX):
        chunk = parts[i:i + _IOV_MAX]
        written = os.writev(fd, chunk)
        if written < sum(map(len, chunk)):  # short write: the rest of the chunk in one piece
            rest = b"".join(chunk)[written:]
            while rest:
                rest = rest[os.write(fd, rest):]


# _spool_native's write_framed (the same bytes, no Python object per record)
# when it is built and native_wanted(), else the reference above.
_SPOOL_NATIVE = native_module("otel_exec.export._spool_native")
write_framed: Callable[[int, list[bytes]], None] = (
    _SPOOL_NATIVE.write_framed if _SPOOL_NATIVE is not None else _write_framed)


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int
    # A batch from the memory-only window: its records are those before this
    # sequence number (0: a batch from the segments).
    held: int = field(default=0, compare=False)


class _Recent:
    """Records appended in one write, not yet acknowledged: records[first:]
    start at (segment, offset) of their segment file and end at end."""

    __slots__ = ("segment", "offset", "end", "records", "first", "nbytes")

    def __init__(self, segment: int, offset: int, records: list[bytes], nbytes: int) -> None:
        self.segment = segment
        self.offset = offset
        self.end = offset + nbytes
        self.records = records
        self.first = 0
        self.nbytes = nbytes


class _Segment:
    """One segment file, open for as long as the spool needs it."""

    __slots__ = ("fd", "size", "count", "started_ns")

    def __init__(self, fd: int, size: int, count: int | None, started_ns: int) -> None:
        self.fd = fd
        self.size = size
        self.count = count  # records appended this run; None: an earlier run's, not counted yet
        self.started_ns = started_ns


@dataclass
class Batch:
    records: list[bytes | memoryview]  # read back from a segment: views into the buffer read
    end: Position  # where the cursor goes once the batch is acknowledged


def valid_record(data: bytes | memoryview, start: int, n: int) -> bool:
    """Whether the n bytes at start are a record as the agent frames them
    (a corrupt length prefix almost never lands on one)."""
    if n < 2 or data[start] != _RECORD_TAG:
        return False
    value = shift = 0
    for i in range(start + 1, min(start + n, start + 11)):
        b = data[i]
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value == start + n - i - 1
    return False


def _split_framed(view: memoryview, max_records: int) -> list[bytes | memoryview]:
    """The records framed (frame()) at the start of view, as views of it:
    at most max_records, up to the first one not whole or not a record
    (valid_record). The reference of _spool_native.split_framed."""
    records: list[bytes | memoryview] = []
    p = 0
    while p + 4 <= len(view) and len(records) < max_records:
        n = _LEN.unpack_from(view, p)[0]
        if p + 4 + n > len(view) or not valid_record(view, p + 4, n):
            break
        records.append(view[p + 4:p + 4 + n])
        p += 4 + n
    return records


# _spool_native's split_framed (a C step per record, the views the only
# Python objects) when it is built and native_wanted(), else the reference.
split_framed: Callable[[memoryview, int], list[bytes | memoryview]] = (
    _SPOOL_NATIVE.split_framed if _SPOOL_NATIVE is not None else _split_framed)


def _next_record(data: bytes, start: int) -> int | None:
    """The offset of the next frame at or after start that holds a valid
    record, or None."""
    at = data.find(bytes((_RECORD_TAG,)), start + 4)
    while at != -1:
        p = at - 4
        n = _LEN.unpack_from(data, p)[0]
        if p + 4 + n <= len(data) and valid_record(data, at, n):
            return p
        at = data.find(bytes((_RECORD_TAG,)), at + 1)
    return None


class SpoolDirectory:
    """The spool directory as one checked descriptor, and the files in it.

    Opened as root before the privilege drop. With an owner (--user), the
    directory and the files created here are handed to that user (fchown),
    so that after the drop the agent, as that user, can create new
    segments; files found here are never chowned."""

    def __init__(self, path: str, owner: pwd.struct_passwd | None = None, allow_group_read: bool = False) -> None:
        self.path = path
        self.owner = owner
        self.trust = frozenset({0, os.geteuid(), *((owner.pw_uid,) if owner else ())})
        self.unsafe_files = 0  # symlinks, hard links, foreign owners where a spool file should be
        self.foreign_files = 0  # names the spool does not use
        self.fd = self._open(allow_group_read)

    def _open(self, allow_group_read: bool) -> int:
        parent, name = os.path.split(os.path.abspath(self.path))
        if not name:
            raise UsageError(f"spool directory {self.path}: not a directory name")
        try:
            parent_fd = safefs.open_dir(parent, trust=self.trust, create_mode=0o755)
        except safefs.UnsafePath as e:
            raise UsageError(f"spool directory {self.path}: {e}") from None
        except OSError as e:
            raise UsageError(f"spool directory {self.path}: {e.strerror}") from None
        try:
            created = False
            try:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
                created = True
            except FileExistsError:
                pass
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UsageError(f"spool directory {self.path} is a symlink or not a directory; "
                                 "--spool-dir must name the directory itself") from None
            raise UsageError(f"spool directory {self.path}: {e.strerror}") from None
        finally:
            os.close(parent_fd)
        try:
            st = os.fstat(fd)
            mode = stat.S_IMODE(st.st_mode)
            if st.st_uid not in self.trust:
                raise UsageError(f"spool directory {self.path} belongs to uid {st.st_uid}, not to the agent"
                                 f"{' or --user' if self.owner else ''}")
            if mode & 0o022:
                raise UsageError(f"spool directory {self.path} has mode {mode:04o}: others could plant or swap "
                                 "files in it (chmod 0700)")
            # It holds command lines: nobody else reads it either (a
            # hostPath the kubelet makes is 0755).
            keep = 0o7700 | (mode & 0o050 if allow_group_read else 0)
            if mode & ~keep:
                os.fchmod(fd, mode & keep)
            if created or st.st_uid == 0:
                self.give(fd)  # a directory of root's: the agent's own, to hand over
            return fd
        except BaseException:
            os.close(fd)
            raise

    def give(self, fd: int) -> None:
        """Hand what fd is (made by the agent) to the owner."""
        if self.owner is None or self.owner.pw_uid == os.geteuid():
            return
        try:
            os.fchown(fd, self.owner.pw_uid, self.owner.pw_gid)
        except PermissionError:
            raise PrivilegeError(f"cannot hand the spool directory {self.path} to --user "
                                 f"{self.owner.pw_name} (needs CAP_CHOWN)") from None

    def create(self, name: str, flags: int) -> int:
        """A new file, O_EXCL: FileExistsError if the name is taken."""
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
        try:
            self.give(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_own(self, name: str) -> int:
        """The spool's own file `name` (lock, cursor, heartbeat), read-write:
        created, or opened if it is safe; anything else found under that
        name (a symlink, a hard link, a file of an untrusted user) is
        removed, counted and replaced."""
        for _ in range(3):
            try:
                return self.create(name, os.O_RDWR)
            except FileExistsError:
                pass
            try:
                return safefs.open_file(self.fd, name, os.O_RDWR, trust=self.trust)
            except safefs.UnsafePath as e:
                self.unsafe(name, str(e))
            except OSError as e:
                if e.errno not in (errno.EISDIR, errno.ENXIO):
                    raise
                self.unsafe(name, e.strerror or "cannot be opened")
            try:
                os.unlink(name, dir_fd=self.fd)  # the name only: never what a link points to
            except IsADirectoryError:
                raise UsageError(f"spool directory {self.path}: {name} is a directory") from None
        raise UsageError(f"spool directory {self.path}: {name} keeps being replaced")

    def open_segment(self, name: str) -> int | None:
        """An earlier run's segment, read-only, or None if it is not a
        regular, singly linked file of a trusted owner (never read then)."""
        try:
            if not stat.S_ISREG(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode):
                self.unsafe(name, "not a regular file; not read")
                return None
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            self.unsafe(name, f"{e.strerror}; not read")
            return None
        try:
            safefs.check_file(fd, name, self.trust)
        except safefs.UnsafePath as e:
            os.close(fd)
            self.unsafe(name, f"{e}; not read")
            return None
        return fd

    def unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def unsafe(self, name: str, why: str) -> None:
        self.unsafe_files += 1
        log.warning("spool directory %s: %s", self.path, why if why.startswith(name) else f"{name}: {why}")

    def close(self) -> None:
        os.close(self.fd)


class _OwnFile:
    """A small file of the spool's own (cursor, heartbeat), rewritten in
    place by one pwrite. On a disk that takes no write (read-only, full of
    inodes) it is read if it exists, and opened for writing at the next
    write that finds the disk writable again."""

    def __init__(self, directory: SpoolDirectory, name: str) -> None:
        self.dir = directory
        self.name = name
        self.fd = self._open()
        self._first = b""
        if self.fd is None:  # what an earlier run left is still worth reading
            fd = directory.open_segment(name)
            if fd is not None:
                try:
                    self._first = os.pread(fd, 256, 0)
                finally:
                    os.close(fd)

    def _open(self) -> int | None:
        try:
            return self.dir.open_own(self.name)
        except OSError:
            return None

    def read(self, n: int) -> bytes:
        return os.pread(self.fd, n, 0) if self.fd is not None else self._first[:n]

    def write(self, data: bytes) -> None:
        if self.fd is None:
            self.fd = self._open()
        if self.fd is not None:
            try:
                os.pwrite(self.fd, data, 0)
            except OSError:
                pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class SignalSpool:
    """The segments of one signal ("logs", "traces"). add(), write_added()
    and append() are called from the reader thread, read()/ack()/forget()
    from the export thread."""

    def __init__(self, directory: SpoolDirectory, signal: str, max_bytes: int, found: dict[int, str],
                 full_action: str = FULL_ACTIONS[0]) -> None:
        """found: the segment files of this signal in the directory, by
        number (opened here: before the privilege drop)."""
        self.dir = directory
        self.signal = signal
        self.max_bytes = max_bytes
        self.full_action = full_action
        self.evicted = 0  # records deleted unsent because the spool was full
        self.write_failed = 0  # records the disk did not take (kept in memory)
        self.dropped_disk_full = 0  # records dropped: the disk and the memory window were full
        self.corrupt = 0  # corrupt or cut records skipped (each skip may hide more than one)
        self.segment_lost = 0  # records of segments deleted by someone else
        self.cursor_reset = 0  # cursor values that pointed nowhere
        self._lock = threading.Lock()
        # Records add()ed since the last write_added(), framed there: per
        # record on the reader's hot path, add is the list's own append
        # (no Python call), so the list is emptied, never replaced.
        self._added: list[bytes] = []
        self.add: Callable[[bytes], None] = self._added.append
        self._segs: dict[int, _Segment] = {}
        self._bytes = 0  # the size of every segment, summed
        for seg, name in sorted(found.items()):
            fd = self.dir.open_segment(name)
            if fd is not None:
                st = os.fstat(fd)
                self._segs[seg] = _Segment(fd, st.st_size, None, st.st_mtime_ns)
                self._bytes += st.st_size
        try:
            self._cursor_file = _OwnFile(self.dir, f"{signal}.cursor")
        except BaseException:  # a start that fails (the name is a directory) leaves no segment open
            for s in self._segs.values():
                os.close(s.fd)
            raise
        loaded = self._parse_cursor()
        # Never append to a segment of an earlier run (its tail may be a
        # record cut short by a crash), nor number one at or below a name
        # already taken or the cursor.
        self._next_seg = max([*found, loaded.segment if loaded else 0]) + 1
        self._write: _Segment | None = None  # the segment appended to; None: start a new one
        self._write_seg = 0
        self._cursor = self._valid_cursor(loaded)
        if self._cursor != loaded:
            self._store_cursor(self._cursor)
        self._recent: deque[_Recent] = deque()
        self._recent_bytes = 0
        self._held: deque[bytes] = deque()  # records the disk did not take, oldest first
        self._held_bytes = 0
        self._held_first = 1  # sequence number of _held[0]
        self._held_sent = 1  # records before this one are in a batch being sent
        self._disk_error: str | None = None  # why the last write failed; None: the disk takes writes
        self._retry_at = 0.0
        self._memory_full_logged = False
        self._episode_logged = False  # whether this episode's start was logged (then its end is too)
        self._logged_error = ""
        self._logged_at = 0.0
        self._warned_corrupt = False
        try:
            self._new_segment()  # before the drop: an empty directory of root's still works
        except OSError as e:
            self._disk_failed(e, 0)

    # -- files ----------------------------------------------------------
    def _name(self, seg: int) -> str:
        return f"{self.signal}-{seg:012d}.seg"

    def _new_segment(self) -> None:
        while True:
            seg = self._next_seg
            try:
                fd = self.dir.create(self._name(seg), os.O_RDWR | os.O_APPEND)
                break
            except FileExistsError:
                self.dir.unsafe(self._name(seg), "appeared in the spool; not used")
                self._next_seg += 1
        self._next_seg += 1
        self._segs[seg] = self._write = _Segment(fd, 0, 0, time.time_ns())
        self._write_seg = seg

    def _parse_cursor(self) -> Position | None:
        try:
            seg, off = self._cursor_file.read(_CURSOR_WIDTH).split()
            return Position(int(seg), int(off))
        except ValueError:  # empty (first run) or garbled
            return None

    def _valid_cursor(self, pos: Position | None) -> Position:
        """Where reading starts: the cursor if it names a record the
        segments hold, else the oldest one (the next segment for an offset
        past its segment's end)."""
        old = sorted(s for s in self._segs if s != self._write_seg)
        if not old:
            return Position(self._next_seg, 0)
        if pos is not None and pos.segment < old[0]:
            return Position(old[0], 0)  # the segments before it were sent and deleted
        if pos is not None and pos.segment in self._segs and pos.offset <= self._segs[pos.segment].size:
            return pos
        if pos is not None and pos.segment < old[-1]:
            why, pos = "points into a segment that is gone or shorter", Position(min(s for s in old if s > pos.segment), 0)
        else:
            why, pos = "is missing or past every segment", Position(old[0], 0)
        self.cursor_reset += 1
        log.warning("spool %s: the %s cursor %s; reading from segment %d", self.dir.path, self.signal, why, pos.segment)
        return pos

    def _store_cursor(self, pos: Position) -> None:
        """One pwrite of a few bytes, within one page: a SIGKILL leaves the
        old or the new value, never a mix. A failed write only means a
        resend after the next start."""
        self._cursor_file.write(f"{pos.segment} {pos.offset}".ljust(_CURSOR_WIDTH - 1).encode() + b"\n")

    def _drop_segment(self, seg: int) -> None:
        """Forget a segment (deleted, or about to be) other than the one
        written to; the caller holds the lock."""
        s = self._segs.pop(seg)
        self._bytes -= s.size
        os.close(s.fd)
        while self._recent and self._recent[0].segment <= seg:
            self._recent_bytes -= self._recent.popleft().nbytes

    # -- writer ---------------------------------------------------------
    def first_added(self) -> bytes | None:
        """The oldest record add()ed since the last write_added()."""
        added = self._added
        return added[0] if added else None

    def write_added(self) -> int:
        """Write the records add()ed since the last call, in one write() (the
        end of a drain of the ring buffer); returns how many."""
        added = self._added
        if not added:  # a drain that read only what no sink exports (others' exits)
            return 0
        # A copy, not a swap: add (this list's append) is taken once by the
        # export queue and the sink, and the records written stay in memory
        # (_recent) for the export thread.
        records = added[:]
        added.clear()
        self.append(records)
        return len(records)

    def append(self, records: list[bytes]) -> None:
        """Write records, each framed (see frame()): one write() per drain of
        the ring buffer."""
        count = len(records)
        if not count:
            return
        size = sum(map(len, records)) + _LEN.size * count
        with self._lock:
            if self._disk_error is not None and time.monotonic() < self._retry_at:
                self.write_failed += count
                self._hold(records)
                return
            try:
                self._write_disk(records, size)
            except OSError as e:
                self._disk_failed(e, count)
                self._hold(records)
                return
            if self._disk_error is not None:
                if self._episode_logged:
                    log.warning("spool %s: %s segments are written again (%d records could not be, %d of them "
                                "dropped)", self.dir.path, self.signal, self.write_failed, self.dropped_disk_full)
                    self._memory_full_logged = False
                self._disk_error = None
            self._evict()

    def _write_disk(self, records: list[bytes], size: int) -> None:
        w = self._write
        if w is None or (w.size and w.size + size > SEGMENT_BYTES):
            self._write = None
            self._new_segment()
            w = self._write
            assert w is not None
        try:
            self._write_all(w.fd, records)
        except OSError:
            try:
                os.ftruncate(w.fd, w.size)  # no partial frame left behind
            except OSError:
                self._write = None  # its tail is unknown: append to a new segment
            raise
        seg = self._write_seg
        self._recent.append(_Recent(seg, w.size, records, size))
        self._recent_bytes += size
        while self._recent_bytes > RECENT_BYTES:
            # Still on disk: read back from there once the cursor gets to it.
            self._recent_bytes -= self._recent.popleft().nbytes
        w.size += size
        self._bytes += size
        w.count = (w.count or 0) + len(records)

    # Each record framed, in writev() calls (write_framed).
    _write_all = staticmethod(write_framed)

    def _disk_failed(self, e: OSError, count: int) -> None:
        """A write (or a segment's creation) failed; the caller holds the lock."""
        self.write_failed += count
        self._retry_at = time.monotonic() + _DISK_RETRY_S
        if self._write is not None and self._write.size:
            # The next try starts a new segment: this one is then deleted once
            # sent, which on a small disk may be what frees the space.
            self._write = None
            self._delete_sent()
        self._release_deleted()
        if self._disk_error is None:
            self._disk_error = e.strerror or str(e)
            # A small disk flips between full and not every few seconds:
            # one warning a minute for the same cause is enough.
            now = time.monotonic()
            self._episode_logged = self._disk_error != self._logged_error or now - self._logged_at >= 60
            if not self._episode_logged:
                return
            self._logged_error, self._logged_at = self._disk_error, now
            log.warning("spool %s: cannot write %s records (%s): they wait in memory (up to %d MiB) and are sent "
                        "first; writing is tried again every %.0f s", self.dir.path, self.signal, self._disk_error,
                        HELD_BYTES >> 20, _DISK_RETRY_S)

    def _release_deleted(self) -> None:
        """Segments someone deleted (to free disk space, say) are dropped,
        their records counted: the space is freed only once they are closed."""
        for seg, s in list(self._segs.items()):
            if s is not self._write and os.fstat(s.fd).st_nlink == 0:
                self._lose_segment(seg, "was deleted by someone else")

    def _lose_segment(self, seg: int, why: str) -> None:
        s = self._segs[seg]
        start = self._cursor.offset if seg == self._cursor.segment else 0
        lost = self._count_records(s.fd, s.size, start) if s.count is None or start else s.count
        self.segment_lost += lost
        log.warning("spool %s: %s %s; its %d unsent records are lost", self.dir.path, self._name(seg), why, lost)
        self._drop_segment(seg)
        if self._cursor.segment == seg:
            self._cursor = Position(min(self._segs, default=self._next_seg), 0)

    def _hold(self, records: list[bytes]) -> None:
        """Keep records in memory while the disk takes none; the caller
        holds the lock."""
        held = self._held
        for rec in records:
            if self._held_bytes + len(rec) > HELD_BYTES:
                self._memory_full()
                if self.full_action == "drop-oldest":
                    # The oldest not in a batch being sent (those keep their
                    # sequence numbers: they are the first `sending`).
                    sending = self._held_sent - self._held_first
                    while self._held_bytes + len(rec) > HELD_BYTES and len(held) > sending:
                        self._held_bytes -= len(held[sending])
                        del held[sending]
                        self.dropped_disk_full += 1
                if self._held_bytes + len(rec) > HELD_BYTES:
                    self.dropped_disk_full += 1
                    continue
            held.append(rec)
            self._held_bytes += len(rec)

    def _memory_full(self) -> None:
        if not self._memory_full_logged:
            self._memory_full_logged = True
            log.warning("spool %s: the disk and the %d MiB memory window for %s are full: dropping the %s records "
                        "(--spool-full-action %s), counted as %s_dropped_disk_full", self.dir.path,
                        HELD_BYTES >> 20, self.signal, self.full_action.removeprefix("drop-"), self.full_action,
                        self.signal)

    def _evict(self) -> None:
        """Delete the oldest segments while over max_bytes (never the one
        being written); the caller holds the lock."""
        while self._bytes > self.max_bytes and len(self._segs) > 1:
            oldest = min(self._segs)
            s = self._segs[oldest]
            if s is self._write:
                break
            # Records before the cursor were sent: only the rest is lost.
            if self._cursor.segment == oldest and self._cursor.offset:
                self.evicted += self._count_records(s.fd, s.size, self._cursor.offset)
            else:
                self.evicted += s.count if s.count is not None else self._count_records(s.fd, s.size, 0)
            self.dir.unlink(self._name(oldest))
            self._drop_segment(oldest)
            if self._cursor.segment <= oldest:
                self._cursor = Position(min(self._segs), 0)

    @staticmethod
    def _count_records(fd: int, size: int, start: int) -> int:
        n = 0
        try:
            data = os.pread(fd, size - start, start)
        except OSError:
            return 0
        pos = 0
        while pos + 4 <= len(data):
            pos += 4 + _LEN.unpack_from(data, pos)[0]
            n += 1
        return n

    # -- reader ---------------------------------------------------------
    def read(self, max_records: int, max_bytes: int) -> Batch | None:
        """The next records, or None when everything was sent. Records held
        in memory come first (a crash would lose them), then the segments
        from the cursor. A batch with no records moves the cursor past
        what cannot be read (a record a crash cut short, a corrupt one)."""
        with self._lock:
            if self._held:
                return self._read_held(max_records, max_bytes)
            pos = self._cursor
            for seg in sorted(s for s in self._segs if s >= pos.segment):
                s = self._segs[seg]
                offset = pos.offset if seg == pos.segment else 0
                if s.size > offset:
                    break
            else:
                return None  # everything written was read
            head = self._recent[0] if self._recent else None
            # The next unsent record is the first one memory holds (also when
            # the cursor is still at the end of the segment before it).
            if head is not None and (head.segment, head.offset) == (seg, offset):
                return self._read_recent(max_records, max_bytes)
            if s is not self._write and os.fstat(s.fd).st_nlink == 0:
                self._lose_segment(seg, "was deleted by someone else")
                return Batch([], self._cursor)
            fd, size, last = os.dup(s.fd), s.size, s is self._write or seg == max(self._segs)
            if s.count:
                # Records this run wrote: about what max_records of them take,
                # not a whole max_bytes of which most would be read again.
                max_bytes = min(max_bytes, (s.size // s.count) * max_records * 5 // 4 + _READ_SLACK)
        try:
            return self._read_file(fd, seg, offset, size, last, max_records, max_bytes)
        finally:
            os.close(fd)

    def _read_held(self, max_records: int, max_bytes: int) -> Batch:
        """From the memory-only window; the caller holds the lock."""
        records: list[bytes | memoryview] = []
        size = 0
        for rec in self._held:
            if len(records) >= max_records or (records and size + len(rec) > max_bytes):
                break
            records.append(rec)
            size += len(rec)
        self._held_sent = self._held_first + len(records)
        return Batch(records, Position(self._cursor.segment, self._cursor.offset, held=self._held_sent))

    def _read_recent(self, max_records: int, max_bytes: int) -> Batch:
        """From the records in memory; the caller holds the lock."""
        records: list[bytes | memoryview] = []
        size = 0
        end = self._cursor
        for chunk in self._recent:
            rest = chunk.records[chunk.first:]
            rest_bytes = chunk.end - chunk.offset - 4 * len(rest)
            if len(records) + len(rest) <= max_records and size + rest_bytes <= max_bytes:
                records += rest  # the whole chunk: most batches are a few chunks
                size += rest_bytes
                end = Position(chunk.segment, chunk.end)
                continue
            # Part of this chunk: what max_records leaves room for, cut
            # where max_bytes is reached (the batch's first record goes in
            # whatever its size). Sums and searches, not a Python step per
            # record: the export thread does this for every batch.
            part = rest[:max_records - len(records)]
            part_bytes = sum(map(len, part))
            if size + part_bytes > max_bytes:
                sizes = list(accumulate(map(len, part)))
                n = bisect_right(sizes, max_bytes - size) or (0 if records else 1)
                part = part[:n]
                part_bytes = sizes[n - 1] if n else 0
            if part:
                records += part
                end = Position(chunk.segment, chunk.offset + _LEN.size * len(part) + part_bytes)
            return Batch(records, end)
        return Batch(records, end)

    def _read_file(self, fd: int, seg: int, offset: int, size: int, last: bool, max_records: int,
                   max_bytes: int) -> Batch | None:
        """Records from segment seg at offset (size: the bytes it holds;
        last: no newer segment follows)."""
        try:
            data = os.pread(fd, min(size - offset, max_bytes), offset)
            if len(data) >= 4 and 4 + _LEN.unpack_from(data)[0] > len(data):
                # A first record larger than max_bytes: read all of it.
                data += os.pread(fd, min(size - offset, 4 + _LEN.unpack_from(data)[0]) - len(data),
                                 offset + len(data))
        except OSError as e:
            with self._lock:
                if seg in self._segs and not last:
                    self._lose_segment(seg, f"cannot be read ({e.strerror})")
                    return Batch([], self._cursor)
            return None
        # Views into the one buffer read: the request is the records' only
        # copy (export_request joins them). data holds at most max_bytes (or
        # the one larger first record): what it holds whole fits the batch.
        records = split_framed(memoryview(data), max_records)
        if records:
            return Batch(records, Position(seg, offset + _LEN.size * len(records) + sum(map(len, records))))
        # Nothing readable at the cursor: a record cut short, or corrupt.
        whole = data if len(data) == size - offset else self._pread_all(fd, offset, size)
        resume = _next_record(whole, 0)
        with self._lock:
            if self._cursor != Position(seg, offset):
                return Batch([], self._cursor)  # moved meanwhile (evicted, acked): try again from there
            if resume is None and last and seg == self._write_seg:
                return None  # cannot happen for what this run wrote; nothing to skip to either
            self.corrupt += 1
            if not self._warned_corrupt:
                self._warned_corrupt = True
                log.warning("spool %s: %s has a corrupt or cut record at offset %d: skipped (counted as %s_spool_corrupt)",
                            self.dir.path, self._name(seg), offset, self.signal)
        if resume is not None:
            return Batch([], Position(seg, offset + resume))
        later = [s for s in self._segs if s > seg]
        return Batch([], Position(min(later), 0) if later else Position(seg, size))

    @staticmethod
    def _pread_all(fd: int, offset: int, size: int) -> bytes:
        try:
            return os.pread(fd, size - offset, offset)
        except OSError:
            return b""

    def ack(self, end: Position) -> None:
        """The export loop is done with everything before `end` (sent, or
        rejected for good): drop it."""
        with self._lock:
            if end.held:
                while self._held and self._held_first < end.held:
                    self._held_bytes -= len(self._held.popleft())
                    self._held_first += 1
                self._held_sent = self._held_first
                return
            if end <= self._cursor:
                return
            self._cursor = end
            w = self._write
            if w is not None and end.segment == self._write_seg and end.offset >= w.size >= SENT_SEGMENT_BYTES:
                self._write = None
            self._delete_sent()
            self._drop_recent(end)
            self._store_cursor(end)

    def _delete_sent(self) -> None:
        """Delete the segments no longer written to that the cursor is past
        (a segment left after a failed write: as soon as it is read to its
        end); the caller holds the lock."""
        cur = self._cursor
        for seg, s in list(self._segs.items()):
            if s is not self._write and (seg < cur.segment or (seg == cur.segment and cur.offset >= s.size)):
                self.dir.unlink(self._name(seg))
                self._drop_segment(seg)

    def read_all(self, end: Position) -> bool:
        """Whether a batch read up to `end` holds every record pending (none
        held in memory or written after it)."""
        with self._lock:
            if end.held:
                if end.held < self._held_first + len(self._held):
                    return False
                end = self._cursor
            return all(s.size <= (end.offset if seg == end.segment else 0)
                       for seg, s in self._segs.items() if seg >= end.segment)

    def unread(self, end: Position) -> None:
        """The batch read up to `end` is not being sent after all (it is
        read again later): held records are no longer in a batch being sent."""
        if end.held:
            with self._lock:
                self._held_sent = self._held_first

    def forget(self, end: Position) -> None:
        """Drop the in-memory copies of the records before `end` (a batch
        being sent: its request holds them). If it fails, they are read
        back from the segment files. Records only memory holds stay."""
        if end.held:
            return
        with self._lock:
            self._drop_recent(end)

    def _drop_recent(self, end: Position) -> None:
        recent = self._recent
        while recent and (recent[0].segment, recent[0].end) <= (end.segment, end.offset):
            self._recent_bytes -= recent.popleft().nbytes
        if recent and recent[0].segment == end.segment and recent[0].offset < end.offset:
            # end falls inside the first chunk: skip its records up to end
            # (their framed sizes summed, the first sum reaching end found).
            chunk = recent[0]
            framed = list(accumulate(map(_LEN.size.__add__, map(len, chunk.records[chunk.first:]))))
            n = bisect_left(framed, end.offset - chunk.offset) + 1
            chunk.offset += framed[n - 1]
            chunk.first += n

    # -- state ----------------------------------------------------------
    def pending_bytes(self) -> int:
        with self._lock:
            cur = self._cursor
            on_disk = sum(s.size - (cur.offset if seg == cur.segment else 0)
                          for seg, s in self._segs.items() if seg >= cur.segment)
            return on_disk + self._held_bytes

    def oldest_pending_ns(self) -> int | None:
        """When the oldest segment with unsent records was started."""
        with self._lock:
            cur = self._cursor
            pending = [s.started_ns for seg, s in self._segs.items()
                       if seg > cur.segment or (seg == cur.segment and s.size > cur.offset)]
        return min(pending, default=None)

    def stats(self) -> dict[str, int]:
        """Counters, without the signal's name."""
        return {"spool_evicted": self.evicted, "spool_write_failed": self.write_failed,
                "dropped_disk_full": self.dropped_disk_full, "spool_corrupt": self.corrupt,
                "spool_segment_lost": self.segment_lost, "spool_cursor_reset": self.cursor_reset,
                "spool_held_bytes": self._held_bytes}

    def close(self) -> None:
        """Close the files; what is pending stays known, for the final report."""
        with self._lock:
            for s in self._segs.values():
                if s.fd >= 0:
                    os.close(s.fd)
                    s.fd = -1
            self._write = None
            self._cursor_file.close()


@dataclass(frozen=True)
class Gap:
    """The interval between the last heartbeat of an earlier run and now."""

    start_ns: int
    end_ns: int
    seconds: float
    # How far the wall clock was stepped in between (negative: back), as
    # far as CLOCK_BOOTTIME tells on the same boot; 0 when it was not.
    clock_step_s: float


# A step of the wall clock shorter than this is not reported.
CLOCK_STEP_MIN_S = 1.0


def _boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class Spool:
    """The spool directory: one SignalSpool per signal, the heartbeat that
    tells the next start how long nobody watched, and a lock so that two
    agents never share it. Made before the privilege drop; starts no
    thread."""

    # Of --spool-max-bytes: exec log records are most of the bytes.
    SHARES = {"logs": 0.75, "traces": 0.25}

    def __init__(self, path: str, max_bytes: int, owner: pwd.struct_passwd | None = None, *,
                 allow_group_read: bool = False, full_action: str = FULL_ACTIONS[0], boot_id: str = "") -> None:
        if full_action not in FULL_ACTIONS:
            raise UsageError(f"--spool-full-action must be one of {', '.join(FULL_ACTIONS)}")
        self.dir = SpoolDirectory(path, owner, allow_group_read)
        self.boot_id = boot_id
        self.clock_steps = 0
        self._signals: dict[str, SignalSpool] = {}
        try:
            # On the directory itself: no file to create, so a read-only or
            # full disk still has its lock.
            fcntl.flock(self.dir.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.dir.close()
            raise UsageError(f"spool directory {path} is in use by another otel-exec "
                             "(give each agent its own --spool-dir)") from None
        try:
            self._heartbeat = _OwnFile(self.dir, HEARTBEAT)
            self._previous_heartbeat = self._heartbeat.read(_HEARTBEAT_WIDTH).split()
            found = self._scan()
            for name in self.SHARES:
                self._signals[name] = SignalSpool(self.dir, name, int(max_bytes * self.SHARES[name]),
                                                  found[name], full_action)
        except BaseException:
            self._close_files()
            raise
        self._last_beat = 0.0  # 0: this run has not watched anything yet

    def _scan(self) -> dict[str, dict[int, str]]:
        """Segment files by signal and number; other names are counted."""
        found: dict[str, dict[int, str]] = {name: {} for name in self.SHARES}
        foreign = []
        for name in os.listdir(self.dir.fd):
            m = _SEGMENT_NAME.fullmatch(name)
            if m:
                found[m[1]][int(m[2])] = name
            elif name not in _OWN_FILES:
                foreign.append(name)
        if foreign:
            self.dir.foreign_files = len(foreign)
            log.warning("spool directory %s: ignoring %d files it does not use: %s", self.dir.path, len(foreign),
                        ", ".join(sorted(foreign)[:5]) + (", ..." if len(foreign) > 5 else ""))
        # Every segment stays open until sent: make room for them all. (Linux
        # caps both limits at fs.nr_open: neither is ever RLIM_INFINITY.)
        want = sum(map(len, found.values())) + 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        return found

    def signal(self, name: str) -> SignalSpool:
        return self._signals[name]

    def gap(self) -> Gap | None:
        """From the heartbeat of an earlier run to now, or None if there is none.
        The duration comes from CLOCK_BOOTTIME when the heartbeat was written
        on this boot, so a wall clock stepped in between changes it not."""
        try:
            wall = int(self._previous_heartbeat[0])
        except (IndexError, ValueError):
            return None
        now, boot_now = time.time_ns(), _boottime_ns()
        try:
            boot, boot_id = int(self._previous_heartbeat[1]), self._previous_heartbeat[2].decode()
        except (IndexError, ValueError, UnicodeDecodeError):
            boot, boot_id = -1, ""
        if boot_id and boot_id == self.boot_id and 0 <= boot <= boot_now:
            seconds = (boot_now - boot) / 1e9
            step = (now - wall) / 1e9 - seconds
        else:  # another boot, or an old heartbeat: the wall clock is all there is
            seconds = max(0.0, (now - wall) / 1e9)
            step = min(0.0, (now - wall) / 1e9)
        if abs(step) < CLOCK_STEP_MIN_S:
            step = 0.0
        else:
            self.clock_steps += 1
            log.warning("spool %s: the wall clock was stepped by %.1f s since the last heartbeat; the gap's "
                        "duration is measured on CLOCK_BOOTTIME", self.dir.path, step)
        return Gap(now - int(seconds * 1e9), now, seconds, step)

    def beat(self) -> None:
        """At most once a second: record that the agent is watching."""
        now = time.monotonic()
        if now - self._last_beat >= 1.0:
            self._last_beat = now
            self._write_heartbeat()

    def _write_heartbeat(self) -> None:
        """Wall clock, CLOCK_BOOTTIME and boot id, in one pwrite (see
        SignalSpool._store_cursor); on a full disk the old one stays."""
        line = f"{time.time_ns()} {_boottime_ns()} {self.boot_id or '-'}".ljust(_HEARTBEAT_WIDTH - 1) + "\n"
        self._heartbeat.write(line.encode())

    def stats(self) -> dict[str, int]:
        """Counters of the directory (those of each signal: SignalSpool.stats)."""
        return {"spool_unsafe_files": self.dir.unsafe_files, "spool_foreign_files": self.dir.foreign_files,
                "clock_steps": self.clock_steps}

    def close(self) -> None:
        if self._last_beat:  # a run that never started watching leaves the last one's
            self._write_heartbeat()
        self._close_files()

    def _close_files(self) -> None:
        for s in self._signals.values():
            s.close()
        if hasattr(self, "_heartbeat"):
            self._heartbeat.close()
        self.dir.close()
