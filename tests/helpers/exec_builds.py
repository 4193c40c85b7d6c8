"""The exec program's two builds, loaded at once in this process:
handle_exec (plain loads through bpf_rdonly_cast; what this kernel runs) and
handle_exec_probed (probe reads; what a kernel before 6.2 runs), and a drain
of their rings."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import pytest

from otel_exec.config import Config
from otel_exec.core import probes
from otel_exec.core.ringbuf import RingBuffer


@contextlib.contextmanager
def both_builds(monkeypatch: pytest.MonkeyPatch, cfg: Config) -> Iterator[list[tuple[probes.KernelProbes, RingBuffer]]]:
    """Both builds under cfg, direct first; closed after."""
    loaded: list[tuple[probes.KernelProbes, RingBuffer]] = []
    try:
        for kfunc in (probes.DIRECT_READS_KFUNC, b"no-such-kfunc"):  # the second: as on a kernel without it
            monkeypatch.setattr(probes, "DIRECT_READS_KFUNC", kfunc)
            kp = probes.KernelProbes(cfg)
            kp.attach()
            loaded.append((kp, RingBuffer(kp.ringbuf_fd, kp.ringbuf_bytes)))
        yield loaded
    finally:
        for kp, ring in loaded:
            ring.close()
            kp.close()


@contextlib.contextmanager
def draining(rings: list[RingBuffer]) -> Iterator[list[list[bytes]]]:
    """Every record of each ring, drained while the block runs (other
    execs on a busy machine would fill a ring left to wait) and once more
    at its end."""
    got: list[list[bytes]] = [[] for _ in rings]
    stop = threading.Event()

    def drain(ring: RingBuffer, into: list[bytes]) -> None:
        while not stop.is_set():
            ring.wait(0.01)
            ring.drain(lambda rec: into.append(bytes(rec)))
        ring.drain(lambda rec: into.append(bytes(rec)))

    readers = [threading.Thread(target=drain, args=(ring, into), daemon=True) for ring, into in zip(rings, got)]
    for reader in readers:
        reader.start()
    try:
        yield got
    finally:
        stop.set()
        for reader in readers:
            reader.join()
