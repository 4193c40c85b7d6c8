"""The programs wake a reader waiting on the ring once per wakeup_bytes
queued: with the record that crosses a multiple of it, not with every record
while more than that waits. A wake-up is an irq_work, a self-interrupt (an
exit to the hypervisor on a virtual machine); a reader behind a storm, busy
draining, got one per exec and exit before, which made those the programs'
largest cost (BENCHMARKS.md, branch bpf9).

The wake-ups are counted by an edge-triggered epoll on the ring: it reports
the fd once per wake-up the kernel makes on it (several between two looks
count once), and nothing for records written without one. Only this test's
execs write exec records (the comm filter); the machine's other exits still
write their small records.
"""
from __future__ import annotations

import select
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_exec.config import Config
from otel_exec.core.source import CoreSource
from otel_exec.host.identity import HostIdentity

pytestmark = pytest.mark.kernel

COMM = "oe-wake-test"
RING_BYTES = 4 << 20
WAKEUP_BYTES = RING_BYTES // 4  # Config's default wakeup_fraction
ENV_BYTES = 60 * 1024  # each exec record a little more than this


@pytest.fixture
def source() -> Iterator[CoreSource]:
    cfg = Config(comm=[COMM], ringbuf_bytes=RING_BYTES, env_max_bytes=2 * ENV_BYTES)
    assert int(RING_BYTES * cfg.wakeup_fraction) == WAKEUP_BYTES
    src = CoreSource(cfg, HostIdentity.current())
    src.attach()
    yield src
    src.close()


def test_one_wakeup_per_wakeup_bytes_queued(source: CoreSource, tmp_path: Path) -> None:
    program = tmp_path / COMM
    program.symlink_to("/bin/true")
    env = {"OE_TEST_PAD": "x" * ENV_BYTES}

    def queued() -> int:
        return source.ring.available_bytes()

    def exec_until(level: int) -> None:
        while queued() < level:
            subprocess.run([str(program)], env=env, check=True)

    def woken(timeout_s: float) -> bool:
        return bool(edge.poll(timeout_s))

    source.drain(lambda ev: None)
    with select.epoll() as edge:
        edge.register(source.probes.ringbuf_fd, select.EPOLLIN | select.EPOLLET)
        woken(0)  # whatever arrived since the drain, reported once at registration
        exec_until(WAKEUP_BYTES // 2)
        assert not woken(0.2), "woken below wakeup_bytes"
        exec_until(WAKEUP_BYTES)
        assert woken(5), "not woken once wakeup_bytes were queued"
        # More waits, short of the next multiple: no wake-up per record.
        assert queued() < WAKEUP_BYTES + 2 * (ENV_BYTES + 4096)
        for _ in range(3):
            subprocess.run([str(program)], env=env, check=True)
        assert queued() < 2 * WAKEUP_BYTES - 4 * ENV_BYTES
        assert not woken(0.2), "woken again before the next multiple of wakeup_bytes"
        exec_until(2 * WAKEUP_BYTES)
        assert woken(5), "not woken at the next multiple of wakeup_bytes"
    source.drain(lambda ev: None)
    assert {k: v for k, v in source.counters().items() if k.startswith("lost_") and v} == {}
