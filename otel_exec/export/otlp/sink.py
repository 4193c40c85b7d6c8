"""OtlpSink: exec and exit log records and process spans to an OTLP endpoint.

Records are encoded by encode, queued and sent in batches by batch (one
BatchExporter per signal) over a transport; the resource is resource's.
"""
from __future__ import annotations

import time
from typing import Callable

from otel_exec.export.otlp import encode
from otel_exec.export.otlp.batch import BatchExporter, BatchSettings, MemoryQueue, SpoolQueue
from otel_exec.export.otlp.resource import resource_attributes
from otel_exec.export.otlp.shape import RecordLimits
from otel_exec.export.otlp.transport import OtlpOptions, make_transport
from otel_exec.export.spool import Spool
from otel_exec.host.identity import HostIdentity
from otel_exec.lineage.spans import ProcessSpan
from otel_exec.lineage.traceparent import SAMPLED
from otel_exec.model.events import ExecEvent


def _age_on(identity: HostIdentity, event_ns: Callable[[bytes], int | None]) -> Callable[[bytes], float | None]:
    """How long ago a record's event happened (event_ns: its time, in ns
    since the epoch), measured on the clock the kernel's events are
    converted from (CLOCK_BOOTTIME): a step of the wall clock since the
    agent started does not make records look older or younger."""
    def age_s(record: bytes) -> float | None:
        ns = event_ns(record)
        return None if ns is None else (identity.boot_ns_to_epoch_ns(time.clock_gettime_ns(time.CLOCK_BOOTTIME))
                                        - ns) / 1e9
    return age_s


class OtlpSink:
    """Exec log records and process spans, to an OTLP endpoint, through the
    spool unless it is off."""

    def __init__(self, opts: OtlpOptions, identity: HostIdentity, spool: Spool | None,
                 limits: RecordLimits = RecordLimits()) -> None:
        self.span_set = encode.span_set(opts.span_attributes, opts.span_env)
        self.exit_records = opts.exit_records
        self.limits = limits
        self.spool = spool
        resource = encode.encoded_resource(resource_attributes(identity))

        def exporter(signal: str, prefix: str, delay_ms: int,
                     event_ns: Callable[[bytes], int | None]) -> BatchExporter:
            settings = BatchSettings.from_env(prefix, delay_ms)
            queue = SpoolQueue(spool.signal(signal)) if spool else MemoryQueue(settings.max_queue_size)
            return BatchExporter(signal, make_transport(signal, opts), resource, settings, queue,
                                 _age_on(identity, event_ns))

        # A signal turned off (OTEL_<SIGNAL>_EXPORTER=none) has no exporter
        # and costs no encoding.
        self.logs = exporter("logs", "OTEL_BLRP", 1000, encode.log_time_ns) if "logs" in opts.signals else None
        self.spans = exporter("traces", "OTEL_BSP", 5000, encode.span_end_ns) if "traces" in opts.signals else None
        self.exporters = [b for b in (self.logs, self.spans) if b is not None]
        # The queues' own appends, bound once: a call per record on the
        # reader's hot path, without looking the method up each time. None:
        # that record is not exported.
        self._add_log = self.logs.add if self.logs is not None else None
        self._add_span = self.spans.add if self.spans is not None else None
        self._add_exit = self._add_log if self.exit_records else None

    def start(self) -> None:
        """Hand over the records of the processes found running (the agent
        handled their observed exec events) and, after them, the interval
        no agent watched; then connect and start the export threads: after
        the privilege drop (the constructor, run before it, only reads and
        checks the configuration and the credential files)."""
        gap = self.spool.gap() if self.spool else None
        if gap is not None and self.logs is not None:
            self.logs.add(encode.gap_record(gap.start_ns, gap.end_ns, gap.seconds, gap.clock_step_s))
        self.flush()
        for b in self.exporters:
            b.start()

    def on_exec(self, ev: ExecEvent, span: ProcessSpan) -> None:
        add_log = self._add_log
        if add_log is not None:
            add_log(encode.exec_record(ev, span, self.span_set, self.limits, time.time_ns()))
        else:
            span.attributes = encode.exec_attributes(ev, self.span_set, self.limits).span_attrs()

    def on_observed(self, ev: ExecEvent, span: ProcessSpan | None) -> None:
        """Running before the agent, maybe since before any agent watched: a
        log record of what /proc told, and the same attributes on its span."""
        attrs = encode.Attrs.of(encode.seeded_attributes(ev, self.limits))
        if self.logs is not None:
            self.logs.add(encode.observed_record(ev, span, attrs, ev.timestamp, self.limits.body_max_bytes))
        if span is not None:
            span.attributes = (attrs.span,)

    def on_span_end(self, span: ProcessSpan) -> None:
        """An image ended: its span, unless its parent was not sampled (as a
        ParentBased sampler decides), and its exit record (a log record, so
        that a logs-only backend sees every end, sampled or not)."""
        add_span, add_exit = self._add_span, self._add_exit
        if add_span is not None and span.trace_flags & SAMPLED:
            add_span(encode.span(span))
        if add_exit is not None:
            add_exit(encode.exit_record(span, time.time_ns(), self.limits.repeat_derived))

    def flush(self) -> None:
        """The end of a drain of the ring buffer: everything read so far is
        handed over (written to the spool)."""
        for b in self.exporters:
            b.flush()
        if self.spool:
            self.spool.beat()
        for b in self.exporters:
            b.check()

    def due(self) -> float:
        return min(b.due() for b in self.exporters)

    def close(self, timeout_s: float) -> None:
        self.flush()
        # Both signals flush at once, within the one grace period.
        for b in self.exporters:
            b.begin_shutdown(timeout_s)
        for b in self.exporters:
            b.join()
        if self.spool:
            self.spool.close()

    def stats(self) -> dict[str, int]:
        stats = {k: v for b in self.exporters for k, v in b.stats().items()}
        return {**stats, **(self.spool.stats() if self.spool else {})}
