"""otel_exec.core.ringbuf against real kernel ring buffers fed by exec events."""
from __future__ import annotations

import mmap
import os
import select
import signal
from collections.abc import Callable

import pytest
from tests.helpers.bpf_testprog import CNT_RING_FULL, CNT_SEEN, REC, RING_BYTES, Rec, config, spawn

from otel_exec.errors import BpfError
from otel_exec.core.libbpf import BpfObject
from otel_exec.core.ringbuf import RingBuffer
from otel_exec.host.wakeup import SignalWakeup

pytest_plugins = ("tests.helpers.bpf_testprog",)  # its fixtures: bpf_prog_path, open_prog, loaded
Opener = Callable[[], BpfObject]
REC_SPACE = (REC.size + 8 + 7) & ~7  # ring bytes one record takes, header included


def _ring(obj: BpfObject) -> RingBuffer:
    return RingBuffer(obj.map_fd("rb"), obj.max_entries("rb"))


@pytest.mark.parametrize("size", [0, 4096 + 1, 3 * 4096, 2048])
def test_size_must_be_power_of_two_pages(size: int) -> None:
    with pytest.raises(ValueError, match="power-of-two multiple"):
        RingBuffer(-1, size)


def test_bad_fd() -> None:
    with pytest.raises(BpfError, match="cannot map ring buffer"):
        RingBuffer(-1, 4096)


@pytest.mark.kernel
def test_records_arrive(loaded: BpfObject) -> None:
    with _ring(loaded) as ring:
        assert ring.available_bytes() == 0
        assert ring.drain(lambda v: pytest.fail("ring should be empty")) == 0
        pids = spawn(3)
        assert ring.available_bytes() == 3 * REC_SPACE
        got: list[Rec] = []
        assert ring.drain(lambda v: got.append(Rec.parse(v))) == 3
        assert ring.available_bytes() == 0
    assert [r.pid for r in got] == pids
    assert [r.seq for r in got] == [0, 1, 2]
    assert all(r.comm == b"true" and r.pad_ok() for r in got)


@pytest.mark.kernel
def test_payload_view_is_exact_and_read_only(loaded: BpfObject) -> None:
    sizes: list[int] = []

    def handle(view: memoryview | bytes) -> None:
        sizes.append(len(view))
        assert memoryview(view).readonly  # a view into the ring, or a copy (bytes) with the C extension
        with pytest.raises(TypeError):
            view[0] = 1

    with _ring(loaded) as ring:
        spawn(1)
        ring.drain(handle)
    assert sizes == [REC.size]


@pytest.mark.kernel
def test_wraparound_in_small_ring(loaded: BpfObject) -> None:
    """Several times the ring's size goes through it, in many drains."""
    n_batches, per_batch = 40, 20
    assert per_batch * REC_SPACE < RING_BYTES  # a batch fits: nothing is dropped
    assert RING_BYTES % REC_SPACE  # so records straddle the end of the ring
    got: list[Rec] = []
    with _ring(loaded) as ring:
        for _ in range(n_batches):
            spawn(per_batch)
            # Odd-sized partial drains move the read position off batch edges.
            ring.drain(lambda v: got.append(Rec.parse(v)), max_records=7)
            ring.drain(lambda v: got.append(Rec.parse(v)))
    total = n_batches * per_batch
    assert total * REC_SPACE > 10 * RING_BYTES
    assert [r.seq for r in got] == list(range(total))
    assert all(r.pad_ok() and r.comm == b"true" for r in got)
    assert loaded.percpu_array_sum("counts", CNT_RING_FULL) == 0


@pytest.mark.kernel
def test_max_records(loaded: BpfObject) -> None:
    seqs: list[int] = []
    with _ring(loaded) as ring:
        spawn(10)
        assert ring.drain(lambda v: seqs.append(Rec.parse(v).seq), max_records=0) == 0
        assert ring.drain(lambda v: seqs.append(Rec.parse(v).seq), max_records=4) == 4
        assert ring.available_bytes() == 6 * REC_SPACE
        assert ring.drain(lambda v: seqs.append(Rec.parse(v).seq), max_records=100) == 6
    assert seqs == list(range(10))


