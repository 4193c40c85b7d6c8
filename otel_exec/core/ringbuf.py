"""Consumer of a BPF_MAP_TYPE_RINGBUF map, reading the kernel's mmap directly.

libbpf's ring_buffer__poll() would call back into Python through ctypes for
every record; reading the shared memory ourselves costs one memoryview slice
per record and lets a whole batch be consumed between two position updates.

Layout (kernel/bpf/ringbuf.c): page 0 of the map fd holds consumer_pos and is
the only writable page; page 1 holds producer_pos; the data area follows.
The kernel offers the data area twice in a row, so that a record wrapping
past the end reads as one piece (libbpf maps both); every page mapped counts
in the reader's resident memory, so this reader maps it once and copies the
rare wrapping record together. Each record is an 8-byte header (u32 len with
BUSY/DISCARD flags, u32 page offset used by the kernel) followed by len
bytes, the next record starting at the following 8-byte boundary.

The walk runs in C when that extension is built and wanted
(otel_exec.native): its RingCopy moves the records into the agent's own
memory, on a thread of its own once start_copy_thread() ran, so that the
kernel's ring keeps room while the reader waits for the GIL; the drain hands
them over from there. `_drain_reference` is the same walk in Python, on the
ring itself, the reference and the fallback.
"""
from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from typing import Any

from otel_exec.core.libbpf import Closing
from otel_exec.errors import BpfError
from otel_exec.host.wakeup import RingWait, SignalWakeup
from otel_exec.native import native_module

_BUSY = 1 << 31  # reserved, not yet submitted or discarded
_DISCARD = 1 << 30
_LEN_MASK = _DISCARD - 1
_HDR_SIZE = 8


# otel_exec.core._decode_native, or None: the ring walk and the decoder's
# common records in C (otel_exec.core.decode builds its native Decoder).
NATIVE = native_module("otel_exec.core._decode_native")

# The most RingCopy holds for a reader held up: a few hundred milliseconds
# of the largest records at the rate a 2-core machine execs them, within a
# 128 MiB container limit with the rest of the agent. Taken only while the
# reader lags, given back after.
COPY_MAX_BYTES = 32 << 20


