"""Batching: one signal's queue of encoded records and the thread that sends
them in batches (honouring OTEL_BLRP_* / OTEL_BSP_*), each batch wrapped
into an export request by encode.export_request and handed to a transport.
Records wait in the on-disk spool (SpoolQueue) or, with --no-spool, in
memory (MemoryQueue).

The schedule delay bounds how long a record waits: the thread sends
everything pending once the oldest record's event is the delay old less
what the last send took, or at once when a full batch waits (then the full
batches only: the rest waits for more, or for its own due time); it sleeps
while nothing is pending.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from typing import Callable

from otel_exec.errors import UsageError
from otel_exec.export.otlp.encode import export_request, request_records
from otel_exec.export.otlp.transport import MESSAGE_MAX, Answer, Outcome, Transport
from otel_exec.export.spool import Batch, Position, SignalSpool

log = logging.getLogger(__name__)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not an integer") from None
    if value <= 0:
        raise UsageError(f"{name} must be positive")
    return value


# Records per request unless *_MAX_EXPORT_BATCH_SIZE says otherwise: twice
# the specification's 512. Most of a request's cost in the export thread is
# fixed (waking, the spool's read and acknowledgement, the gRPC exchange),
# so a larger batch costs less per record at every exec rate (BENCHMARKS.md).
# Bounded by what fits: two batches of a storm's records stay within the
# spool's in-memory window (spool.RECENT_BYTES), so they are not read back
# from the segment files; MAX_REQUEST_BYTES bounds large records.
DEFAULT_MAX_EXPORT_BATCH_SIZE = 1024


# A plain class, not a dataclass: this module is on the start-up path
# (docs/architecture.md, Rules).
class BatchSettings:
    def __init__(self, schedule_delay_s: float, max_queue_size: int, max_export_batch_size: int) -> None:
        self.schedule_delay_s = schedule_delay_s
        self.max_queue_size = max_queue_size
        self.max_export_batch_size = max_export_batch_size

    @classmethod
    def from_env(cls, prefix: str, default_delay_ms: int) -> BatchSettings:
        """OTEL_BLRP_* (logs) or OTEL_BSP_* (spans), with the spec's defaults
        but for the batch size (DEFAULT_MAX_EXPORT_BATCH_SIZE).
        *_EXPORT_TIMEOUT is not used: a request's deadline is the exporter's
        OTEL_EXPORTER_OTLP_TIMEOUT, as the SDK's exporters apply it."""
        settings = cls(
            _env_int(f"{prefix}_SCHEDULE_DELAY", default_delay_ms) / 1000,
            _env_int(f"{prefix}_MAX_QUEUE_SIZE", 2048),
            _env_int(f"{prefix}_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_EXPORT_BATCH_SIZE),
        )
        settings.max_export_batch_size = min(settings.max_export_batch_size, settings.max_queue_size)
        return settings


# Collectors refuse gRPC messages over 4 MiB by default. A request stops at
# the first record that takes it to this, whatever the batch size: it is
# over by less than one record, and the attribute budget
# (shape.DEFAULT_MAX_BYTES) keeps a record far below the 1 MiB left.
MAX_REQUEST_BYTES = 3 * 1024 * 1024


class MemoryQueue:
    """Records in memory only (--no-spool): lost if the agent dies; when
    full, records are dropped and counted; a batch that fails retryably is
    held by the exporter and tried again."""

    retries = False

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.overflow = 0
        self._added = 0
        self._q: deque[bytes] = deque()

    def add(self, record: bytes) -> None:
        if len(self._q) >= self.max_size:
            self.overflow += 1
            return
        self._q.append(record)
        self._added += 1

    def flush(self) -> int:
        """Records are visible to the exporter as soon as they are added:
        returns how many were since the last flush."""
        added, self._added = self._added, 0
        return added

    def first_added(self) -> bytes | None:
        """The oldest record added since the last flush that the exporter
        has not taken yet (it takes from memory at any time)."""
        try:
            return self._q[-min(self._added, len(self._q))] if self._added else None
        except IndexError:  # taken meanwhile
            return None

    def take(self, max_records: int, max_bytes: int) -> Batch | None:
        q = self._q
        if not q:
            return None
        batch: list[bytes] = []
        size = 0
        while q and len(batch) < max_records and size < max_bytes:
            rec = q.popleft()
            batch.append(rec)
            size += len(rec)
        return Batch(batch, Position(0, 0))

    def took_all(self, batch: Batch) -> bool:
        """Whether nothing was left after the batch when it was taken."""
        return not self._q

    def untake(self, batch: Batch) -> None:
        """A batch taken and not sent goes back to the front, in order."""
        self._q.extendleft(reversed(batch.records))

    def release(self, batch: Batch) -> None:
        """The request holds the records (and the exporter holds the request
        while it is retried)."""
        batch.records = []

    def done(self, batch: Batch) -> None:
        """Taken records are gone from memory already."""

    def pending(self) -> int:
        return len(self._q)

    def stats(self) -> dict[str, int]:
        return {"queue_overflow": self.overflow, "unsent": len(self._q)}


class SpoolQueue:
    """Records written to the on-disk spool (otel_exec.export.spool) at the end of
    each drain of the ring buffer, and sent from there: a failed batch stays
    to be sent again."""

    retries = True

    def __init__(self, spool: SignalSpool) -> None:
        self.spool = spool
        # The spool's own method: one call per record on the reader's hot path.
        self.add: Callable[[bytes], None] = spool.add

    def flush(self) -> int:
        """Write what was added since the last flush; returns how many."""
        return self.spool.write_added()

    def first_added(self) -> bytes | None:
        """The oldest record added since the last flush."""
        return self.spool.first_added()

    def take(self, max_records: int, max_bytes: int) -> Batch | None:
        return self.spool.read(max_records, max_bytes)

    def took_all(self, batch: Batch) -> bool:
        """Whether the batch holds every record pending."""
        return self.spool.read_all(batch.end)

    def untake(self, batch: Batch) -> None:
        """A batch taken and not sent: the spool still holds it (the cursor
        moves at done()), the next take() reads it again."""
        self.spool.unread(batch.end)

    def release(self, batch: Batch) -> None:
        """The request holds the records: memory keeps none; if it fails,
        the next take() reads them back from the segment files."""
        batch.records = []
        self.spool.forget(batch.end)

    def done(self, batch: Batch) -> None:
        self.spool.ack(batch.end)

    def pending(self) -> int:
        return self.spool.pending_bytes()

    def stats(self) -> dict[str, int]:
        oldest = self.spool.oldest_pending_ns()
        return {**self.spool.stats(), "spool_bytes": self.spool.pending_bytes(),
                "spool_oldest_age_s": max(0, time.time_ns() - oldest) // 10**9 if oldest else 0}


RecordQueue = MemoryQueue | SpoolQueue
_BACKOFF_FIRST_S = 1.0
_BACKOFF_MAX_S = 30.0
# A server's Retry-After / RetryInfo is followed up to this long: a broken
# or hostile value must not park export for a day.
_SERVER_DELAY_MAX_S = 300.0


class _Held:
    """A batch's request kept for another try (memory queue: nowhere else
    holds its records)."""

    def __init__(self, request: bytes, count: int, batch: Batch) -> None:
        self.request = request
        self.count = count
        self.batch = batch


class BatchExporter:
    """One signal's records and the thread that sends them in batches.

    When to send: flush() (the end of a drain, from the reader thread) sets
    the time the thread is due to send everything pending, if none is set:
    when the oldest record just flushed is settings.schedule_delay_s old,
    counted from its event (record_age_s; without it, from the flush), less
    the time the last send took from its due time to the collector's answer
    (the thread's wake-up, the spool read, the encoding and the request:
    so that the record reaches the collector within the delay); or now,
    once a full batch (max_export_batch_size records) was flushed since the
    thread last started sending. The thread clears the due time before it
    takes the first batch: a record flushed after that sets a new one.
    A last batch that is not full (all that is pending: not one cut short
    by the bytes or by the memory-held records going first) is sent only
    when its oldest record is due by the same rule (or its age is unknown, or the exporter stops);
    else it stays queued, the thread's own due time set by that record, and
    goes with the next full batch or at that time: during a storm each
    request is a full batch, not a full one and the few records that came
    while it was taken (each request has a fixed cost, BatchSettings).
    Nothing pending, no due time: the thread sleeps until woken.

    The thread starts at start(), not before (the agent drops privileges in
    between). Every step of its loop runs inside one error handler: an
    unexpected exception is logged with its traceback, counted
    (export_errors) and the loop goes on; if the thread dies anyway,
    check() (the reader loop calls it after each drain and at least every
    agent.HOUSEKEEPING_S) starts a new one (export_thread_restarts), which
    sends what is pending at once.

    record_age_s: how long ago a queued record's event happened, in
    seconds, or None if the record does not say. clock: monotonic seconds
    (tests pass a fake one)."""

    def __init__(self, signal: str, transport: Transport, resource: bytes, settings: BatchSettings,
                 queue: RecordQueue, record_age_s: Callable[[bytes], float | None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.signal = signal
        self.transport = transport
        self.resource = resource
        self.settings = settings
        self.queue = queue
        self.exported = 0
        self.failed = 0  # memory queue: retryable batches still failing at stop
        self.rejected = 0  # refused by the collector for good (whole batches, or partial success)
        self.retries = 0  # retryable failures (each is tried again later)
        self.errors = 0  # unexpected exceptions in the export loop
        self.thread_restarts = 0
        self.latency_ms = 0  # of the last request the collector answered
        # The queue's own method: one call per record on the reader's hot path.
        self.add: Callable[[bytes], None] = queue.add
        self._record_age_s = record_age_s
        self._clock = clock
        # Written by the reader (flush), and by the export thread only to
        # clear it (inf) when it starts sending.
        self._due = math.inf  # clock(): when the thread sends everything pending; inf: nothing is due
        # clock(): when a partial batch left queued is due (written by the
        # export thread only; flush() reads it: the thread wakes by then).
        self._rest_due = math.inf
        self._flushed = 0  # records flushed since start (reader thread)
        self._taken = 0  # _flushed when the thread last started sending (export thread)
        self._lag_s = 0.0  # due time to answer, of the sends before: the latest, or half the one before if longer
        self._wake = threading.Event()
        self._stopping = False
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._held: _Held | None = None
        self._attempt = 0  # retryable failures in a row
        self._retry_at = 0.0  # clock(): no request before this
        self._failing = ""  # the retryable reason last logged, until a success
        self._logged: set[str] = set()  # reasons of rejections already logged

    def start(self) -> None:
        """Records an earlier run left in the spool go within the delay."""
        self.transport.start()
        self._due = min(self._due, self._clock() + self.settings.schedule_delay_s)
        self._spawn()

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"otlp-{self.signal}", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """From the reader loop: a dead export thread is replaced at once."""
        thread = self._thread
        if thread is not None and not self._stopping and not thread.is_alive():
            self.thread_restarts += 1
            log.error("OTLP %s export thread died (its traceback is above); starting a new one", self.signal)
            # It may have cleared the due time of what it did not send.
            self._due = 0.0
            self._spawn()

    def flush(self) -> None:
        """End of a drain: make the records durable; set when the sender is
        due (the class's doc) and wake it to take the new time."""
        first = self.queue.first_added()
        added = self.queue.flush()
        if not added:
            return
        self._flushed += added
        now = self._clock()
        if self._flushed - self._taken >= self.settings.max_export_batch_size:
            due = now
        elif self._due == math.inf:
            due = now + self._wait_s(self._age_s(first))
        else:
            return
        if due < self._due:
            self._due = due
            # A thread already asleep until a partial batch is due wakes by
            # then anyway, and takes the new time after that: a wake-up
            # (a context switch and the loop) is spared.
            if due < self._rest_due:
                self._wake.set()

    def due(self) -> float:
        """clock(): when the thread next sends what was flushed (the due
        time, or a partial batch's left queued); inf: nothing is due."""
        return min(self._due, self._rest_due)

    def _age_s(self, record: bytes | None) -> float | None:
        return self._record_age_s(record) if record is not None and self._record_age_s is not None else None

    def _wait_s(self, age: float | None) -> float:
        """How long a record of this age (None: just now) may wait before it is sent."""
        delay = self.settings.schedule_delay_s
        return min(delay, max(0.0, delay - (age or 0.0) - self._lag_s))

    def _partial_wait_s(self, oldest: bytes) -> float:
        """How long a batch that is not full may wait for more records: until
        its oldest record is due; 0 when the record does not say its age,
        or at stop."""
        age = None if self._stopping else self._age_s(oldest)
        return 0.0 if age is None else self._wait_s(age)

    def _run(self) -> None:
        while not self._stopping:
            now = self._clock()
            # A backoff: only a stop cuts it short, not a full batch or a due time.
            due = min(self._due, self._rest_due)
            wake_at = self._retry_at or due
            if wake_at > now:
                self._wake.wait(None if wake_at == math.inf else wake_at - now)
                self._wake.clear()
                continue
            # After a backoff the due time is not when sending began: not timed.
            if self._retry_at:
                due = math.inf
            self._due, self._rest_due, self._taken = math.inf, math.inf, self._flushed
            self._step(due)
        while self._clock() < self._deadline and self._step() and self.queue.pending():
            pass
        if self._held is not None:  # memory queue: nowhere to keep it
            self.failed += self._held.count
            self._held = None

    def _step(self, due: float = math.inf) -> bool:
        """Send what is pending; True when all of it was. due: when the
        sending was due (inf: not timed), to time the first batch."""
        try:
            if self._send_pending(due):
                self._retry_at = 0.0
                return True
            return False
        except Exception:
            self.errors += 1
            log.exception("OTLP %s export: unexpected error; export goes on after a backoff", self.signal)
            self._back_off(None)
            return False

    def _send_pending(self, due: float) -> bool:
        """Send until nothing is pending; False when a send is to be tried
        again later (the queue, or _held, keeps the batch)."""
        while self._clock() < self._deadline:
            held = self._held
            if held is None:
                batch = self.queue.take(self.settings.max_export_batch_size, MAX_REQUEST_BYTES)
                if batch is None:
                    return True
                if not batch.records:
                    self.queue.done(batch)
                    continue
                if len(batch.records) < self.settings.max_export_batch_size and self.queue.took_all(batch):
                    wait_s = self._partial_wait_s(bytes(batch.records[0]))
                    if wait_s > 0:
                        self.queue.untake(batch)
                        self._rest_due = self._clock() + wait_s
                        # What stays counts towards the next full batch.
                        self._taken = self._flushed - len(batch.records)
                        return True
                # Held from here: an exception while sending does not lose it.
                held = self._held = _Held(export_request(self.resource, batch.records), len(batch.records), batch)
                # The request holds the records now: the queue lets go of
                # its copies, so that at a storm's peak a batch is in memory
                # once (plus the transport's copy), not twice.
                self.queue.release(batch)
            if not self._deliver(held.request, held.count):
                if self.queue.retries:  # the spool reads the batch back from its files next time
                    self._held = None
                return False
            self._held = None
            self.queue.done(held.batch)
            if due != math.inf:  # the first batch holds the oldest records
                lag = min(self._clock() - due, self.settings.schedule_delay_s)
                self._lag_s, due = max(lag, self._lag_s / 2), math.inf
        return False

    def _deliver(self, request: bytes, count: int) -> bool:
        """Send one request; True when it is settled (accepted, or dropped
        and counted), False when it is to be tried again."""
        started = self._clock()
        answer = self.transport.send(request)
        if answer.outcome is not Outcome.RETRY:
            # Rounded up: an answered request took time, even under a millisecond on loopback.
            self.latency_ms = math.ceil((self._clock() - started) * 1000)
        if answer.outcome is Outcome.SENT:
            rejected = min(answer.rejected, count)
            self.exported += count - rejected
            self.rejected += rejected
            if answer.reason:
                self._log_once(answer, f"partial success: {rejected} of {count} records rejected")
            if self._failing:
                log.warning("OTLP %s export to %s works again", self.signal, self.transport.target)
            self._failing, self._attempt, self._retry_at = "", 0, 0.0
            return True
        if answer.outcome is Outcome.TOO_LARGE and count > 1:
            records = request_records(request)
            half = len(records) // 2
            # A retryable failure of a half retries the whole batch: the
            # other half may be sent twice (delivery is at least once).
            return all(self._deliver(export_request(self.resource, part), len(part))
                       for part in (records[:half], records[half:]))
        if answer.outcome is not Outcome.RETRY:
            self.rejected += count
            self._log_once(answer, f"{count} records dropped (the collector will not take them: not retried)")
            return True
        self.retries += 1
        self._back_off(answer.retry_after_s)
        if answer.reason != self._failing:
            self._failing = answer.reason
            log.warning("Failed to export %s to %s: %s%s; retrying in %.1f s (logged again only if the cause "
                        "changes)", self.signal, self.transport.target, answer.reason,
                        f": {answer.message[:MESSAGE_MAX]}" if answer.message else "",
                        self._retry_at - self._clock())
        return False

    def _back_off(self, server_delay_s: float | None) -> None:
        """Exponential, with jitter so that agents restarted together do not
        retry together; a server's delay is followed (bounded)."""
        if server_delay_s is not None:
            delay = min(server_delay_s, _SERVER_DELAY_MAX_S)
        else:
            # Imported here, after a failure: random (and its _sha512) would
            # otherwise load at every start for nothing.
            import random

            delay = min(_BACKOFF_FIRST_S * 2 ** self._attempt, _BACKOFF_MAX_S) * random.uniform(0.8, 1.2)
        self._attempt = min(self._attempt + 1, 16)
        self._retry_at = self._clock() + delay

    def _log_once(self, answer: Answer, what: str) -> None:
        if answer.reason not in self._logged:
            self._logged.add(answer.reason)
            log.error("Failed to export %s to %s: %s%s; %s (logged once per cause; counted in %s_rejected)",
                      self.signal, self.transport.target, answer.reason,
                      f": {answer.message[:MESSAGE_MAX]}" if answer.message else "", what, self.signal)

    def begin_shutdown(self, timeout_s: float) -> None:
        """Send what is pending within timeout_s, then stop; what a spool
        still holds is sent after the next start. join() waits."""
        self.queue.flush()
        self._deadline = self._clock() + timeout_s
        self._stopping = True
        self._retry_at = 0.0
        self._wake.set()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(max(0.0, self._deadline - self._clock()) + 1)
        self.transport.shutdown()

    def stats(self) -> dict[str, int]:
        return {f"{self.signal}_{k}": v for k, v in
                {"exported": self.exported, "failed": self.failed, "rejected": self.rejected,
                 "export_retries": self.retries, "export_errors": self.errors,
                 "export_thread_restarts": self.thread_restarts, "export_latency_ms": self.latency_ms,
                 **self.queue.stats()}.items()}
