"""The agent's own metrics as OTLP requests, sent by the transports logs and
spans use (transport.py), without the OpenTelemetry metrics SDK: its modules
cost start-up time and memory for a few dozen data points a minute.

Every collection reads Agent.report() once and turns it into the points the
SDK's MeterProvider would make of the same observable instruments: counters
as monotonic sums (cumulative, or delta under
OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta) and gauges;
metrics in the order their first point appeared, points in the order their
attribute set first appeared, a metric without a point this time left out.
tests/export/test_metrics_encoding.py holds it to the SDK's output.
"""
from __future__ import annotations

import logging
import math
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from otel_exec.export.otlp import protowire as w
from otel_exec.export.otlp.transport import MESSAGE_MAX, Outcome, Transport

log = logging.getLogger(__name__)

_DOUBLE = struct.Struct("<d")
_TEMPORALITY_VAR = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
# AggregationTemporality in opentelemetry/proto/metrics/v1/metrics.proto
DELTA, CUMULATIVE = 1, 2

Number = int | float
Observe = Callable[[Mapping[str, int]], Iterable[tuple[Number, dict[str, str]]]]


# Instrument and _Series are plain classes, not dataclasses: this module is
# on the start-up path (docs/architecture.md, Rules).
class Instrument:
    """An observable instrument: its points are read from one report()."""

    def __init__(self, name: str, unit: str, description: str, counter: bool, observe: Observe) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.counter = counter  # an observable counter (a monotonic sum); else a gauge
        self.observe = observe


def delta_preferred(environ: Mapping[str, str] = os.environ) -> bool:
    """OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE as the SDK's OTLP
    exporters read it, for the only instrument the agent has that it
    changes: cumulative (the default) and lowmemory keep observable
    counters cumulative, delta makes them delta."""
    return environ.get(_TEMPORALITY_VAR, "").strip().lower() == "delta"


def _millis(environ: Mapping[str, str], var: str, default: float) -> float:
    """A period in ms as the SDK's periodic reader reads it: a value that is
    not a number is warned about and the default used."""
    try:
        return float(environ.get(var, default))
    except ValueError:
        log.warning("Found invalid value for %s, using default", var)
        return default


class _Series:
    """One attribute set of one instrument, as the SDK's aggregation keeps it."""

    def __init__(self, attributes: dict[str, str], start_ns: int, previous_ns: int) -> None:
        self.attributes = attributes
        self.start_ns = start_ns  # when it was first observed
        self.previous_ns = previous_ns  # the last collection that had a point of it (delta)
        self.previous: Number = 0  # its value then (delta)
        self.value: Number | None = None  # this collection's, None when not observed


@dataclass
class MetricsCollector:
    """The state between collections (start times, previous values) and the
    encoding of one collection as an ExportMetricsServiceRequest."""

    instruments: tuple[Instrument, ...]
    resource: Mapping[str, w.Value]
    scope_name: str
    scope_version: str
    schema_url: str
    delta: bool = False
    clock: Callable[[], int] = time.time_ns
    # instrument -> attribute set -> series, each in the order first observed
    _series: dict[Instrument, dict[tuple[tuple[str, str], ...], _Series]] = field(default_factory=dict)
    _resource: bytes = field(init=False)  # the resource does not change: encoded once

    def __post_init__(self) -> None:
        self._resource = _attributes(1, self.resource)

    def request(self, report: Mapping[str, int]) -> bytes | None:
        """The request of this collection, or None when it has no point."""
        observed_ns = self.clock()
        # All read before any series changes: a failing read leaves none half-summed.
        observed = [(instrument, list(instrument.observe(report))) for instrument in self.instruments]
        for instrument, points in observed:
            for value, attributes in points:
                series = self._series.setdefault(instrument, {})
                key = tuple(sorted(attributes.items()))
                one = series.get(key)
                if one is None:
                    one = series[key] = _Series(dict(attributes), observed_ns, observed_ns)
                if instrument.counter:  # the SDK sums what one callback observes of a set
                    one.value = (one.value or 0) + value
                else:
                    one.value = value
        now_ns = self.clock()
        metrics = [m for m in (self._metric(i, s.values(), now_ns) for i, s in self._series.items()) if m]
        if not metrics:
            return None
        scope = w.len_field(1, self.scope_name.encode()) + w.len_field(2, self.scope_version.encode())
        schema = w.len_field(3, self.schema_url.encode())
        scope_metrics = w.len_field(1, scope) + w.repeated(2, metrics) + schema
        return w.len_field(1, w.len_field(1, self._resource) + w.len_field(2, scope_metrics) + schema)

    def _metric(self, instrument: Instrument, series: Iterable[_Series], now_ns: int) -> bytes:
        """Metric: name 1, description 2, unit 3, gauge 5 (data_points 1), sum 7
        (data_points 1, aggregation_temporality 2, is_monotonic 3); b"" without a point."""
        points = []
        for one in series:
            value, one.value = one.value, None
            if value is None:
                continue
            start_ns = 0  # gauges have none
            if instrument.counter and self.delta:
                value, one.previous = value - one.previous, value
                start_ns, one.previous_ns = one.previous_ns, now_ns
            elif instrument.counter:
                start_ns = one.start_ns
            points.append(_point(one.attributes, start_ns, now_ns, value))
        if not points:
            return b""
        body = w.repeated(1, points)
        if instrument.counter:
            body = w.len_field(7, body + w.varint_field(2, DELTA if self.delta else CUMULATIVE) + w.varint_field(3, 1))
        else:
            body = w.len_field(5, body)
        return b"".join((w.len_field(1, instrument.name.encode()), w.len_field(2, instrument.description.encode()),
                         w.len_field(3, instrument.unit.encode()), body))


