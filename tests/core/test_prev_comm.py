"""The comm before exec through each place handle_prepare_exec may keep it:
its tid's slot of prev_comm_slots, or, when that slot is taken, the
prev_comms hash. Whatever the slot holds beforehand, the exec reports the
comm it had, and the slot is left as another exec's or free.

The programs are loaded in this process (the CO-RE backend's own source):
the slot of the exec'ing thread is set up through the map before it execs.
"""
from __future__ import annotations

import os
import struct
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from otel_exec.config import Config
from otel_exec.core.source import CoreSource
from otel_exec.host.identity import HostIdentity
from otel_exec.model.events import Event, ExecEvent

pytestmark = pytest.mark.kernel

# The slot's value as bpf/otel_exec.bpf.c writes it (struct prev_comm_slot).
SLOT = struct.Struct("<Q16s")
BUSY = 2**64 - 1
FREE = 0


def tag(tid: int) -> int:
    return tid << 1 | 1


@pytest.fixture(scope="module")
def source() -> Iterator[CoreSource]:
    src = CoreSource(Config(), HostIdentity.current())
    src.attach()
    yield src
    src.close()


def next_exec(source: CoreSource, pid: int) -> ExecEvent:
    seen: list[ExecEvent] = []

    def keep(ev: Event) -> None:
        if isinstance(ev, ExecEvent) and ev.host_pid == pid:
            seen.append(ev)

    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        source.wait(0.05)
        source.drain(keep, max_records=1)
    assert seen, f"no exec event of pid {pid}"
    return seen[0]


def exec_waiting(tmp_path: Path, source: CoreSource,
                 slot_before: Callable[[int], bytes]) -> tuple[ExecEvent, bytes]:
    """A shell (comm "sh") that waits on a fifo, then execs /bin/true; its
    parent is another shell, as the agent's own children are not reported.
    While it waits, its tid's slot is set to slot_before(tid). The exec's
    event and the slot after it."""
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    outer = subprocess.Popen(["sh", "-c", 'sh -c \'read x < "$1"; exec /bin/true prev-comm-test\' inner "$1" & '
                              'echo $!; wait', "outer", str(fifo)], stdout=subprocess.PIPE, text=True)
    assert outer.stdout is not None
    pid = int(outer.stdout.readline())
    # The inner shell's own exec first: the slot is set once it is done.
    assert next_exec(source, pid).argv[0] == "sh"
    slots = source.probes.obj.max_entries("prev_comm_slots")
    key = struct.pack("<I", pid & (slots - 1))
    source.probes.obj.map_update("prev_comm_slots", key, slot_before(pid))
    with open(fifo, "w") as go:
        go.write("\n")
    assert outer.wait(10) == 0
    ev = next_exec(source, pid)
    slot_after = source.probes.obj.map_lookup("prev_comm_slots", key, SLOT.size)
    assert source.probes.obj.map_lookup("prev_comms", struct.pack("<I", pid), 16) is None
    assert slot_after is not None
    return ev, slot_after


def test_a_free_slot_keeps_the_comm_and_is_freed(tmp_path: Path, source: CoreSource) -> None:
    ev, after = exec_waiting(tmp_path, source, lambda tid: SLOT.pack(FREE, b""))
    assert (ev.argv, ev.prev_comm) == (["/bin/true", "prev-comm-test"], "sh")
    assert SLOT.unpack(after)[0] == FREE


@pytest.mark.parametrize("held", ["another exec in flight", "being written"])
def test_a_taken_slot_leaves_the_comm_to_the_hash(tmp_path: Path, source: CoreSource, held: str) -> None:
    before = SLOT.pack(tag(4_000_000) if held == "another exec in flight" else BUSY, b"other")
    ev, after = exec_waiting(tmp_path, source, lambda tid: before)
    assert (ev.argv, ev.prev_comm) == (["/bin/true", "prev-comm-test"], "sh")
    assert after == before


def test_a_slot_left_by_a_dead_thread_of_the_same_tid_is_overwritten(tmp_path: Path, source: CoreSource) -> None:
    # An exec that died after sched_prepare_exec left its tag; the tid came
    # back to a new thread, whose own comm is the one reported.
    ev, after = exec_waiting(tmp_path, source, lambda tid: SLOT.pack(tag(tid), b"stale"))
    assert (ev.argv, ev.prev_comm) == (["/bin/true", "prev-comm-test"], "sh")
    assert SLOT.unpack(after)[0] == FREE
