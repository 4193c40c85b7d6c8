"""The agent's own metrics as OTLP requests, sent by the transports logs and
spans use (transport.py): an SDK MetricExporter that encodes the SDK's
MetricsData by hand (protowire) instead of through the OTLP exporter
packages, whose generated protobuf modules cost start-up time and memory
for a few dozen data points a minute.

Only what Telemetry creates is encoded: sums (observable counters) and
gauges of int or float points.
"""
from __future__ import annotations

import logging
import os
import struct
from typing import Any, Mapping

from opentelemetry.sdk.metrics import ObservableCounter
from opentelemetry.sdk.metrics.export import (AggregationTemporality, Gauge, MetricExporter, MetricExportResult,
                                              MetricsData, NumberDataPoint, Sum)

from otel_exec.export.otlp import protowire as w
from otel_exec.export.otlp.transport import MESSAGE_MAX, Outcome, Transport

log = logging.getLogger(__name__)

_DOUBLE = struct.Struct("<d")
_TEMPORALITY_VAR = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"


def _attributes(field: int, attrs: Any) -> bytes:
    return w.repeated(field, (w.key_value(w.key_head(k), w.any_value(v)) for k, v in (attrs or {}).items()))


def _point(p: NumberDataPoint) -> bytes:
    """NumberDataPoint: attributes 7, start_time_unix_nano 2, time_unix_nano 3,
    as_double 4, as_int 6 (sfixed64)."""
    value = (w.fixed64_field(6, p.value & 0xFFFFFFFFFFFFFFFF) if isinstance(p.value, int)
             else w.tag(4, w.I64) + _DOUBLE.pack(p.value))
    return b"".join((_attributes(7, p.attributes), w.fixed64_field(2, p.start_time_unix_nano or 0),
                     w.fixed64_field(3, p.time_unix_nano), value))


def _metric(metric: Any) -> bytes | None:
    """Metric: name 1, description 2, unit 3, gauge 5 (data_points 1), sum 7
    (data_points 1, aggregation_temporality 2, is_monotonic 3)."""
    data = metric.data
    points = w.repeated(1, map(_point, data.data_points))
    if isinstance(data, Sum):
        body = w.len_field(7, points + w.varint_field(2, int(data.aggregation_temporality))
                           + w.varint_field(3, int(data.is_monotonic)))
    elif isinstance(data, Gauge):
        body = w.len_field(5, points)
    else:
        return None
    return b"".join((w.len_field(1, metric.name.encode()), w.len_field(2, (metric.description or "").encode()),
                     w.len_field(3, (metric.unit or "").encode()), body))


def metrics_request(data: MetricsData) -> bytes:
    """ExportMetricsServiceRequest: resource_metrics 1 (resource 1, scope_metrics 2,
    schema_url 3); ScopeMetrics: scope 1 (name 1, version 2), metrics 2, schema_url 3."""
    resources = []
    for rm in data.resource_metrics:
        scopes = []
        for sm in rm.scope_metrics:
            scope = w.len_field(1, sm.scope.name.encode()) + w.len_field(2, (sm.scope.version or "").encode())
            metrics = [m for m in map(_metric, sm.metrics) if m is not None]
            scopes.append(w.len_field(1, scope) + w.repeated(2, metrics) + w.len_field(3, (sm.schema_url or "").encode()))
        resource = _attributes(1, rm.resource.attributes)
        resources.append(w.len_field(1, resource) + w.repeated(2, scopes)
                         + w.len_field(3, (rm.schema_url or rm.resource.schema_url or "").encode()))
    return w.repeated(1, resources)


def preferred_temporality(environ: Mapping[str, str] = os.environ) -> dict[type, AggregationTemporality]:
    """OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE as the SDK's OTLP
    exporters read it, for the only instrument the agent has that it
    changes: cumulative (the default) and lowmemory keep observable
    counters cumulative, delta makes them delta."""
    delta = environ.get(_TEMPORALITY_VAR, "").strip().lower() == "delta"
    return {ObservableCounter: AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE}


class OtlpMetricExporter(MetricExporter):
    """Sends each collection in one request; a failed one is not retried (the
    next collection carries the counters' new totals), its cause logged once."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(preferred_temporality=preferred_temporality())
        self.transport = transport
        self._logged: set[str] = set()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        answer = self.transport.send(metrics_request(metrics_data))
        if answer.outcome is Outcome.SENT:
            return MetricExportResult.SUCCESS
        if answer.reason not in self._logged:
            self._logged.add(answer.reason)
            log.error("Failed to export metrics to %s: %s%s (logged once per cause; the next export carries "
                        "the totals)", self.transport.target, answer.reason,
                        f": {answer.message[:MESSAGE_MAX]}" if answer.message else "")
        return MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.transport.shutdown()
