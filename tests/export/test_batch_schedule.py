"""When the export thread sends: the schedule delay bounds a record's wait,
counted from its event; a full batch goes at once; nothing pending, the
thread sleeps until woken.

Deterministic: the exporter's real loop (_run) runs in the test's thread on
a fake clock. Its Event is replaced by one that, instead of blocking, lets
the fake time pass to the next thing that happens: a drain of the reader
(records added, then flush(), at a scripted time) or the end of the wait.
The fake transport takes a fixed time per request, during which the reader's
drains scheduled meanwhile happen too (as they would on the reader thread).
No real time is measured."""
from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from otel_exec.export.otlp import encode
from otel_exec.export.otlp.batch import BatchExporter, BatchSettings, MemoryQueue, RecordQueue, SpoolQueue
from otel_exec.export.otlp.transport import Answer, Outcome
from otel_exec.export.spool import Spool

DELAY_S = 1.0
BATCH = 256
EPSILON_S = 1e-6  # float rounding of the fake times


@dataclass
class Request:
    started: float
    answered: float
    events: list[float]  # the event time of each record, in order


@dataclass
class Sim:
    """The fake time and the reader's drains still to come."""

    now: float = 100.0
    drains: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    waits: list[tuple[float | None, int]] = field(default_factory=list)  # (timeout, records pending)
    _order: int = 0

    def at(self, t: float, drain: Callable[[], None]) -> None:
        self._order += 1
        heapq.heappush(self.drains, (t, self._order, drain))

    def next_drain(self) -> float:
        return self.drains[0][0] if self.drains else math.inf

    def run_next(self) -> None:
        t, _, drain = heapq.heappop(self.drains)
        self.now = max(self.now, t)
        drain()

    def pass_until(self, t: float) -> None:
        while self.next_drain() <= t:
            self.run_next()
        self.now = max(self.now, t)


class FakeWake:
    """threading.Event for the export thread, on the fake time."""

    def __init__(self, sim: Sim, exporter: BatchExporter) -> None:
        self.sim = sim
        self.exporter = exporter
        self.flag = False

    def set(self) -> None:
        self.flag = True

    def clear(self) -> None:
        self.flag = False

    def wait(self, timeout: float | None) -> bool:
        sim = self.sim
        sim.waits.append((timeout, pending_records(self.exporter)))
        end = math.inf if timeout is None else sim.now + timeout
        while not self.flag:
            if sim.drains and sim.next_drain() <= end:
                sim.run_next()  # its flush() may set the flag
            elif timeout is None:  # nothing will ever come: the run is over
                self.exporter._stopping = True
                return False
            else:
                sim.now = end
                return False
        return True


def pending_records(exporter: BatchExporter) -> int:
    """Records flushed and not sent yet."""
    return exporter._flushed - exporter.exported


class TimedTransport:
    """Answers every request after send_s of fake time."""

    target = "test"

    def __init__(self, sim: Sim, send_s: float) -> None:
        self.sim = sim
        self.send_s = send_s
        self.requests: list[Request] = []

    def start(self) -> None: ...

    def shutdown(self) -> None: ...

    def send(self, payload: bytes) -> Answer:
        started = self.sim.now
        self.sim.pass_until(started + self.send_s)
        events = [(encode.log_time_ns(r) or 0) / 1e9 for r in encode.request_records(payload)]
        self.requests.append(Request(started, self.sim.now, events))
        return Answer(Outcome.SENT)


class Run:
    """An exporter on the fake time, its transport, and the records' event times."""

    def __init__(self, queue: RecordQueue, send_s: float = 0.0) -> None:
        self.sim = Sim()
        self.transport = TimedTransport(self.sim, send_s)
        self.exporter = BatchExporter(
            "logs", self.transport, encode.encoded_resource({}), BatchSettings(DELAY_S, 2048, BATCH), queue,
            record_age_s=lambda rec: self.sim.now - (encode.log_time_ns(rec) or 0) / 1e9, clock=lambda: self.sim.now)
        self.exporter._wake = FakeWake(self.sim, self.exporter)  # type: ignore[assignment]
        self.events: list[float] = []

    def drain(self, at: float, ages: list[float]) -> None:
        """A drain of the ring at `at`: records whose events happened ages
        seconds before, added and flushed. Oldest first, as the ring holds
        them."""
        def drain() -> None:
            for age in ages:
                event = self.sim.now - age
                self.events.append(event)
                self.exporter.add(encode.gap_record(0, round(event * 1e9), 0.0))
            self.exporter.flush()
        self.sim.at(at, drain)

    def run(self) -> list[Request]:
        """The export thread's loop until nothing is pending nor to come."""
        self.exporter._run()
        sent = [e for r in self.transport.requests for e in r.events]
        assert sent == pytest.approx(self.events, abs=1e-6), "a record was lost, sent twice or out of order"
        return self.transport.requests


