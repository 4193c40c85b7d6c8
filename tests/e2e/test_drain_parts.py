"""The reader loop hands a large backlog to the sinks in parts (agent.DRAIN_RECORDS),
each part flushed (written to the spool) before the next is read, so the
encoded records of a whole ring never wait in memory at once."""
from __future__ import annotations

from typing import Callable

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
