"""The on-disk spool: every encoded record is written here before it is
sent, and removed once the collector has it.

Per signal, an append-only sequence of segment files holds length-prefixed
records; a cursor file names the first record not yet acknowledged. The
reader (the export thread) sends from the cursor onwards, oldest first, and
moves the cursor after each batch the collector accepted. So a record the
agent read from the kernel survives a collector outage, a SIGKILL and a
crash of the agent, and is sent after the next start (at least once: a
batch sent but not yet acknowledged is sent again, so every record carries a
stable id a backend can drop duplicates by).

Records appended in this run are also kept in memory (up to
RECENT_BYTES) until acknowledged, so the export thread sends them without
reading them back; the files are read only for what an earlier run left, or
what fell out of that window during a long collector outage.

Why not SQLite: an INSERT per record costs more CPU than the agent's whole
per-exec budget, and a record is never updated or queried, only appended
and read back in order: segments give the same guarantees for a write()
per batch. The spool is bounded: when it exceeds max_bytes the oldest
segments are deleted and their records counted as evicted.
"""
from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

_LEN = struct.Struct("<I")
frame = _LEN.pack  # the length prefix of a record in a segment
SEGMENT_BYTES = 4 * 1024 * 1024
_IOV_MAX = 1024  # Linux's limit on buffers per writev()
# Appended records kept in memory for the export thread: a few batches' worth.
# More waits only while the collector lags, and is read back from the files
# then: a larger window let such a lag lift peak RSS (BENCHMARKS.md).
RECENT_BYTES = 2 * 1024 * 1024
# The cursor file is rewritten in place: a fixed width, so a shorter value
# never leaves the tail of a longer one behind.
_CURSOR_WIDTH = 32
HEARTBEAT = "heartbeat"


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


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


@dataclass
class Batch:
    records: list[bytes]
    end: Position  # where the cursor goes once the batch is acknowledged


def open_spool_dir(path: str) -> Path:
    """The spool directory, created 0700; an existing one must be ours."""
    d = Path(path)
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = d.stat()
    except OSError as e:
        raise UsageError(f"spool directory {path}: {e.strerror}") from None
    if st.st_uid != os.geteuid():
        if os.geteuid() != 0:
            raise UsageError(f"spool directory {path} belongs to uid {st.st_uid}, not to the agent")
        # An earlier run with --user left it to that user: root takes it back.
        for root, dirs, files in os.walk(d):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, 0, 0)
    if st.st_mode & 0o077:
        os.chmod(d, 0o700)  # a spool holds command lines: nobody else reads it
    return d


