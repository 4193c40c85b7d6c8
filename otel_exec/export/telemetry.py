"""The agent's own telemetry: OTel metrics next to the exec data, and a
one-line summary on stderr every --stats-interval seconds.

Everything comes from Agent.report() (kernel counters, export and spool
state) read when a reader asks, so the per-event path pays nothing.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Callable, TextIO

from otel_exec import __version__
from otel_exec.export.otlp.attributes import SCHEMA_URL
from otel_exec.export.otlp.metrics import Instrument, MetricsCollector, Observe, PeriodicMetrics, delta_preferred
from otel_exec.export.otlp.resource import metrics_resource
from otel_exec.export.otlp.transport import OtlpOptions, Transport, transport_for, transport_settings
from otel_exec.model.counters import loss_reason as kernel_loss_reason

Report = Callable[[], dict[str, int]]

# report() key -> (instrument, attributes); counters are cumulative.
_SEEN = {"exec_seen": {"type": "exec"}, "exits_seen": {"type": "exit"}}
# report() key suffix -> counter of export trouble that loses nothing by itself.
_EXPORT_TROUBLE = {
    "export_retries": ("otel_exec.export.retries", "{request}",
                       "Export requests that failed retryably (sent again after a backoff)"),
    "export_errors": ("otel_exec.export.errors", "{error}", "Unexpected errors in the export loop (logged with "
                      "a traceback; export went on)"),
    "export_thread_restarts": ("otel_exec.export.thread_restarts", "{thread}",
                               "Export threads found dead and started again"),
}
_SIGNALS = ("logs", "traces")
log = logging.getLogger(__name__)
# report() keys of executable identity (otel_exec.host.executables) -> outcome
_IDENTITY_OUTCOMES = {"executable_identity_computed": "computed", "executable_identity_cache_hits": "cache_hit",
                      "executable_identity_flagged": "flagged", "executable_identity_read_errors": "read_error"}
_GAUGES = {
    "logs_spool_bytes": ("otel_exec.spool.size", "By", {"signal": "logs"}),
    "traces_spool_bytes": ("otel_exec.spool.size", "By", {"signal": "traces"}),
    "logs_spool_oldest_age_s": ("otel_exec.spool.oldest_age", "s", {"signal": "logs"}),
    "traces_spool_oldest_age_s": ("otel_exec.spool.oldest_age", "s", {"signal": "traces"}),
    "ringbuf_used_bytes": ("otel_exec.ringbuf.used", "By", {}),
    "process_table_size": ("otel_exec.process_table.size", "{process}", {}),
    "logs_spool_held_bytes": ("otel_exec.spool.held", "By", {"signal": "logs"}),
    "traces_spool_held_bytes": ("otel_exec.spool.held", "By", {"signal": "traces"}),
    "logs_export_latency_ms": ("otel_exec.export.latency", "ms", {"signal": "logs"}),
    "traces_export_latency_ms": ("otel_exec.export.latency", "ms", {"signal": "traces"}),
}


# Spool troubles that lose no record by themselves (report() key suffix ->
# otel_exec.spool.faults reason); those that do are loss reasons.
SPOOL_FAULTS = {"spool_write_failed": "write_failed", "spool_cursor_reset": "cursor_reset",
                "spool_unsafe_files": "unsafe_file", "spool_foreign_files": "foreign_file"}


def spool_fault(key: str) -> tuple[str, dict[str, str]] | None:
    """(reason, attributes) of a report() key that counts spool faults, or None."""
    for suffix, reason in SPOOL_FAULTS.items():
        if key == suffix:
            return reason, {"reason": reason}
        if key.endswith("_" + suffix):
            return reason, {"reason": reason, "signal": key.removesuffix("_" + suffix)}
    return None


def loss_reason(key: str) -> str | None:
    """The reason a report() key counts lost records, or None."""
    reason = kernel_loss_reason(key)
    if reason is not None:
        return reason
    if key == "decode_errors":
        return key
    if spool_fault(key):
        return None
    for suffix in ("_failed", "_rejected", "_queue_overflow", "_spool_evicted", "_dropped_disk_full",
                   "_spool_corrupt", "_spool_segment_lost"):
        if key.endswith(suffix):
            return key
    return None


# Spool counters the summary line shows each of while not zero.
_SPOOL_TROUBLE_KEYS = {
    *(f"{signal}_{suffix}" for signal in ("logs", "traces")
      for suffix in ("spool_write_failed", "spool_held_bytes", "dropped_disk_full", "spool_corrupt",
                     "spool_segment_lost", "spool_cursor_reset")),
    "spool_unsafe_files", "spool_foreign_files", "clock_steps",
}


def instruments() -> tuple[Instrument, ...]:
    """The agent's observable instruments, in the order they are created."""
    def counter(name: str, unit: str, description: str, observe: Observe) -> Instrument:
        return Instrument(name, unit, description, True, observe)

    made = [
        counter("otel_exec.events", "{event}", "Events the kernel reported, by type",
                lambda r: [(r.get(k, 0), a) for k, a in _SEEN.items()]),
        counter("otel_exec.records.exported", "{record}", "Records the collector accepted",
                lambda r: [(r.get(f"{s}_exported", 0), {"signal": s}) for s in ("logs", "traces")]),
        counter("otel_exec.lost", "{record}", "Records lost, by reason (each has its own counter)",
                lambda r: [(v, {"reason": reason}) for k, v in r.items() if (reason := loss_reason(k))]),
        counter("otel_exec.spool.faults", "{fault}", "Spool troubles that lost nothing by themselves, by reason",
                lambda r: [(v, fault[1]) for k, v in r.items() if (fault := spool_fault(k))]),
        counter("otel_exec.executable_identity", "{file}", "Executable identity lookups of execs, by outcome",
                lambda r: [(r[k], {"outcome": o}) for k, o in _IDENTITY_OUTCOMES.items() if k in r]),
        counter("otel_exec.clock.steps", "{step}", "Wall-clock steps found between the last heartbeat and this start",
                lambda r: [(r["clock_steps"], {})] if "clock_steps" in r else []),
    ]
    for suffix, (name, unit, description) in _EXPORT_TROUBLE.items():
        made.append(counter(name, unit, description,
                            lambda r, suffix=suffix: [(r.get(f"{s}_{suffix}", 0), {"signal": s}) for s in _SIGNALS]))
    by_name: dict[str, list[tuple[str, dict[str, str]]]] = {}
    units: dict[str, str] = {}
    for key, (name, unit, attrs) in _GAUGES.items():
        by_name.setdefault(name, []).append((key, attrs))
        units[name] = unit
    for name, keys in by_name.items():
        made.append(Instrument(name, units[name], "", False,
                               lambda r, keys=keys: [(r[k], a) for k, a in keys if k in r]))
    return tuple(made)