class RingBuffer(Closing):
    """Reads records of one ring buffer map; ``size`` is its max_entries.

    Single consumer: two readers of one map would step on consumer_pos.
    Memory ordering: the producer position and record headers are read with
    plain loads, which are acquire loads on x86-64 (TSO); on arm64 this relies
    on the interpreter's distance between the header and payload reads.
    """

    def __init__(self, map_fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        if size <= 0 or size & (size - 1) or size % page:
            raise ValueError(f"ring size {size} is not a power-of-two multiple of {page}")
        self._mask = size - 1
        self._size = size
        self._closed = False
        fd = -1
        try:
            # Our own fd keeps the map alive and polled even if its owner closes it.
            fd = os.dup(map_fd)
            self._cons_map = mmap.mmap(fd, page, mmap.MAP_SHARED,
                                       mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._prod_map = mmap.mmap(fd, page + size, access=mmap.ACCESS_READ, offset=page)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            raise BpfError(f"cannot map ring buffer (fd {map_fd}, {size} bytes): {exc}") from exc
        self._fd = fd
        # Native-endian typed views: an index is one aligned load or store.
        self._cons_pos = memoryview(self._cons_map)[:8].cast("Q")
        self._prod_pos = memoryview(self._prod_map)[:8].cast("Q")
        self._data = memoryview(self._prod_map)[page:]
        self._hdr = self._data.cast("I")  # headers are 8-aligned: word off >> 2
        self._copy = (NATIVE.RingCopy(self._cons_pos, self._prod_pos, self._data, fd, COPY_MAX_BYTES)
                      if NATIVE is not None else None)
        # The copy thread may empty the ring before this wait sees it
        # readable: its notify fd wakes the wait too.
        self._wait = RingWait(fd, self._copy.notify_fd() if self._copy is not None else -1)

    def drain(self, handle: Callable[[memoryview], None], max_records: int | None = None) -> int:
        """Call ``handle`` on each submitted record's payload, oldest first.

        The payload is a read-only view into the ring (bytes for a record
        that wraps past the end of the ring, and for every record with the
        C extension, whose copy reuses its memory), valid only until
        ``handle`` returns for the last record of the batch: the space is
        given back to the kernel then (one consumer_pos store per batch,
        i.e. per producer_pos snapshot), and new records overwrite it.
        ``handle`` must copy (``bytes(view)``, ``struct.unpack_from``) what it
        keeps, and must not hold on to the view or ``close()`` will fail.

        Stops at a record still being written, after ``max_records`` records,
        or when the ring is empty. Discarded records are skipped and not
        counted. If ``handle`` raises, the records before it stay consumed
        and the failing one is delivered again by the next drain. Returns the
        number of records handed to ``handle``.
        """
        if max_records is not None and max_records <= 0:
            return 0
        limit = -1 if max_records is None else max_records
        if self._copy is not None:
            return self._copy.drain(handle, limit, None, None)  # type: ignore[no-any-return]
        return self._drain_reference(handle, limit)

    def drain_events(self, decoder: Any, handle: Callable[[object], None],
                     on_error: Callable[[Exception], None], max_records: int | None = None) -> int:
        """``drain`` through a native decoder (``_decode_native.Decoder``,
        which needs NATIVE): ``handle`` gets each record's event, and
        ``on_error`` the DecodeError of a record the decoder rejects (that
        record is consumed). Nothing reaches Python per record but the two
        calls."""
        assert self._copy is not None
        if max_records is not None and max_records <= 0:
            return 0
        limit = -1 if max_records is None else max_records
        return self._copy.drain(handle, limit, decoder, on_error)  # type: ignore[no-any-return]

    def start_copy_thread(self) -> None:
        """With the C extension: the thread that moves the records into the
        agent's memory at each of the ring's early wake-ups. It inherits
        the caller's capabilities and nice value: call it after the
        privilege drop, from the reader."""
        if self._copy is not None:
            self._copy.start()

    def _drain_reference(self, handle: Callable[[memoryview], None], limit: int) -> int:
        hdr = self._hdr
        data = self._data
        mask = self._mask
        size = self._size
        cons_pos = self._cons_pos
        prod_pos = self._prod_pos
        count = 0
        cons = cons_pos[0]
        while True:
            prod = prod_pos[0]
            if cons >= prod:
                return count
            pos = cons
            try:
                while pos < prod:
                    off = pos & mask
                    word = hdr[off >> 2]
                    if word & _BUSY:
                        return count
                    length = word & _LEN_MASK
                    if not word & _DISCARD:
                        start = (off + _HDR_SIZE) & mask
                        end = start + length
                        handle(data[start:end] if end <= size else bytes(data[start:]) + bytes(data[:end - size]))
                        count += 1
                    pos += (length + _HDR_SIZE + 7) & ~7
                    if count == limit:
                        return count
            finally:
                if pos != cons:
                    cons_pos[0] = pos
            # Producers may have added records while this batch was handled.
            cons = pos

    def wake_on(self, wakeup: SignalWakeup) -> None:
        """A signal ends wait() too (the agent's stop)."""
        self._wait.wake_on(wakeup)

    def wait(self, timeout_s: float) -> bool:
        """Block until the ring has data, a signal came (wake_on), or
        ``timeout_s`` passes; True if it has data.

        Level-triggered: returns at once while unconsumed data is queued.
        """
        return self._wait.wait(timeout_s)

    def available_bytes(self) -> int:
        """Bytes not yet handed over: between the ring's consumer and
        producer (headers and records still being written included), and
        those the copy holds (as many as they took in the ring)."""
        queued = self._copy.queued_bytes() if self._copy is not None else 0
        return self._prod_pos[0] - self._cons_pos[0] + queued  # type: ignore[no-any-return]

    def fileno(self) -> int:
        """The epoll fd, for an outer selector: readable when the ring has
        data, or a signal came (wake_on)."""
        return self._wait.fileno()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._copy is not None:
            self._copy.close()  # its thread first: it reads the ring
        self._wait.close()
        for view in (self._cons_pos, self._prod_pos, self._hdr, self._data):
            view.release()
        self._cons_map.close()
        self._prod_map.close()
        os.close(self._fd)