class SignalSpool:
    """The segments of one signal ("logs", "traces"). append() is called
    from the reader thread, read()/ack() from the export thread."""

    def __init__(self, directory: Path, signal: str, max_bytes: int) -> None:
        self.dir = directory
        self.signal = signal
        self.max_bytes = max_bytes
        self.evicted = 0  # records deleted unsent because the spool was full
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}  # segment -> bytes
        self._counts: dict[int, int] = {}  # segment -> records appended this run
        self._oldest_ns: dict[int, int] = {}  # segment -> when its first record was written
        for seg in sorted(self._segment_numbers()):
            self._sizes[seg] = self._path(seg).stat().st_size
            self._oldest_ns[seg] = self._path(seg).stat().st_mtime_ns
        # Never append to a segment of an earlier run: its tail may be a
        # record cut short by a crash.
        self._write_seg = max(self._sizes, default=0) + 1
        self._fd = self._open_segment(self._write_seg)
        self._cursor_fd = os.open(self._cursor_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        self._cursor = self._load_cursor()
        self._recent: deque[_Recent] = deque()
        self._recent_bytes = 0

    # -- files ----------------------------------------------------------
    def _path(self, seg: int) -> Path:
        return self.dir / f"{self.signal}-{seg:012d}.seg"

    def _segment_numbers(self) -> list[int]:
        prefix = f"{self.signal}-"
        return [int(p.name[len(prefix):-4]) for p in self.dir.glob(f"{prefix}*.seg")]

    def _open_segment(self, seg: int) -> int:
        fd = os.open(self._path(seg), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        self._sizes.setdefault(seg, 0)
        self._counts[seg] = 0
        return fd

    def _cursor_path(self) -> Path:
        return self.dir / f"{self.signal}.cursor"

    def _load_cursor(self) -> Position:
        try:
            seg, off = os.pread(self._cursor_fd, _CURSOR_WIDTH, 0).split()
            pos = Position(int(seg), int(off))
        except ValueError:  # empty (first run) or unreadable: from the oldest segment
            pos = Position(0, 0)
        oldest = min(self._sizes)
        return pos if pos.segment >= oldest else Position(oldest, 0)

    def _store_cursor(self, pos: Position) -> None:
        """One pwrite of a few bytes, within one page: a SIGKILL leaves the
        old or the new value, never a mix."""
        os.pwrite(self._cursor_fd, f"{pos.segment} {pos.offset}".ljust(_CURSOR_WIDTH - 1).encode() + b"\n", 0)

    # -- writer ---------------------------------------------------------
    def append(self, framed: list[bytes], count: int) -> None:
        """Write `count` records, given as [frame(r1), r1, frame(r2), r2, ...]
        (see frame()): one write() per drain of the ring buffer."""
        if not count:
            return
        size = sum(map(len, framed))
        with self._lock:
            seg = self._write_seg
            if self._sizes[seg] and self._sizes[seg] + size > SEGMENT_BYTES:
                os.close(self._fd)
                seg = self._write_seg = seg + 1
                self._fd = self._open_segment(seg)
            if not self._sizes[seg]:
                self._oldest_ns[seg] = time.time_ns()
            self._write_all(framed)
            self._recent.append(_Recent(seg, self._sizes[seg], framed[1::2], size))
            self._recent_bytes += size
            while self._recent_bytes > RECENT_BYTES:
                # Still on disk: read back from there once the cursor gets to it.
                self._recent_bytes -= self._recent.popleft().nbytes
            self._sizes[seg] += size
            self._counts[seg] += count
            self._evict()

    def _write_all(self, parts: list[bytes]) -> None:
        """writev() straight from the records: no joined copy of a drain's
        worth of them (hundreds of KiB at the peak of a storm)."""
        for i in range(0, len(parts), _IOV_MAX):
            chunk = parts[i:i + _IOV_MAX]
            written = os.writev(self._fd, chunk)
            if written < sum(map(len, chunk)):  # short write: the rest of the chunk in one piece
                rest = b"".join(chunk)[written:]
                while rest:
                    rest = rest[os.write(self._fd, rest):]

    def _evict(self) -> None:
        """Delete the oldest segments while over max_bytes (never the one
        being written)."""
        while sum(self._sizes.values()) > self.max_bytes and len(self._sizes) > 1:
            oldest = min(self._sizes)
            self.evicted += self._counts.get(oldest) or self._count_records(oldest)
            self._path(oldest).unlink(missing_ok=True)
            for d in (self._sizes, self._counts, self._oldest_ns):
                d.pop(oldest, None)
            if self._cursor.segment <= oldest:
                self._cursor = Position(min(self._sizes), 0)
            while self._recent and self._recent[0].segment <= oldest:
                self._recent_bytes -= self._recent.popleft().nbytes

    def _count_records(self, seg: int) -> int:
        n = 0
        try:
            data = self._path(seg).read_bytes()
        except OSError:
            return 0
        pos = 0
        while pos + 4 <= len(data):
            pos += 4 + _LEN.unpack_from(data, pos)[0]
            n += 1
        return n

    # -- reader ---------------------------------------------------------
    def read(self, max_records: int, max_bytes: int) -> Batch | None:
        """The next records after the cursor, or None when everything was
        sent. A batch with no records moves the cursor past the rest of a
        segment a crash cut short."""
        with self._lock:
            pos = self._cursor
            head = self._recent[0] if self._recent else None
            if head is not None and (head.segment, head.offset) == (pos.segment, pos.offset):
                return self._read_recent(max_records, max_bytes)
            sizes = dict(self._sizes)
            writing = self._write_seg
        return self._read_files(pos, sizes, writing, max_records, max_bytes)

    def _read_recent(self, max_records: int, max_bytes: int) -> Batch:
        """From the records in memory; the caller holds the lock."""
        records: list[bytes] = []
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
            offset = chunk.offset
            for rec in rest:
                if len(records) >= max_records or (records and size + len(rec) > max_bytes):
                    return Batch(records, end)
                records.append(rec)
                size += len(rec)
                offset += 4 + len(rec)
                end = Position(chunk.segment, offset)
        return Batch(records, end)

    def _read_files(self, pos: Position, sizes: dict[int, int], writing: int, max_records: int,
                    max_bytes: int) -> Batch | None:
        for seg in sorted(s for s in sizes if s >= pos.segment):
            offset = pos.offset if seg == pos.segment else 0
            left = sizes[seg] - offset
            if left <= 0:
                continue
            with open(self._path(seg), "rb") as f:
                f.seek(offset)
                data = f.read(min(left, max_bytes))
                if len(data) >= 4 and 4 + _LEN.unpack_from(data)[0] > len(data):
                    # A first record larger than max_bytes: read all of it.
                    data += f.read(min(left, 4 + _LEN.unpack_from(data)[0]) - len(data))
            records: list[bytes] = []
            p = size = 0
            while p + 4 <= len(data) and len(records) < max_records:
                n = _LEN.unpack_from(data, p)[0]
                if p + 4 + n > len(data) or (records and size + n > max_bytes):
                    break
                records.append(data[p + 4:p + 4 + n])
                size += n
                p += 4 + n
            if records:
                return Batch(records, Position(seg, offset + p))
            if seg != writing:
                return Batch([], Position(seg + 1, 0))
            return None
        return None

    def ack(self, end: Position) -> None:
        """The collector has everything before `end`: drop what is done."""
        with self._lock:
            if end <= self._cursor:
                return
            self._cursor = end
            for seg in [s for s in self._sizes if s < end.segment and s != self._write_seg]:
                self._path(seg).unlink(missing_ok=True)
                for d in (self._sizes, self._counts, self._oldest_ns):
                    d.pop(seg, None)
            self._drop_recent(end)
            self._store_cursor(end)

    def forget(self, end: Position) -> None:
        """Drop the in-memory copies of the records before `end` (a batch
        being sent: its request holds them). If it fails, they are read
        back from the segment files."""
        with self._lock:
            self._drop_recent(end)

    def _drop_recent(self, end: Position) -> None:
        recent = self._recent
        while recent and (recent[0].segment, recent[0].end) <= (end.segment, end.offset):
            self._recent_bytes -= recent.popleft().nbytes
        if recent and recent[0].segment == end.segment:
            chunk = recent[0]
            while chunk.offset < end.offset:
                chunk.offset += 4 + len(chunk.records[chunk.first])
                chunk.first += 1

    # -- state ----------------------------------------------------------
    def pending_bytes(self) -> int:
        with self._lock:
            cur = self._cursor
            return sum(size - (cur.offset if seg == cur.segment else 0)
                       for seg, size in self._sizes.items() if seg >= cur.segment)

    def oldest_pending_ns(self) -> int | None:
        """When the oldest segment with unsent records was started."""
        with self._lock:
            cur = self._cursor
            pending = [self._oldest_ns[s] for s, size in self._sizes.items()
                       if s in self._oldest_ns and (s > cur.segment or (s == cur.segment and size > cur.offset))]
        return min(pending, default=None)

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
            os.close(self._cursor_fd)


def last_heartbeat_ns(directory: Path) -> int | None:
    """When a previous run was last known to be watching (see heartbeat())."""
    try:
        return int((directory / HEARTBEAT).read_text())
    except (OSError, ValueError):
        return None


def heartbeat(directory: Path, now_ns: int) -> None:
    tmp = directory / f"{HEARTBEAT}.tmp"
    tmp.write_text(str(now_ns))
    os.chmod(tmp, 0o600)
    os.replace(tmp, directory / HEARTBEAT)


class Spool:
    """The spool directory: one SignalSpool per signal, the heartbeat that
    tells the next start how long nobody watched, and a lock so that two
    agents never share it."""

    # Of --spool-max-bytes: exec log records are most of the bytes.
    SHARES = {"logs": 0.75, "traces": 0.25}

    def __init__(self, path: str, max_bytes: int) -> None:
        self.dir = open_spool_dir(path)
        self._lock_fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise UsageError(f"spool directory {path} is in use by another otel-exec "
                             "(give each agent its own --spool-dir)") from None
        self.max_bytes = max_bytes
        self.previous_heartbeat = last_heartbeat_ns(self.dir)
        self._signals: dict[str, SignalSpool] = {}
        self._last_beat = 0.0  # 0: this run has not watched anything yet

    def signal(self, name: str) -> SignalSpool:
        if name not in self._signals:
            self._signals[name] = SignalSpool(self.dir, name, int(self.max_bytes * self.SHARES[name]))
        return self._signals[name]

    def beat(self) -> None:
        """At most once a second: record that the agent is watching."""
        now = time.monotonic()
        if now - self._last_beat >= 1.0:
            self._last_beat = now
            heartbeat(self.dir, time.time_ns())

    def close(self) -> None:
        if self._last_beat:  # a run that never started watching leaves the last one's
            heartbeat(self.dir, time.time_ns())
        for s in self._signals.values():
            s.close()
        os.close(self._lock_fd)
