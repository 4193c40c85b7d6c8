"""The agent's own telemetry: OTel metrics next to the exec data, and a
one-line summary on stderr every --stats-interval seconds.

Everything comes from Agent.report() (kernel counters, export and spool
state) read when a reader asks, so the per-event path pays nothing.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, TextIO

from .otlp import OtlpOptions, otlp_http_session, protocol_for

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
_GAUGES = {
    "logs_spool_bytes": ("otel_exec.spool.size", "By", {"signal": "logs"}),
    "traces_spool_bytes": ("otel_exec.spool.size", "By", {"signal": "traces"}),
    "logs_spool_oldest_age_s": ("otel_exec.spool.oldest_age", "s", {"signal": "logs"}),
    "traces_spool_oldest_age_s": ("otel_exec.spool.oldest_age", "s", {"signal": "traces"}),
    "ringbuf_used_bytes": ("otel_exec.ringbuf.used", "By", {}),
    "process_table_size": ("otel_exec.process_table.size", "{process}", {}),
    "logs_export_latency_ms": ("otel_exec.export.latency", "ms", {"signal": "logs"}),
    "traces_export_latency_ms": ("otel_exec.export.latency", "ms", {"signal": "traces"}),
}


def loss_reason(key: str) -> str | None:
    """The reason a report() key counts lost records, or None."""
    if key.startswith("lost_") or key == "decode_errors":
        return key.removeprefix("lost_")
    for suffix in ("_failed", "_rejected", "_queue_overflow", "_spool_evicted"):
        if key.endswith(suffix):
            return key
    return None


class Telemetry:
    def __init__(self, report: Report, opts: OtlpOptions | None, stats_interval: float | None,
                 resource: dict[str, object], err: TextIO = sys.stderr) -> None:
        self.report = report
        self.err = err
        self.stats_interval = stats_interval
        self._next_stats = time.monotonic() + stats_interval if stats_interval else float("inf")
        self._provider = self._metrics(opts, resource) if opts is not None else None

    def _metrics(self, opts: OtlpOptions, resource: dict[str, object]) -> object:
        from opentelemetry.metrics import CallbackOptions, Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        if protocol_for("metrics", opts) == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            exporter = OTLPMetricExporter(endpoint=opts.endpoint, headers=opts.headers or None)
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http
            endpoint = f"{opts.endpoint.rstrip('/')}/v1/metrics" if opts.endpoint else None
            exporter = Http(endpoint=endpoint, headers=opts.headers or None, session=otlp_http_session())
        # OTEL_METRIC_EXPORT_INTERVAL sets the period, as users expect.
        provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter)],
                                 resource=Resource(resource))  # type: ignore[arg-type]
        meter = provider.get_meter("otel-exec")

        def observe(select: Callable[[dict[str, int]], Iterable[tuple[int, dict[str, str]]]]) -> Callable:
            def callback(_: CallbackOptions) -> list[Observation]:
                return [Observation(v, a) for v, a in select(self.report())]
            return callback

        meter.create_observable_counter(
            "otel_exec.events", [observe(lambda r: [(r.get(k, 0), a) for k, a in _SEEN.items()])],
            unit="{event}", description="Events the kernel reported, by type")
        meter.create_observable_counter(
            "otel_exec.records.exported",
            [observe(lambda r: [(r.get(f"{s}_exported", 0), {"signal": s}) for s in ("logs", "traces")])],
            unit="{record}", description="Records the collector accepted")
        meter.create_observable_counter(
            "otel_exec.lost", [observe(lambda r: [(v, {"reason": reason}) for k, v in r.items()
                                                  if (reason := loss_reason(k))])],
            unit="{record}", description="Records lost, by reason (each has its own counter)")
        for suffix, (name, unit, description) in _EXPORT_TROUBLE.items():
            meter.create_observable_counter(
                name, [observe(lambda r, suffix=suffix: [(r.get(f"{s}_{suffix}", 0), {"signal": s})
                                                         for s in _SIGNALS])],
                unit=unit, description=description)
        by_name: dict[str, list[tuple[str, dict[str, str]]]] = {}
        units: dict[str, str] = {}
        for key, (name, unit, attrs) in _GAUGES.items():
            by_name.setdefault(name, []).append((key, attrs))
            units[name] = unit
        for name, keys in by_name.items():
            meter.create_observable_gauge(
                name, [observe(lambda r, keys=keys: [(r[k], a) for k, a in keys if k in r])], unit=units[name])
        return provider

    def tick(self) -> None:
        """Called from the main loop: prints the summary when it is due."""
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + (self.stats_interval or 0)
            r = self.report()
            lost = sum(v for k, v in r.items() if loss_reason(k))
            trouble = " ".join(f"{suffix}={sum(r.get(f'{s}_{suffix}', 0) for s in _SIGNALS)}"
                               for suffix in _EXPORT_TROUBLE)
            print(f"otel-exec: execs={r.get('exec_seen', 0)} exported_logs={r.get('logs_exported', 0)} "
                  f"exported_spans={r.get('traces_exported', 0)} lost={lost} "
                  f"rejected_logs={r.get('logs_rejected', 0)} rejected_spans={r.get('traces_rejected', 0)} "
                  f"{trouble} "
                  f"spool={r.get('logs_spool_bytes', 0) + r.get('traces_spool_bytes', 0)}B "
                  f"ringbuf={r.get('ringbuf_used_bytes', 0)}B table={r.get('process_table_size', 0)}",
                  file=self.err, flush=True)

    def close(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()  # type: ignore[attr-defined]
