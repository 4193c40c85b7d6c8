"""The main loop: kernel -> decode -> enrich/lineage -> export."""
from __future__ import annotations

import gc
import math
import signal
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

from otel_exec.health import ReadyFile
from otel_exec.host import privileges, procfs
from otel_exec.host.executables import ExecutableIdentities
from otel_exec.config import Config
from otel_exec.errors import UsageError
from otel_exec.model.events import Event, ExecEvent, ExitEvent, UnreportedExecEvent
from otel_exec.host.identity import HostIdentity
from otel_exec.host.procevents import observed_execs
from otel_exec.host.wakeup import SignalWakeup
from otel_exec.lineage.proctable import ProcessTable
from otel_exec.policy.redact import RedactionPolicy
from otel_exec.policy.selection import Selection
from otel_exec.policy.stage import ExecPolicy
from otel_exec.sources import start_source
from otel_exec.lineage.spans import ProcessSpan, SpanLineage, TraceparentTrust
from otel_exec.lineage.traceparent import TraceContextCarrier

if TYPE_CHECKING:
    from otel_exec.core.probes import KernelProbes


# Records of one drain before the sinks flush (write the spool): a few MiB
# of encoded records at most, and more than a drain at full storm rate.
DRAIN_RECORDS = 1024
# The loop's clock-driven chores (the sinks' flush when nothing was read: the
# spool's heartbeat, the export threads' check; the stats line, the heap trim,
# the ready file) run at most this often, not on every wake-up: each costs
# little, but a wake-up that reads nothing should cost little beyond the wait.
# Every one of them needs a second's cadence at most.
HOUSEKEEPING_S = 0.5
# A sink's send due before the next drain would go without the records the
# ring holds by then: the reader drains this long before it instead, so the
# request carries them (at low exec rates one request per schedule delay,
# not one per drain). Room for the drain and the flush to come first.
DRAIN_BEFORE_DUE_S = 0.02


class Sink(Protocol):
    """Where events go: the console, OTLP. Called from the reader thread.
    Made before the privilege drop (it may need root to open its files),
    it starts no thread and opens no connection until start(), which comes
    after the drop."""

    def start(self) -> None: ...
    # An exec the kernel reported and the span lineage opened for its image.
    def on_exec(self, ev: ExecEvent, span: ProcessSpan) -> None: ...
    # A process found running in /proc at start (an observed exec event,
    # handled like the kernel's) and its span; None for pid 1 and kernel
    # threads, which get none.
    def on_observed(self, ev: ExecEvent, span: ProcessSpan | None) -> None: ...
    # A span lineage ended (exit, re-exec, eviction, agent stop).
    def on_span_end(self, span: ProcessSpan) -> None: ...
    def flush(self) -> None: ...
    # time.monotonic() of its next send of what was flushed (inf: none due).
    def due(self) -> float: ...
    def close(self, timeout_s: float) -> None: ...
    def stats(self) -> dict[str, int]: ...


class EventSource(Protocol):
    """Where events come from: the CO-RE programs (source_core) or BCC."""

    # Until the ring has records, timeout_s passes, or a signal came
    # (wake_on: the stop signals' wake-up fd ends it).
    def wait(self, timeout_s: float) -> None: ...
    def wake_on(self, wakeup: SignalWakeup) -> None: ...
    # Its own threads, if any: started after the privilege drop, by the reader.
    def start(self) -> None: ...
    # Hands up to max_records (None: all) queued events to handle; returns how many.
    def drain(self, handle: Callable[[Event], None], max_records: int | None = None) -> int: ...
    def detach(self) -> None: ...
    def counters(self) -> dict[str, int]: ...
    def close(self) -> None: ...
    # Capabilities still needed once attached (privileges.drop keeps them).
    run_time_capabilities: set[int]
    ring_bytes: int  # the size of its ring buffer


