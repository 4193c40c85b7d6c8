"""The main loop: kernel -> decode -> enrich/lineage -> export."""
from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterable, Protocol, TextIO

from otel_exec.host import privileges, safefs
from otel_exec.host.executables import ExecutableIdentities
from otel_exec.config import Config
from otel_exec.core.decode import Strings
from otel_exec.errors import UsageError
from otel_exec.model.events import Event, ExecEvent, UnreportedExecEvent
from otel_exec.host.identity import HostIdentity
from otel_exec.lineage.proctable import ProcessInfo, ProcessTable
from otel_exec.policy.redact import RedactionPolicy
from otel_exec.sources import make_source
from otel_exec.lineage.spans import SpanLineage, TraceparentTrust
from otel_exec.lineage.traceparent import trace_context_entries


class Sink(Protocol):
    """Where events go: the console, OTLP. Called from the reader thread.
    Made before the privilege drop (it may need root to open its files),
    it starts no thread and opens no connection until start(), which comes
    after the drop."""

    def start(self) -> None: ...
    def seed(self, infos: list[ProcessInfo]) -> None: ...
    def on_exec(self, ev: ExecEvent, info: ProcessInfo, previous: ProcessInfo | None) -> None: ...
    def on_exit(self, info: ProcessInfo, timestamp: int) -> None: ...
    def on_unreported_exec(self, info: ProcessInfo, timestamp: int) -> None: ...
    def on_drop(self, info: ProcessInfo) -> None: ...
    def flush(self) -> None: ...
    def close(self, still_open: list[ProcessInfo], timeout_s: float) -> None: ...
    def stats(self) -> dict[str, int]: ...


class EventSource(Protocol):
    """Where events come from: the CO-RE programs (source_core) or BCC."""

    def wait(self, timeout_s: float) -> None: ...
    def drain(self, handle: Callable[[Event], None]) -> int: ...
    def detach(self) -> None: ...
    def counters(self) -> dict[str, int]: ...
    def close(self) -> None: ...
    # Capabilities still needed once attached (privileges.drop keeps them).
    run_time_capabilities: set[int]