class Telemetry:
    """Made before the privilege drop (the OTLP transport reads its TLS
    files then); start(), after it, starts the metrics thread and connection."""

    def __init__(self, report: Report, opts: OtlpOptions | None, stats_interval: float | None,
                 resource: dict[str, object], console: TextIO | None = None) -> None:
        self.report = report
        self.stats_interval = stats_interval
        self.resource = resource
        self._next_stats = time.monotonic() + stats_interval if stats_interval else float("inf")
        # Checked, credentials read and modules imported now, as root: after a
        # drop to --user the interpreter's own library directory may be out of
        # reach. The connection is opened in start(), after the drop, since
        # the gRPC one starts gRPC's threads at once.
        self._transport: Transport | None = None
        self._periodic: PeriodicMetrics | None = None
        if opts is not None:
            self._transport = transport_for(transport_settings("metrics", opts))
            collector = MetricsCollector(instruments(), metrics_resource(resource), "otel-exec",  # type: ignore[arg-type]
                                         __version__, SCHEMA_URL, delta=delta_preferred())
            self._periodic = PeriodicMetrics(collector, report)
        self._console: Callable[[], object] | None = None
        if console is not None:  # OTEL_METRICS_EXPORTER=console: the SDK's own exporter and reader
            # This import brings in every SDK module _console_metrics uses
            # (the metrics API, the provider, the reader, the resource), as root.
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            self._console = functools.partial(ConsoleMetricExporter, out=console)
        self._provider: object | None = None

    def start(self) -> None:
        """After the privilege drop: the metrics threads and connection."""
        if self._periodic is not None and self._transport is not None:
            self._periodic.start(self._transport)
        if self._console is not None:
            self._provider = self._console_metrics(self._console())

    def _console_metrics(self, exporter: object) -> object:
        """An SDK MeterProvider over the same instruments, for the console exporter."""
        from opentelemetry.metrics import CallbackOptions, Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter)],  # type: ignore[arg-type]
                                 resource=Resource(metrics_resource(self.resource),  # type: ignore[arg-type]
                                                   schema_url=SCHEMA_URL))
        meter = provider.get_meter("otel-exec", __version__, schema_url=SCHEMA_URL)

        def callback(observe: Observe) -> Callable:
            def observed(_: CallbackOptions) -> list[Observation]:
                return [Observation(v, a) for v, a in observe(self.report())]
            return observed

        for i in instruments():
            create = meter.create_observable_counter if i.counter else meter.create_observable_gauge
            create(i.name, [callback(i.observe)], unit=i.unit, description=i.description)
        return provider

    def tick(self) -> None:
        """Called from the main loop: logs the stats line (info) when it is due."""
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + (self.stats_interval or 0)
            r = self.report()
            lost = sum(v for k, v in r.items() if loss_reason(k))
            trouble = " ".join(f"{suffix}={sum(r.get(f'{s}_{suffix}', 0) for s in _SIGNALS)}"
                               for suffix in _EXPORT_TROUBLE)
            log.info("%s", f"execs={r.get('exec_seen', 0)} exported_logs={r.get('logs_exported', 0)} "
                     f"exported_spans={r.get('traces_exported', 0)} lost={lost} "
                     f"rejected_logs={r.get('logs_rejected', 0)} rejected_spans={r.get('traces_rejected', 0)} "
                     f"{trouble} "
                     f"spool={r.get('logs_spool_bytes', 0) + r.get('traces_spool_bytes', 0)}B "
                     f"ringbuf={r.get('ringbuf_used_bytes', 0)}B table={r.get('process_table_size', 0)}"
                     + "".join(f" {k}={v}" for k, v in r.items() if v and k in _SPOOL_TROUBLE_KEYS))

    def close(self) -> None:
        if self._periodic is not None:
            self._periodic.shutdown()
        if self._provider is not None:
            self._provider.shutdown()  # type: ignore[attr-defined]