@pytest.fixture(params=["memory", "spool"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordQueue]:
    if request.param == "memory":
        yield MemoryQueue(1 << 20)
        return
    spool = Spool(str(tmp_path / "spool"), 1 << 30)
    yield SpoolQueue(spool.signal("logs"))
    spool.close()


def test_a_record_is_sent_within_the_delay_of_its_event(queue: RecordQueue) -> None:
    """Drains at random times of a few records each, whose events happened
    up to a poll interval before: each record's request starts by its event
    plus the delay; the records wait together rather than one request each."""
    run = Run(queue)
    rng = random.Random(14)
    t = run.sim.now
    for _ in range(300):
        t += rng.choice([0.1, 0.1, 0.3, 2.5])
        run.drain(t, sorted((rng.uniform(0, 0.1) for _ in range(rng.randint(1, 5))), reverse=True))
    requests = run.run()
    for r in requests:
        assert r.started <= min(r.events) + DELAY_S + EPSILON_S, r
    assert len(requests) < 300 / 2


def test_the_last_send_s_duration_is_taken_from_the_delay(queue: RecordQueue) -> None:
    """Each request takes 50 ms until it is answered: once one was timed, a
    record's request is answered by its event plus the delay."""
    run = Run(queue, send_s=0.05)
    rng = random.Random(7)
    t = run.sim.now
    for _ in range(100):
        t += rng.choice([0.1, 0.2, 1.7])
        run.drain(t, sorted((rng.uniform(0, 0.1) for _ in range(3)), reverse=True))
    requests = run.run()
    first, *rest = requests
    assert first.started <= min(first.events) + DELAY_S + EPSILON_S
    assert rest
    for r in rest:
        assert r.answered <= min(r.events) + DELAY_S + EPSILON_S, r


def test_a_record_older_than_the_delay_when_read_is_sent_at_once(queue: RecordQueue) -> None:
    """The reader was held up: a record already 1.5 s old at its drain goes
    at that drain, not a delay later."""
    run = Run(queue)
    run.drain(run.sim.now + 1.0, [1.5])
    [request] = run.run()
    assert request.started == pytest.approx(run.events[0] + 1.5)


def test_due_is_when_the_thread_sends_what_was_flushed(queue: RecordQueue) -> None:
    """due(): nothing flushed, none; after a drain, the time its oldest
    record is due, which is when the request starts; none once sent."""
    run = Run(queue)
    assert run.exporter.due() == math.inf
    dues: list[float] = []
    t = run.sim.now + 0.1
    run.drain(t, [0.3, 0.2])
    run.sim.at(t, lambda: dues.append(run.exporter.due()))  # right after that drain
    [request] = run.run()
    assert dues == [pytest.approx(t - 0.3 + DELAY_S)]
    assert request.started == pytest.approx(dues[0])
    assert run.exporter.due() == math.inf


@pytest.mark.parametrize("drain_before_due", [False, True])
def test_a_reader_that_drains_just_before_the_due_time_fills_one_request_per_delay(
        queue: RecordQueue, drain_before_due: bool) -> None:
    """A host that execs every 10 ms for 10 s, a reader that drains every
    half delay, requests that take 20 ms. The oldest record of a drain is
    about half a delay old, so it is due (less the 20 ms a send takes)
    before the next drain: a request per drain, unless the reader drains
    just before each due time (the agent's loop, agent.run), which puts two
    drains' records in each request. Either way, every record is answered
    within the delay of its event."""
    run = Run(queue, send_s=0.02)
    poll_s, margin_s, start = DELAY_S / 2, 0.02, run.sim.now
    last = start

    def drain() -> None:
        nonlocal last
        now = run.sim.now
        ages = [now - e for e in (start + i * 0.01 for i in range(1000)) if last < e <= now]
        last = now
        for age in ages:
            run.events.append(now - age)
            run.exporter.add(encode.gap_record(0, round((now - age) * 1e9), 0.0))
        run.exporter.flush()
        if now < start + 10:
            drain_by = run.exporter.due() - margin_s
            run.sim.at(drain_by if drain_before_due and now < drain_by < now + poll_s else now + poll_s, drain)

    run.sim.at(start + poll_s, drain)
    requests = run.run()
    first, *rest = requests
    assert first.started <= min(first.events) + DELAY_S + EPSILON_S  # not timed yet: no lag known
    for r in rest:
        assert r.answered <= min(r.events) + DELAY_S + EPSILON_S, r
    if drain_before_due:
        assert len(requests) <= 10 / DELAY_S + 2
    else:
        assert len(requests) >= 10 / poll_s - 1


def test_a_full_batch_goes_at_once_and_the_rest_within_the_delay(queue: RecordQueue) -> None:
    """A storm: drains of 100 records every 10 ms for a second. Each time
    a batch's worth (256) was flushed since the thread last took, it sends
    at that drain; what is left at the end goes within the delay of its
    oldest event; no more requests than two per batch's worth (a full one,
    and what came during the sending)."""
    run = Run(queue, send_s=0.005)
    start = run.sim.now
    for i in range(100):
        run.drain(start + i * 0.01, [0.005] * 100)
    requests = run.run()
    assert len(requests) <= 2 * math.ceil(100 * 100 / BATCH)
    for r in requests:
        assert r.started <= min(r.events) + DELAY_S + EPSILON_S, r
    # During the storm nothing waits for the delay: a request starts within
    # a few drains of its oldest record.
    storm = [r for r in requests if r.started < start + 1.0]
    assert max(r.started - min(r.events) for r in storm) < 0.1


def test_nothing_pending_the_thread_sleeps_until_woken(queue: RecordQueue) -> None:
    """Every timed wait of the thread has records pending; with nothing
    pending it waits without a timeout (no wake-up while the host is idle),
    also across a minute without execs."""
    run = Run(queue)
    t = run.sim.now
    for gap in (0.1, 60.0, 0.2, 0.2, 30.0, 5.0):
        t += gap
        run.drain(t, [0.05])
    run.run()
    timed = [(timeout, pending) for timeout, pending in run.sim.waits if timeout is not None]
    assert timed and all(pending for _, pending in timed), run.sim.waits
    # Per drain of one record: one wake-up to learn its due time, one to send it.
    assert len(run.sim.waits) <= 2 * 6 + 1


def test_a_drain_with_nothing_read_sets_no_time(queue: RecordQueue) -> None:
    """The reader flushes every poll, also when nothing came: the thread is
    not woken for it."""
    run = Run(queue)
    for i in range(50):
        run.sim.at(run.sim.now + i * 0.1, run.exporter.flush)
    run.run()
    assert run.sim.waits == [(None, 0)]
    assert run.transport.requests == []


def test_during_a_storm_each_request_is_a_full_batch(queue: RecordQueue) -> None:
    """A storm: drains of 100 records every 10 ms for a second, each request
    taking 5 ms. What is left after the full batches waits for the next
    drains instead of a request of its own: every request of the storm is a
    full batch, the storm's last records go within the delay of their
    event, and no more requests than batches' worth plus one."""
    run = Run(queue, send_s=0.005)
    start = run.sim.now
    for i in range(100):
        run.drain(start + i * 0.01, [0.005] * 100)
    requests = run.run()
    storm = [r for r in requests if r.started < start + 1.0]
    assert storm and all(len(r.events) == BATCH for r in storm), [len(r.events) for r in requests]
    assert len(requests) <= 100 * 100 // BATCH + 1
    for r in requests:
        assert r.started <= min(r.events) + DELAY_S + EPSILON_S, r


def test_a_partial_batch_left_queued_goes_at_stop(queue: RecordQueue) -> None:
    """Records left after a full batch, young, and then the agent stops:
    they are sent in the stop's time, not held back for their due time."""
    run = Run(queue)
    stop_at = run.sim.now + 0.2
    run.drain(run.sim.now + 0.1, [0.0] * (BATCH + 10))
    run.sim.at(stop_at, lambda: run.exporter.begin_shutdown(5.0))
    requests = run.run()
    assert [len(r.events) for r in requests] == [BATCH, 10]
    assert requests[1].started == pytest.approx(stop_at)