@pytest.mark.kernel
def test_full_ring_drops_and_recovers(loaded: BpfObject) -> None:
    fits = RING_BYTES // REC_SPACE
    got: list[int] = []
    with _ring(loaded) as ring:
        spawn(fits + 10)
        assert ring.drain(lambda v: got.append(Rec.parse(v).seq)) == fits
        assert loaded.percpu_array_sum("counts", CNT_RING_FULL) == 10
        spawn(2)
        assert ring.drain(lambda v: got.append(Rec.parse(v).seq)) == 2
    assert got == list(range(fits + 2))
    assert loaded.percpu_array_sum("counts", CNT_SEEN) == fits + 12


@pytest.mark.kernel
def test_discarded_records_are_skipped(open_prog: Opener) -> None:
    obj = open_prog()
    obj.set_rodata(config(discard_every=3))
    obj.load()
    obj.attach_all()
    seqs: list[int] = []
    with _ring(obj) as ring:
        spawn(10)
        assert ring.available_bytes() == 10 * REC_SPACE  # discarded space is queued too
        assert ring.drain(lambda v: seqs.append(Rec.parse(v).seq)) == 6
        assert ring.available_bytes() == 0
    assert seqs == [1, 2, 4, 5, 7, 8]


@pytest.mark.kernel
def test_handler_error_redelivers_only_the_failing_record(loaded: BpfObject) -> None:
    seqs: list[int] = []
    fail_on = {2}

    def handle(view: memoryview) -> None:
        seq = Rec.parse(view).seq
        if seq in fail_on:
            fail_on.clear()
            raise RuntimeError("handler failed")
        seqs.append(seq)

    with _ring(loaded) as ring:
        spawn(4)
        with pytest.raises(RuntimeError):
            ring.drain(handle)
        assert seqs == [0, 1]
        assert ring.available_bytes() == 2 * REC_SPACE
        assert ring.drain(handle) == 2
    assert seqs == [0, 1, 2, 3]


@pytest.mark.kernel
def test_wait(loaded: BpfObject) -> None:
    with _ring(loaded) as ring:
        assert ring.wait(0.01) is False
        assert select.select([ring], [], [], 0)[0] == []
        spawn(1)
        assert ring.wait(1.0) is True
        assert ring.wait(0) is True  # level-triggered: still unconsumed
        assert select.select([ring], [], [], 0)[0] == [ring]
        ring.drain(lambda v: None)
        assert ring.wait(0.01) is False


@pytest.mark.kernel
def test_a_signal_ends_the_wait_once(loaded: BpfObject) -> None:
    """The agent's stop: a signal ends wait() at once (an interrupted poll
    alone would be retried to its timeout), and the wait reads the wake-up
    fd empty, so that the next one sleeps again."""
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    wakeup = SignalWakeup()
    try:
        with _ring(loaded) as ring:
            ring.wake_on(wakeup)
            os.kill(os.getpid(), signal.SIGUSR1)
            assert ring.wait(60) is False  # only the signal
            assert select.select([wakeup, ring], [], [], 0)[0] == []  # read: not woken again
            spawn(1)
            os.kill(os.getpid(), signal.SIGUSR1)
            assert ring.wait(0) is True  # the records still count
            assert select.select([wakeup], [], [], 0)[0] == []
    finally:
        wakeup.close()
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.kernel
def test_bigger_ring_and_close(open_prog: Opener) -> None:
    obj = open_prog()
    obj.set_rodata(config())
    obj.set_max_entries("rb", 64 * mmap.PAGESIZE)
    obj.load()
    obj.attach_all()
    ring = _ring(obj)
    spawn(300)  # 300 records do not fit 4 pages but do fit 64
    assert ring.drain(lambda v: None) == 300
    ring.close()
    ring.close()  # idempotent
