"""The default event source: CO-RE programs through libbpf, records from the
ring buffer, decoded into typed events."""
from __future__ import annotations

import logging
from typing import Callable

from otel_exec.config import Config
from otel_exec.core.decode import DecodeError, Decoder
from otel_exec.model.events import Event
from otel_exec.host.identity import HostIdentity
from otel_exec.host.wakeup import SignalWakeup
from otel_exec.core.probes import KernelProbes
from otel_exec.core.ringbuf import RingBuffer

log = logging.getLogger(__name__)


class CoreSource:
    # The ring buffer and the counters are memory-mapped: no capability is
    # needed to read them, nor /proc after the seed.
    run_time_capabilities: set[int] = set()

    def __init__(self, cfg: Config, identity: HostIdentity, probes: KernelProbes | None = None) -> None:
        """probes: their load begun (sources.begin_core_load), or begun now;
        it goes on on a thread of its own until attach() (KernelProbes)."""
        self.decoder = Decoder(identity, not_collected=cfg.not_collected())
        self.decode_errors = 0
        self.probes = probes if probes is not None else KernelProbes(cfg)

    def attach(self) -> None:
        self.probes.attach()
        try:
            self.ring = RingBuffer(self.probes.ringbuf_fd, self.probes.ringbuf_bytes)
            self.ring_bytes = self.probes.ringbuf_bytes
        except BaseException:
            self.probes.close()
            raise

    def wake_on(self, wakeup: SignalWakeup) -> None:
        self.ring.wake_on(wakeup)

    def start(self) -> None:
        self.ring.start_copy_thread()

    def wait(self, timeout_s: float) -> None:
        self.ring.wait(timeout_s)

    def drain(self, handle: Callable[[Event], None], max_records: int | None = None) -> int:
        native = self.decoder.native
        if native is not None:
            return self.ring.drain_events(native, handle, self._malformed, max_records)
        decode = self.decoder.decode

        def one(rec: memoryview) -> None:
            try:
                ev = decode(rec)
            except DecodeError as e:
                self._malformed(e)
                return
            handle(ev)

        return self.ring.drain(one, max_records)

    def _malformed(self, e: Exception) -> None:
        self.decode_errors += 1
        log.error("dropped a malformed record: %s", e)

    def detach(self) -> None:
        """Stop producing events; what is in the ring stays readable."""
        self.probes.detach()

    def counters(self) -> dict[str, int]:
        return {**self.probes.counters(), "decode_errors": self.decode_errors,
                "ringbuf_used_bytes": self.ring.available_bytes()}

    def close(self) -> None:
        self.ring.close()
        self.probes.close()
