"""The main loop: kernel -> decode -> enrich/lineage -> export."""
from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from typing import Protocol, TextIO

from .config import Config
from .decode import DecodeError, Decoder
from .events import ExecEvent, ExitEvent
from .identity import HostIdentity
from .loader import KernelProbes
from .proctable import ProcessInfo, ProcessTable
from .redact import RedactionPolicy
from .ringbuf import RingBuffer
from .spans import SpanLineage


class Sink(Protocol):
    """Where events go: the console, OTLP. Called from the reader thread."""

    def seed(self, infos: list[ProcessInfo]) -> None: ...
    def on_exec(self, ev: ExecEvent, info: ProcessInfo, previous: ProcessInfo | None) -> None: ...
    def on_exit(self, info: ProcessInfo, timestamp: int) -> None: ...
    def on_drop(self, info: ProcessInfo) -> None: ...
    def flush(self) -> None: ...
    def close(self, still_open: list[ProcessInfo], timeout_s: float) -> None: ...
    def stats(self) -> dict[str, int]: ...


class Agent:
    def __init__(self, cfg: Config, sinks: list[Sink], identity: HostIdentity, log: TextIO = sys.stderr) -> None:
        self.cfg = cfg
        self.sinks = sinks
        self.log = log
        self.identity = identity
        self.redaction = RedactionPolicy(env_capture=cfg.env_capture, extra_patterns=cfg.redact_patterns,
                                         env_allow=cfg.env_allow)
        self.decoder = Decoder(identity, argv_transform=self.redaction.argv, env_transform=self.redaction.env)
        self.table = ProcessTable(max_entries=cfg.process_table_size)
        self.table.on_drop = self._dropped
        self.lineage = SpanLineage()
        self.path_prefixes = tuple(cfg.path_prefix)
        self.stopping = threading.Event()
        self.decode_errors = 0
        self.exported = 0
        self.probes: KernelProbes | None = None
        self.ring: RingBuffer | None = None

    def start(self) -> None:
        # Attach first, seed after: a process that starts in between is seen
        # twice (harmless) rather than not at all.
        self.probes = KernelProbes(self.cfg)
        self.ring = RingBuffer(self.probes.ringbuf_fd, self.probes.ringbuf_bytes)
        self.table.seed_from_proc(self.identity)
        seeded = self.table.entries()
        for info in seeded:
            if info.seeded_from_proc and info.argv:
                info.argv = self.redaction.argv(info.argv)
        self.lineage.seed(self.table, self.identity)
        for sink in self.sinks:
            sink.seed(seeded)
        # Everything loaded so far (modules, the seeded table) lives as long as
        # the agent: keep it out of the collector's scans, and collect less
        # often; per-event objects are acyclic and freed by refcounting.
        gc.freeze()
        gc.set_threshold(20000, 20, 20)
        if self.cfg.ready_file:
            tmp = f"{self.cfg.ready_file}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, self.cfg.ready_file)

    def handle(self, rec: memoryview) -> None:
        try:
            ev = self.decoder.decode(rec)
        except DecodeError as e:
            self.decode_errors += 1
            print(f"otel-exec: dropped a malformed record: {e}", file=self.log)
            return
        if isinstance(ev, ExecEvent):
            if self.path_prefixes and not ev.pathname.startswith(self.path_prefixes) \
                    and not ev.cmdpath.startswith(self.path_prefixes):
                return
            info, previous = self.table.on_exec(ev)
            self.lineage.on_exec(ev, info, previous, self.table.get(ev.image_ppid))
            for sink in self.sinks:
                sink.on_exec(ev, info, previous)
            self.exported += 1
        elif isinstance(ev, ExitEvent):
            ended = self.table.on_exit(ev)
            if ended is not None:
                for sink in self.sinks:
                    sink.on_exit(ended, ev.timestamp)

    def _dropped(self, info: ProcessInfo) -> None:
        for sink in self.sinks:
            sink.on_drop(info)

    def run(self) -> None:
        assert self.ring is not None
        deadline = time.monotonic() + self.cfg.duration if self.cfg.duration else None
        while not self.stopping.is_set():
            timeout = self.cfg.poll_interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                timeout = min(timeout, left)
            self.ring.wait(timeout)
            if self.ring.drain(self.handle):
                for sink in self.sinks:
                    sink.flush()
        # Detach first, then drain: everything the kernel produced is handled
        # and the counters read later describe exactly that.
        assert self.probes is not None
        self.probes.detach()
        self.ring.drain(self.handle)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Spans still open end now, marked incomplete; queues are flushed."""
        still_open = self.table.entries()
        for sink in self.sinks:
            sink.close(still_open, timeout_s)

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def report(self) -> dict[str, int]:
        counters = self.probes.counters() if self.probes else {}
        counters["decode_errors"] = self.decode_errors
        counters["exported"] = self.exported
        counters["process_table_evicted"] = self.table.evicted
        counters["malformed_traceparent"] = self.lineage.malformed_traceparent
        for sink in self.sinks:
            counters.update(sink.stats())
        return counters

    def close(self) -> None:
        if self.ring:
            self.ring.close()
        if self.probes:
            self.probes.close()


def install_signal_handlers(agent: Agent) -> None:
    signal.signal(signal.SIGINT, agent.stop)
    signal.signal(signal.SIGTERM, agent.stop)