class Agent:
    def __init__(self, cfg: Config, sinks: list[Sink], identity: HostIdentity) -> None:
        self.cfg = cfg
        self.sinks = sinks
        self.identity = identity
        carrier = TraceContextCarrier(cfg.traceparent_env, cfg.tracestate_env)
        self.policy = ExecPolicy(RedactionPolicy(env_capture=cfg.env_capture, extra_patterns=cfg.redact_patterns,
                                                 env_allow=cfg.env_allow, allow_patterns=cfg.redact_allow,
                                                 trace_context_names=carrier.names),
                                 cfg.sample_rate, carrier.entries)
        self.trace_context_names = tuple(carrier.names.values())
        # The kernel applies the filters to execs; this, to the processes
        # found running at start (observe_running).
        self.selection = self._selection(cfg) if cfg.filtered() else None
        self.table = ProcessTable(max_entries=cfg.process_table_size)
        self.lineage = SpanLineage(self.table, TraceparentTrust.parse(cfg.trust_traceparent), self.policy.redaction.scan,
                                   carrier.entries)
        # Bound once: _lineage_native's on_exit, looked up on the lineage,
        # makes a bound method per call, and an exit is most records.
        self._lineage_on_exit = self.lineage.on_exit
        self.stopping = threading.Event()
        self.exported = 0
        self.exits_seen = 0
        self.source: EventSource | None = None
        # The stop signals' wake-up fd (install_signal_handlers), which ends the source's wait.
        self.wakeup: SignalWakeup | None = None
        self._attached: Callable[[], EventSource] | None = None  # begin_attach's, until attach()
        self.ready: ReadyFile | None = None
        # Resolved before attaching: an unknown user is a usage error that
        # costs no load.
        self.user = privileges.resolve_user(cfg.user) if cfg.user else None
        self.tick: Callable[[], None] = lambda: None  # called on the loop's housekeeping (HOUSEKEEPING_S)
        self._housekeeping_s = HOUSEKEEPING_S
        self._next_housekeeping = 0.0  # time.monotonic() of the next housekeeping
        self.executables = ExecutableIdentities(
            cfg.executable_sha256_max_bytes if cfg.executable_sha256 else None, cfg.executable_cache_entries,
            cfg.executable_wait_ms / 1000) if cfg.executable_identity else None

    @staticmethod
    def _selection(cfg: Config) -> Selection:
        return Selection(cfg.comm, cfg.exclude_comm, cfg.path_prefix, cfg.uid,
                         procfs.pid_ns() if cfg.container_only else None, [c.path for c in cfg.cgroups()])

    def begin_attach(self, loading: KernelProbes | None = None) -> None:
        """Begin loading the programs, or take over the load
        sources.begin_core_load began: the load goes on on a thread of its
        own (sources.start_source) while this one does the rest of the
        start, until attach()."""
        self._attached = start_source(self.cfg, self.identity, loading)

    def attach(self) -> None:
        """Load and attach the programs, or wait for the load begin_attach
        began and attach them: events queue in the ring buffer from now on,
        until run() reads them. The load's thread has ended by then."""
        attached = self._attached or start_source(self.cfg, self.identity)
        self._attached = None
        self.source = attached()
        if self.wakeup is not None:
            self.source.wake_on(self.wakeup)

    def start(self, also_start: Iterable[Callable[[], None]] = ()) -> None:
        """Handle the processes already running, drop privileges while the
        agent is still one thread, then start the sinks and `also_start`:
        every thread they make inherits the dropped state, and check_threads
        proves it before and after."""
        # Attached first, /proc read after: a process that starts in between
        # is seen twice (harmless) rather than not at all.
        if self.source is None:
            self.attach()
        assert self.source is not None
        if self.cfg.ready_file:
            self.ready = ReadyFile(self.cfg.ready_file, trust=[self.user.pw_uid] if self.user else [])
        # The sinks are all made by now (cli adds them after the agent).
        self.lineage.on_end = [sink.on_span_end for sink in self.sinks]
        self.observe_running()
        # Everything loaded so far (modules, the table) lives as long as
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
        # After the restore: the source's threads keep the reader's priority.
        self.source.start()
        privileges.check_threads(dropped)
        if self.ready is not None:
            self._write_ready_file(self.ready)

    def observe_running(self, proc: str = "/proc") -> None:
        """The processes running now, as observed exec events on the kernel
        events' path; one the table knows already (from an event) is left
        as the event put it, as events know more."""
        selection = self.selection
        # Their user ids only matter to --trust-traceparent lists and --uid.
        with_ids = not self.lineage.trust.any_uid or (selection is not None and selection.needs_uid)
        for ev in observed_execs(self.identity, proc, with_ids, self.trace_context_names, self._drain_if_filling):
            if self.table.knows(ev):
                continue
            if selection is not None and not self._selected(selection, ev, proc):
                # As the kernel's exec the filters drop: no record, no span,
                # no table entry (its children start traces of their own).
                self.lineage.on_unreported_exec(UnreportedExecEvent(ev.timestamp, ev.host_pid, ev.start_ticks))
                continue
            self.handle(ev)

    @staticmethod
    def _selected(selection: Selection, ev: ExecEvent, proc: str) -> bool:
        """Whether the filters report an observed process; its pid
        namespace and cgroup are read only for the filters that need them."""
        pid_ns: int | None = None
        cgroup_path: str | None = None
        if selection.needs_pid_ns:
            try:
                pid_ns = procfs.pid_ns(ev.host_pid, proc)
            except OSError:
                pass  # gone, or unreadable: not known to pass
        if selection.needs_cgroup:
            cgroup_path = procfs.cgroup_path(ev.host_pid, proc)
        return selection.reports(ev.comm, ev.uid, ev.pathname, pid_ns, cgroup_path)

    def _drain_if_filling(self) -> None:
        """Reading /proc at start takes seconds with tens of thousands of
        processes, and the kernel's events queue in the ring meanwhile:
        drain it before it fills. Only then: lineage is best when every
        running process is known before the first kernel event. The identity
        worker starts after the drop, so these execs do not wait for it (their
        files' identities ride on their spans)."""
        if self.source is None or (self.source.counters().get("ringbuf_used_bytes", 0)
                                   < self.source.ring_bytes * self.cfg.wakeup_fraction):
            return
        if self.executables is None:
            self.source.drain(self.handle)
            return
        wait_s, self.executables.wait_s = self.executables.wait_s, 0.0
        try:
            self.source.drain(self.handle)
        finally:
            self.executables.wait_s = wait_s

    def _write_ready_file(self, ready: ReadyFile) -> None:
        try:
            ready.write()
        except OSError as e:
            raise UsageError(f"cannot write --ready-file {self.cfg.ready_file}: {e.strerror}"
                             f"{' (as --user ' + self.cfg.user + ')' if self.cfg.user else ''}") from None

    def handle(self, ev: Event) -> None:
        # An exit is the most frequent record (one per process, reported or
        # not): tested first and by its exact type (the decoders make
        # events of exactly these types), cheaper than isinstance's misses.
        if type(ev) is ExitEvent:
            self.exits_seen += 1
            self._lineage_on_exit(ev)
        elif isinstance(ev, ExecEvent):
            self.policy.apply(ev)
            if ev.observed:
                span = self.lineage.on_exec(ev)
                for sink in self.sinks:
                    sink.on_observed(ev, span)
            else:
                # The file's identity first (it may wait a little for it),
                # so that every sink sees it on the event.
                late = self.executables.on_exec(ev) if self.executables is not None else None
                span = self.lineage.on_exec(ev)
                if span is not None:
                    span.late_identity = late
                for sink in self.sinks:
                    sink.on_exec(ev, span)  # type: ignore[arg-type]  # every reported image has one
                self.exported += 1
        else:
            self.lineage.on_unreported_exec(ev)  # type: ignore[arg-type]  # the one type left

    def run(self) -> None:
        source = self.source
        assert source is not None
        deadline = time.monotonic() + self.cfg.duration if self.cfg.duration else None
        # A stats line more often than the housekeeping's own cadence is not late for it.
        self._housekeeping_s = min(HOUSEKEEPING_S, self.cfg.stats_interval or HOUSEKEEPING_S)
        self._next_housekeeping = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            timeout = self.cfg.poll_interval
            # A send due passed (taken by now, or its thread held up) is no reason to wake early.
            drain_by = min((sink.due() for sink in self.sinks), default=math.inf) - DRAIN_BEFORE_DUE_S - now
            if 0 < drain_by < timeout:
                timeout = drain_by
            if deadline is not None:
                left = deadline - now
                if left <= 0:
                    break
                timeout = min(timeout, left)
            source.wait(timeout)
            read = self._drain(source)
            # What a drain read is handed over (written to the spool) at once;
            # when nothing came, the flush still runs on the housekeeping
            # cadence: the spool's heartbeat says the agent is watching (a
            # later start reports the gap after it).
            if not self._housekeep_if_due() and read:
                for sink in self.sinks:
                    sink.flush()
        # Detach first, then drain: everything the kernel produced is handled
        # and the counters read later describe exactly that.
        source.detach()
        self._drain(source, until_stopped=False)

    def _housekeep_if_due(self) -> bool:
        """The clock-driven chores (HOUSEKEEPING_S), the sinks' flush first,
        when their time has come; whether they ran."""
        now = time.monotonic()
        if now < self._next_housekeeping:
            return False
        self._next_housekeeping = now + self._housekeeping_s
        for sink in self.sinks:
            sink.flush()
        self.tick()
        if self.ready is not None:
            self.ready.refresh()
        return True

    def _drain(self, source: EventSource, until_stopped: bool = True) -> int:
        """Everything queued, handed to the sinks in parts of DRAIN_RECORDS:
        after the reader was held up (a busy machine) the ring holds
        thousands of records, whose encoded records would otherwise all
        wait in memory for the end of one drain. The caller flushes the
        last part. Returns how many records were read.

        While the host execs faster than the agent reads, the ring never
        empties and this loop would never return: between parts the
        housekeeping still runs when due (the heap trim, the stats line,
        the ready file, which a health check reads), and a stop request
        ends it (until_stopped), the rest is read after detaching."""
        read = 0
        while (part := source.drain(self.handle, DRAIN_RECORDS)) >= DRAIN_RECORDS:
            read += part
            if not self._housekeep_if_due():
                for sink in self.sinks:
                    sink.flush()
            if until_stopped and self.stopping.is_set():
                break
        return read + part

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Spans still open end now, marked incomplete; queues are flushed."""
        self.lineage.close()
        if self.executables is not None:
            self.executables.stop()
        for sink in self.sinks:
            sink.close(timeout_s)

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
        if self.wakeup is not None:
            self.wakeup.close()
            self.wakeup = None
        if self.ready is not None:
            self.ready.close()
            self.ready = None


def install_signal_handlers(agent: Agent) -> None:
    """SIGINT and SIGTERM stop the agent: the handler sets `stopping`, and
    the signals' wake-up fd ends the source's wait at once, so the loop sees
    it without waiting out --poll-interval. Before the source is attached
    (Agent.attach gives it the fd) and the privileges dropped; in the main
    thread."""
    agent.wakeup = SignalWakeup()
    signal.signal(signal.SIGINT, agent.stop)
    signal.signal(signal.SIGTERM, agent.stop)
