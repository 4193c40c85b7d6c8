"""otel_exec.lineage.proctable's edges the other tests leave: the default
depth of an ancestor walk, and the stale entry of a reused pid handed to
on_drop when its exit arrives (so that its open span still ends)."""
from __future__ import annotations

from otel_exec.lineage.proctable import ProcessTable
from otel_exec.model.events import ExitEvent
from tests.helpers.events import exec_ev


def test_an_ancestor_walk_stops_at_64_by_default() -> None:
    table = ProcessTable()
    for pid in range(100, 171):  # 70 generations below pid 100
        table.on_exec(exec_ev(pid, pid - 1, pid, f"p{pid}"))
    assert [a.pid for a in table.ancestors(170)] == list(range(169, 105, -1))


def test_the_exit_of_a_reused_pid_drops_the_stale_entry_through_on_drop() -> None:
    table = ProcessTable()
    dropped = []
    table.on_drop = dropped.append
    stale = table.on_exec(exec_ev(300, 1, 100, "old"))[0]
    later_holder = ExitEvent(timestamp=5, pid=300, start_ticks=400, exit_code=0, signal=None, core_dumped=False,
                             comm="x")
    assert table.on_exit(later_holder) is None
    assert dropped == [stale] and table.get(300) is None