class Agent:
    def __init__(self, cfg: Config, sinks: list[Sink], identity: HostIdentity, log: TextIO = sys.stderr) -> None:
        self.cfg = cfg
        self.sinks = sinks
        self.log = log
        self.identity = identity
        self.redaction = RedactionPolicy(env_capture=cfg.env_capture, extra_patterns=cfg.redact_patterns,
                                         env_allow=cfg.env_allow, allow_patterns=cfg.redact_allow)
        self.table = ProcessTable(max_entries=cfg.process_table_size)
        self.table.on_drop = self._dropped
        self.lineage = SpanLineage(TraceparentTrust.parse(cfg.trust_traceparent), self.redaction.scan)
        self.stopping = threading.Event()
        self.exported = 0
        self.exits_seen = 0
        self.source: EventSource | None = None
        # Resolved before attaching: an unknown user is a usage error that
        # costs no load.
        self.user = privileges.resolve_user(cfg.user) if cfg.user else None
        self.tick: Callable[[], None] = lambda: None  # called every loop (otel_exec.export.telemetry)
        self.executables = ExecutableIdentities(
            cfg.executable_sha256_max_bytes if cfg.executable_sha256 else None, cfg.executable_cache_entries,
            cfg.executable_wait_ms / 1000) if cfg.executable_identity else None

    def attach(self) -> None:
        """Load and attach the programs: events queue in the ring buffer
        from now on, until run() reads them."""
        self.source = make_source(self.cfg, self.identity, self.redaction.argv, self._env, self.log)

    def _env(self, env: list[str]) -> Strings:
        """The environment as emitted, carrying the trace context lineage
        reads from it as it was (before redaction, in every mode)."""
        redacted = Strings(self.redaction.env(env))
        redacted.trace_context = trace_context_entries(env)
        return redacted

    def start(self, also_start: Iterable[Callable[[], None]] = ()) -> None:
        """Seed, drop privileges while the agent is still one thread, then
        start the sinks and `also_start`: every thread they make inherits
        the dropped state, and check_threads proves it before and after."""
        # Attached first, seeded after: a process that starts in between is
        # seen twice (harmless) rather than not at all.
        if self.source is None:
            self.attach()
        assert self.source is not None
        ready = self._open_ready_dir()
        try:
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
            agent_nice = privileges.raise_reader_priority()
            dropped = privileges.drop(self.user, keep=self.source.run_time_capabilities)
            privileges.check_threads(dropped)
            for sink in self.sinks:
                sink.start()
            if self.executables is not None:
                self.executables.start()
            for start in also_start:
                start()
            privileges.restore_other_threads_priority(agent_nice)
            privileges.check_threads(dropped)
            if ready is not None:
                self._write_ready_file(*ready)
        finally:
            if ready is not None:
                os.close(ready[0])

    def _open_ready_dir(self) -> tuple[int, str] | None:
        """The --ready-file's directory, checked and held open from before
        the drop, so the file is written where it was checked."""
        if not self.cfg.ready_file:
            return None
        try:
            return safefs.split(self.cfg.ready_file, trust=[self.user.pw_uid] if self.user else [])
        except safefs.UnsafePath as e:
            raise UsageError(f"--ready-file: {e}") from None
        except OSError as e:
            raise UsageError(f"--ready-file {self.cfg.ready_file}: {e.strerror}") from None

    def _write_ready_file(self, dir_fd: int, name: str) -> None:
        try:
            safefs.replace_file(dir_fd, name, f"{os.getpid()}\n".encode(), 0o644)
        except OSError as e:
            raise UsageError(f"cannot write --ready-file {self.cfg.ready_file}: {e.strerror}"
                             f"{' (as --user ' + self.cfg.user + ')' if self.cfg.user else ''}") from None

    def handle(self, ev: Event) -> None:
        if isinstance(ev, ExecEvent):
            parent = self.table.image_parent(ev)
            if not ev.parent_exec_id and parent is not None:
                ev.parent_exec_id = parent.exec_id  # the kernel could not see the parent's executable
            late = self.executables.on_exec(ev) if self.executables is not None else None
            info, previous = self.table.on_exec(ev)
            info.late_identity = late
            self.lineage.on_exec(ev, info, previous, parent)
            for sink in self.sinks:
                sink.on_exec(ev, info, previous)
            self.exported += 1
        elif isinstance(ev, UnreportedExecEvent):
            ended = self.table.on_unreported_exec(ev)
            if ended is not None:
                for sink in self.sinks:
                    sink.on_unreported_exec(ended, ev.timestamp)
        else:
            self.exits_seen += 1
            ended = self.table.on_exit(ev)
            if ended is not None:
                for sink in self.sinks:
                    sink.on_exit(ended, ev.timestamp)

    def _dropped(self, info: ProcessInfo) -> None:
        for sink in self.sinks:
            sink.on_drop(info)

    def run(self) -> None:
        source = self.source
        assert source is not None
        deadline = time.monotonic() + self.cfg.duration if self.cfg.duration else None
        while not self.stopping.is_set():
            timeout = self.cfg.poll_interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                timeout = min(timeout, left)
            source.wait(timeout)
            source.drain(self.handle)
            # Every loop, also when nothing came: the spool's heartbeat says
            # the agent is watching (a later start reports the gap after it).
            for sink in self.sinks:
                sink.flush()
            self.tick()
        # Detach first, then drain: everything the kernel produced is handled
        # and the counters read later describe exactly that.
        source.detach()
        source.drain(self.handle)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Spans still open end now, marked incomplete; queues are flushed."""
        still_open = self.table.entries()
        if self.executables is not None:
            self.executables.stop()
        for sink in self.sinks:
            sink.close(still_open, timeout_s)

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def report(self) -> dict[str, int]:
        counters = self.source.counters() if self.source else {}
        counters["exported"] = self.exported
        counters["exits_seen"] = self.exits_seen
        counters["process_table_size"] = len(self.table)
        counters["process_table_evicted"] = self.table.evicted
        counters["malformed_traceparent"] = self.lineage.malformed_traceparent
        counters["untrusted_traceparent"] = self.lineage.untrusted_traceparent
        if self.executables is not None:
            counters.update(self.executables.stats())
        for sink in self.sinks:
            counters.update(sink.stats())
        return counters

    def close(self) -> None:
        if self.source:
            self.source.close()


def install_signal_handlers(agent: Agent) -> None:
    signal.signal(signal.SIGINT, agent.stop)
    signal.signal(signal.SIGTERM, agent.stop)
