"""The main loop: kernel -> decode -> enrich/lineage -> export."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Protocol, TextIO

from .config import Config
from .decode import DecodeError, Decoder
from .events import ExecEvent, ExitEvent, ForkEvent
from .identity import HostIdentity
from .loader import KernelProbes
from .proctable import ProcessTable
from .redact import RedactionPolicy
from .ringbuf import RingBuffer


class Exporter(Protocol):
    def export(self, ev: ExecEvent) -> None: ...
    def flush(self) -> None: ...


class Agent:
    def __init__(self, cfg: Config, exporters: list[Exporter], log: TextIO = sys.stderr) -> None:
        self.cfg = cfg
        self.exporters = exporters
        self.log = log
        self.identity = HostIdentity.current()
        self.decoder = Decoder(self.identity)
        self.redaction = RedactionPolicy(env_capture=cfg.env_capture, extra_patterns=cfg.redact_patterns,
                                         env_allow=cfg.env_allow)
        self.table = ProcessTable(max_entries=cfg.process_table_size)
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
            ev.env = self.redaction.env(ev.env)
            ev.argv = self.redaction.argv(ev.argv)
            self.table.on_exec(ev)
            for exp in self.exporters:
                exp.export(ev)
            self.exported += 1
        elif isinstance(ev, ForkEvent):
            self.table.on_fork(ev)
        elif isinstance(ev, ExitEvent):
            self.table.on_exit(ev)

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
                for exp in self.exporters:
                    exp.flush()
        # Everything the kernel produced before we stopped is still printed.
        self.ring.drain(self.handle)
        for exp in self.exporters:
            exp.flush()

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def report(self) -> dict[str, int]:
        counters = self.probes.counters() if self.probes else {}
        counters["decode_errors"] = self.decode_errors
        counters["exported"] = self.exported
        counters["process_table_evicted"] = self.table.evicted
        return counters

    def close(self) -> None:
        if self.ring:
            self.ring.close()
        if self.probes:
            self.probes.close()


def install_signal_handlers(agent: Agent) -> None:
    signal.signal(signal.SIGINT, agent.stop)
    signal.signal(signal.SIGTERM, agent.stop)
