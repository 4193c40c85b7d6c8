"""The ring copy thread (otel_exec.core._decode_native.RingCopy) against
real kernel ring buffers: it moves records out of the kernel's ring while
the reader does not drain (a reader waiting for the GIL), within its bound,
wakes the reader's wait, and hands every record over in order.

The extension is used here whatever OTEL_EXEC_NATIVE says (that switch only
decides what the agent uses), so this runs in both CI passes.
"""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.helpers.bpf_testprog import CNT_RING_FULL, REC, RING_BYTES, Rec, spawn

from otel_exec.config import Config
from otel_exec.core import _decode_native
from otel_exec.core.libbpf import BpfObject
from otel_exec.core.ringbuf import RingBuffer
from otel_exec.core.source import CoreSource
from otel_exec.host.identity import HostIdentity
from otel_exec.host.wakeup import RingWait
from otel_exec.model import layout
from tests.helpers.agent_run import kernel_available

pytest_plugins = ("tests.helpers.bpf_testprog",)  # its fixtures: bpf_prog_path, open_prog, loaded
REC_SPACE = (REC.size + 8 + 7) & ~7  # ring bytes one record takes, header included


def ring_copy(ring: RingBuffer, max_bytes: int) -> Any:
    return _decode_native.RingCopy(ring._cons_pos, ring._prod_pos, ring._data, ring._fd, max_bytes)


def wait_until(done: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


@pytest.mark.kernel
def test_records_three_rings_long_pass_while_nobody_drains(loaded: BpfObject) -> None:
    fits = RING_BYTES // REC_SPACE
    with RingBuffer(loaded.map_fd("rb"), loaded.max_entries("rb")) as ring:
        copy = ring_copy(ring, 1 << 20)
        try:
            copy.start()
            spawn(3 * fits)
            wait_until(lambda: copy.queued_bytes() == 3 * fits * REC_SPACE)
            assert loaded.percpu_array_sum("counts", CNT_RING_FULL) == 0
            got: list[Rec] = []
            assert copy.drain(lambda v: got.append(Rec.parse(v)), -1, None, None) == 3 * fits
            assert copy.queued_bytes() == 0
        finally:
            copy.close()
    assert [r.seq for r in got] == list(range(3 * fits))
    assert all(r.pad_ok() and r.comm == b"true" for r in got)


@pytest.mark.kernel
def test_a_full_copy_leaves_records_in_the_ring_and_the_kernel_counts_the_rest(loaded: BpfObject) -> None:
    """Its bound holds: two records moved, the ring full behind them, the
    kernel counts what it could not write; a drain hands over all that was
    kept, in order; close() ends a thread waiting for room."""
    fits = RING_BYTES // REC_SPACE
    with RingBuffer(loaded.map_fd("rb"), loaded.max_entries("rb")) as ring:
        copy = ring_copy(ring, 2 * REC_SPACE)
        try:
            copy.start()
            spawn(fits + 10)
            assert copy.queued_bytes() == 2 * REC_SPACE
            assert loaded.percpu_array_sum("counts", CNT_RING_FULL) == 8
            seqs: list[int] = []
            assert copy.drain(lambda v: seqs.append(Rec.parse(v).seq), -1, None, None) == fits + 2
            assert seqs == list(range(fits + 2))
            spawn(5)  # the thread waits for room again
            wait_until(lambda: copy.queued_bytes() == 2 * REC_SPACE)
        finally:
            copy.close()


@pytest.mark.kernel
def test_what_the_thread_moved_wakes_the_readers_wait(loaded: BpfObject) -> None:
    """The ring may be empty by the time the reader waits: the copy's
    notify fd ends the wait, once per move."""
    with RingBuffer(loaded.map_fd("rb"), loaded.max_entries("rb")) as ring:
        copy = ring_copy(ring, 1 << 20)
        wait = RingWait(ring._fd, copy.notify_fd())
        try:
            copy.start()
            assert wait.wait(0.01) is False
            spawn(1)
            wait_until(lambda: copy.queued_bytes() == REC_SPACE)
            assert ring._prod_pos[0] == ring._cons_pos[0]  # the kernel's ring is empty
            assert wait.wait(1.0) is True
            assert wait.wait(0.01) is False
        finally:
            wait.close()
            copy.close()


@pytest.mark.kernel
def test_big_exec_records_four_rings_long_are_all_kept_while_the_reader_is_held_up() -> None:
    """The agent's own programs and 2 MiB ring: execs with 30 KiB of argv
    (records of about 31 KiB, the scaling benchmark's big rows) while the
    reader does nothing. Without the thread the kernel drops most of them
    (the same burst is run without it first, as the control)."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    mark = f"oe-copy-{os.getpid()}-{time.monotonic_ns()}"
    burst = 280  # about 8.7 MB of records
    lost = ("lost_exec_ringbuf_full", "lost_exit_ringbuf_full", "cut_ring_full")
    for with_thread in (False, True):
        source = CoreSource(Config(ringbuf_bytes=2 << 20), HostIdentity.current())
        source.attach()
        try:
            copy = ring_copy(source.ring, 64 << 20)
            if with_thread:
                copy.start()
            big = f"{mark}-{with_thread}-" + "a" * (30 * 1024)
            # From a shell: the programs leave out the execs of this
            # process's own children (the shell's).
            subprocess.run(["/bin/sh", "-c", 'i=0; while [ $i -lt "$2" ]; do /bin/true "$1"; i=$((i+1)); done',
                            "sh", big, str(burst)], check=True)
            execs: list[bytes] = []

            def keep(rec: bytes) -> None:
                if rec[0] == layout.REC_EXEC and big.encode() in rec:
                    execs.append(rec)

            while copy.drain(keep, -1, None, None):
                pass
            counters = source.counters()
        finally:
            copy.close()
            source.close()
        if with_thread:
            assert len(execs) == burst and not any(counters[k] for k in lost), counters
        else:
            assert len(execs) < burst and counters["lost_exec_ringbuf_full"] > 0, counters
