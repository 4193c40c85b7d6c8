"""BccSource.drain hands at most max_records events and keeps the rest
queued, in order, for the next drain (agent.Agent._drain's parts)."""
from __future__ import annotations

from otel_exec.bcc.source import BccSource


class IdleProgram:
    def consume(self) -> None: ...

    def counter(self, index: int) -> int:
        return 0


def test_drain_hands_parts_in_order_and_keeps_the_rest() -> None:
    source = BccSource.__new__(BccSource)  # no program loaded: only the queue is exercised
    source.program = IdleProgram()  # type: ignore[assignment]
    source._lost_exits = 0
    source._queue = list(range(10))  # type: ignore[arg-type]
    handled: list[object] = []
    assert source.drain(handled.append, 4) == 4 and handled == [0, 1, 2, 3]
    assert source.drain(handled.append, 4) == 4 and source.drain(handled.append, 4) == 2
    assert handled == list(range(10)) and source.drain(handled.append) == 0
    source._queue = list(range(3))  # type: ignore[arg-type]
    assert source.drain(handled.append) == 3 and source._queue == []
