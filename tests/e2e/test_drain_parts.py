"""The reader loop hands a large backlog to the sinks in parts (agent.DRAIN_RECORDS),
each part flushed (written to the spool) before the next is read, so the
encoded records of a whole ring never wait in memory at once; and it drains
just before a sink's send that is due before its next drain."""
from __future__ import annotations

import math
import time
from typing import Callable

import pytest

from otel_exec import agent as agent_mod
from otel_exec.agent import Agent
from otel_exec.config import Config
from otel_exec.host.identity import HostIdentity


class QueuedSource:
    run_time_capabilities: set[int] = set()

    def __init__(self, events: int) -> None:
        self.queued = list(range(events))
        self.calls: list[int | None] = []

    def wait(self, timeout_s: float) -> None: ...

    def drain(self, handle: Callable[[object], None], max_records: int | None = None) -> int:
        self.calls.append(max_records)
        part = self.queued[:max_records]
        del self.queued[:len(part)]
        for ev in part:
            handle(ev)
        return len(part)

    def detach(self) -> None: ...


class FlushLog:
    def __init__(self, handled: list[object]) -> None:
        self.handled = handled
        self.flushed_at: list[int] = []

    def flush(self) -> None:
        self.flushed_at.append(len(self.handled))

    def due(self) -> float:
        return math.inf


def test_a_backlog_is_handled_and_flushed_in_parts() -> None:
    handled: list[object] = []
    sink = FlushLog(handled)
    agent = Agent(Config(), [sink], HostIdentity.current())  # type: ignore[list-item]
    agent.handle = handled.append  # type: ignore[method-assign]
    source = QueuedSource(2 * agent_mod.DRAIN_RECORDS + 5)
    agent.source = source  # type: ignore[assignment]
    agent.stopping.set()  # straight to the final drain after detaching
    agent.run()
    assert handled == list(range(2 * agent_mod.DRAIN_RECORDS + 5))
    assert source.calls == [agent_mod.DRAIN_RECORDS] * 3
    # Each full part was flushed before the next was read; the last part is
    # flushed by whoever drains last (the loop, or shutdown).
    assert sink.flushed_at == [agent_mod.DRAIN_RECORDS, 2 * agent_mod.DRAIN_RECORDS]


class Trickle:
    """A source that has `per_turn` records at every wait (0: a quiet host)."""

    run_time_capabilities: set[int] = set()

    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
        self.turns = 0
        self.queued = 0

    def wait(self, timeout_s: float) -> None:
        self.turns += 1
        self.queued = self.per_turn

    def drain(self, handle: Callable[[object], None], max_records: int | None = None) -> int:
        part, self.queued = self.queued, 0
        for ev in range(part):
            handle(ev)
        return part

    def detach(self) -> None: ...


def loop_for(seconds: float, source: Trickle) -> tuple[FlushLog, list[None]]:
    handled: list[object] = []
    sink = FlushLog(handled)
    ticks: list[None] = []
    agent = Agent(Config(poll_interval=0.005, duration=seconds), [sink], HostIdentity.current())  # type: ignore[list-item]
    agent.handle = handled.append  # type: ignore[method-assign]
    agent.tick = lambda: ticks.append(None)
    agent.source = source  # type: ignore[assignment]
    agent.run()
    return sink, ticks


def test_a_quiet_loop_flushes_and_ticks_only_on_the_housekeeping_cadence() -> None:
    source = Trickle(0)
    seconds = 0.8 * agent_mod.HOUSEKEEPING_S
    sink, ticks = loop_for(seconds, source)
    assert source.turns > 1
    # The first turn's housekeeping, and none after it within the cadence.
    assert len(sink.flushed_at) == 1 and len(ticks) == 1


def test_every_drain_that_read_something_is_flushed_at_once() -> None:
    source = Trickle(3)
    sink, ticks = loop_for(0.8 * agent_mod.HOUSEKEEPING_S, source)
    # Records reach the sinks (the spool) at the end of the drain that read them.
    assert sink.flushed_at == [3 * turn for turn in range(1, source.turns + 1)]
    assert len(ticks) == 1


class Flood:
    """A host that execs faster than the agent reads: every drain finds a
    full part, for `parts` parts (then the ring is empty)."""

    run_time_capabilities: set[int] = set()

    def __init__(self, parts: int) -> None:
        self.parts_left = parts
        self.left_at_detach: int | None = None

    def wait(self, timeout_s: float) -> None: ...

    def drain(self, handle: Callable[[object], None], max_records: int | None = None) -> int:
        if not self.parts_left:
            return 0
        self.parts_left -= 1
        return agent_mod.DRAIN_RECORDS

    def detach(self) -> None:
        self.left_at_detach = self.parts_left
        self.parts_left = 0  # what the programs queued until now: nothing more


def test_a_ring_that_never_empties_still_gets_housekeeping_and_a_stop(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Housekeeping due at every part: the loop is deterministic, untimed.
    monkeypatch.setattr(agent_mod, "HOUSEKEEPING_S", 0.0)
    source = Flood(parts=1000)
    agent = Agent(Config(), [FlushLog([])], HostIdentity.current())  # type: ignore[list-item]
    agent.source = source  # type: ignore[assignment]
    flood_left_at_ticks: list[int] = []

    def tick() -> None:
        flood_left_at_ticks.append(source.parts_left)
        if len(flood_left_at_ticks) == 3:
            agent.stop()

    agent.tick = tick
    agent.run()
    # The heap trim, the stats line and the ready file ran while the flood
    # went on, and the stop request ended the loop before the ring emptied.
    assert flood_left_at_ticks[:3] == [999, 998, 997]
    assert source.left_at_detach is not None and source.left_at_detach > 0


class Waits:
    """A quiet host: records each wait's timeout; the agent stops after the first."""

    run_time_capabilities: set[int] = set()

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.timeouts: list[float] = []

    def wait(self, timeout_s: float) -> None:
        self.timeouts.append(timeout_s)
        self.agent.stop()

    def drain(self, handle: Callable[[object], None], max_records: int | None = None) -> int:
        return 0

    def detach(self) -> None: ...


class DueIn(FlushLog):
    """A sink whose next send is due `seconds` after it was made."""

    def __init__(self, seconds: float) -> None:
        super().__init__([])
        self.due_at = time.monotonic() + seconds

    def due(self) -> float:
        return self.due_at


@pytest.mark.parametrize("due_in_s", [3.0, 30.0, -1.0, math.inf])
def test_the_reader_drains_just_before_a_send_due_before_its_next_drain(due_in_s: float) -> None:
    """A send due within the poll interval: the reader waits only until just
    before it (agent.DRAIN_BEFORE_DUE_S), so that the send carries what the
    ring holds by then; one due later, passed or none: the poll interval."""
    poll_s = 10.0
    sinks = [DueIn(due_in_s), FlushLog([])]
    agent = Agent(Config(poll_interval=poll_s), sinks, HostIdentity.current())  # type: ignore[arg-type]
    source = Waits(agent)
    agent.source = source  # type: ignore[assignment]
    agent.run()
    [timeout] = source.timeouts
    if 0 < due_in_s < poll_s:
        assert 0 < timeout <= due_in_s - agent_mod.DRAIN_BEFORE_DUE_S
    else:
        assert timeout == poll_s