def _attributes(field_number: int, attrs: Mapping[str, w.Value]) -> bytes:
    return w.repeated(field_number, (w.key_value(w.key_head(k), w.any_value(v)) for k, v in attrs.items()))


def _point(attributes: dict[str, str], start_ns: int, now_ns: int, value: Number) -> bytes:
    """NumberDataPoint: attributes 7, start_time_unix_nano 2, time_unix_nano 3,
    as_double 4, as_int 6 (sfixed64)."""
    encoded = (w.fixed64_field(6, value & 0xFFFFFFFFFFFFFFFF) if isinstance(value, int)
               else w.tag(4, w.I64) + _DOUBLE.pack(value))
    return b"".join((_attributes(7, attributes), w.fixed64_field(2, start_ns), w.fixed64_field(3, now_ns), encoded))


class PeriodicMetrics:
    """A thread that sends a collection every OTEL_METRIC_EXPORT_INTERVAL ms
    (default 60000) and a last one at shutdown, which waits for it at most
    OTEL_METRIC_EXPORT_TIMEOUT ms (default 30000), as the SDK's periodic
    reader does. A failed export is not retried (the next one carries the
    counters' new totals); its cause is logged once."""

    def __init__(self, collector: MetricsCollector, report: Callable[[], Mapping[str, int]],
                 environ: Mapping[str, str] = os.environ) -> None:
        self.collector = collector
        self.report = report
        self.interval_ms = _millis(environ, "OTEL_METRIC_EXPORT_INTERVAL", 60000)
        self.timeout_ms = _millis(environ, "OTEL_METRIC_EXPORT_TIMEOUT", 30000)
        if self.interval_ms <= 0:
            raise ValueError(f"OTEL_METRIC_EXPORT_INTERVAL {self.interval_ms} is invalid: it must be larger than zero")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._transport: Transport | None = None
        self._logged: set[str] = set()

    def start(self, transport: Transport) -> None:
        """After the privilege drop: the connection and the thread (none when
        the interval is infinite: nothing is ever collected, as with the SDK)."""
        transport.start()
        self._transport = transport
        if self.interval_ms < math.inf:
            self._thread = threading.Thread(name="otel-exec-metrics", target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_ms / 1e3):
            self.export()
        self.export()  # the last collection, at shutdown

    def export(self) -> None:
        """One collection, sent."""
        assert self._transport is not None
        try:
            payload = self.collector.request(self.report())
            if payload is None:
                return
            answer = self._transport.send(payload)
        except Exception:  # the thread goes on to the next period, as the SDK's does
            log.exception("Exception while exporting metrics")
            return
        if answer.outcome is Outcome.SENT or answer.reason in self._logged:
            return
        self._logged.add(answer.reason)
        log.error("Failed to export metrics to %s: %s%s (logged once per cause; the next export carries "
                  "the totals)", self._transport.target, answer.reason,
                  f": {answer.message[:MESSAGE_MAX]}" if answer.message else "")

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_ms / 1e3)
        if self._transport is not None:
            self._transport.shutdown()
