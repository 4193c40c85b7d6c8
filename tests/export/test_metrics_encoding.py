"""The agent's own metrics (otlp/metrics.py, no SDK) are, byte for byte,
the requests the OpenTelemetry SDK path made of the same report() dicts:
an SDK MeterProvider with the same observable instruments, its MetricsData
encoded by the hand encoder the agent used before (kept here only as the
reference), and decoded, what the OTLP exporter packages encode."""
from __future__ import annotations

import dataclasses
import logging
import struct
import threading
import time
from typing import Any, Callable

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.metrics import Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import (AggregationTemporality, Gauge, InMemoryMetricReader, MetricsData,
                                              NumberDataPoint, Sum)
from opentelemetry.sdk.resources import Resource

from otel_exec.export.otlp import protowire as w
from otel_exec.export.otlp.metrics import Instrument, MetricsCollector, PeriodicMetrics, delta_preferred
from otel_exec.export.otlp.transport import Answer, Outcome
from otel_exec.export.telemetry import instruments

SCHEMA = "https://opentelemetry.io/schemas/1.26.0"
RESOURCE = {"service.name": "otel-exec", "n": 3, "f": 0.5, "ok": True, "list": ("a", "b")}

# --- the reference: the SDK exporter's hand encoding of MetricsData -----------------------------------------

_DOUBLE = struct.Struct("<d")


def _ref_attributes(field: int, attrs: Any) -> bytes:
    return w.repeated(field, (w.key_value(w.key_head(k), w.any_value(v)) for k, v in (attrs or {}).items()))


def _ref_point(p: NumberDataPoint) -> bytes:
    value = (w.fixed64_field(6, p.value & 0xFFFFFFFFFFFFFFFF) if isinstance(p.value, int)
             else w.tag(4, w.I64) + _DOUBLE.pack(p.value))
    return b"".join((_ref_attributes(7, p.attributes), w.fixed64_field(2, p.start_time_unix_nano or 0),
                     w.fixed64_field(3, p.time_unix_nano), value))


def _ref_metric(metric: Any) -> bytes:
    data = metric.data
    points = w.repeated(1, map(_ref_point, data.data_points))
    if isinstance(data, Sum):
        body = w.len_field(7, points + w.varint_field(2, int(data.aggregation_temporality))
                           + w.varint_field(3, int(data.is_monotonic)))
    else:
        assert isinstance(data, Gauge)
        body = w.len_field(5, points)
    return b"".join((w.len_field(1, metric.name.encode()), w.len_field(2, (metric.description or "").encode()),
                     w.len_field(3, (metric.unit or "").encode()), body))


def reference_request(data: MetricsData) -> bytes:
    resources = []
    for rm in data.resource_metrics:
        scopes = []
        for sm in rm.scope_metrics:
            scope = w.len_field(1, sm.scope.name.encode()) + w.len_field(2, (sm.scope.version or "").encode())
            metrics = [_ref_metric(m) for m in sm.metrics]
            scopes.append(w.len_field(1, scope) + w.repeated(2, metrics) + w.len_field(3, (sm.schema_url or "").encode()))
        resource = _ref_attributes(1, rm.resource.attributes)
        resources.append(w.len_field(1, resource) + w.repeated(2, scopes)
                         + w.len_field(3, (rm.schema_url or rm.resource.schema_url or "").encode()))
    return w.repeated(1, resources)


class SdkPath:
    """The SDK's MeterProvider over the same instruments, fed report() dicts."""

    def __init__(self, made: tuple[Instrument, ...], delta: bool) -> None:
        temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
        self.reader = InMemoryMetricReader(preferred_temporality={ObservableCounter: temporality})
        provider = MeterProvider(metric_readers=[self.reader], resource=Resource(RESOURCE, schema_url=SCHEMA))
        meter = provider.get_meter("otel-exec", "9.9", schema_url=SCHEMA)
        self.report: dict[str, Any] = {}

        def callback(observe: Callable) -> Callable:
            return lambda _: [Observation(v, a) for v, a in observe(self.report)]

        for i in made:
            create = meter.create_observable_counter if i.counter else meter.create_observable_gauge
            create(i.name, [callback(i.observe)], unit=i.unit, description=i.description)
        self.times: list[int] = []  # each collection's time

    def collect(self, report: dict[str, Any]) -> MetricsData | None:
        self.report = report
        data = self.reader.get_metrics_data()
        # A collection without a point has no time in its data: now stands for it.
        self.times.append(time.time_ns() if data is None else
                          data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0].time_unix_nano)
        return data

    def pinned(self, data: MetricsData) -> MetricsData:
        """The timestamps as the test clock gives them to the collector: 10k+2
        for the k-th collection (from 1), 10k+1 for a series first seen in it
        (the SDK stamps it while the callbacks run, before the collection's
        time), a start at an earlier collection's time that time; 0 stays 0."""
        def pin(t: int | None) -> int | None:
            if not t:
                return t
            k = next(k for k, c in enumerate(self.times, 1) if c >= t)
            return 10 * k + (2 if self.times[k - 1] == t else 1)

        def metric(m: Any) -> Any:
            points = [dataclasses.replace(p, start_time_unix_nano=pin(p.start_time_unix_nano),
                                          time_unix_nano=pin(p.time_unix_nano)) for p in m.data.data_points]
            return dataclasses.replace(m, data=dataclasses.replace(m.data, data_points=points))

        return dataclasses.replace(data, resource_metrics=[
            dataclasses.replace(rm, scope_metrics=[dataclasses.replace(sm, metrics=[metric(m) for m in sm.metrics])
                                                   for sm in rm.scope_metrics]) for rm in data.resource_metrics])


def ticking_clock() -> Callable[[], int]:
    ticks = iter(range(1, 10**6))
    return lambda: (lambda n: 10 * ((n + 1) // 2) + (2 - n % 2))(next(ticks))


# Counters appear later (clock_steps, a spool fault, a loss, identity
# outcomes), stay flat (zero deltas), one goes back; float and int gauges
# come and go.
REPORTS: list[dict[str, Any]] = [
    {"exec_seen": 5, "exits_seen": 0, "logs_exported": 4, "traces_exported": 0, "logs_spool_bytes": 0,
     "traces_spool_bytes": 10, "logs_spool_oldest_age_s": 0.0, "process_table_size": 7, "ringbuf_used_bytes": 0,
     "logs_export_latency_ms": 1.5, "lost_exec_ringbuf_full": 0},
    {"exec_seen": 9, "exits_seen": 2, "logs_exported": 9, "traces_exported": 3, "logs_spool_bytes": 2**40,
     "traces_spool_bytes": 10, "logs_spool_oldest_age_s": 2.5, "process_table_size": 8, "ringbuf_used_bytes": 64,
     "logs_export_latency_ms": 0.25, "traces_export_latency_ms": 3.0, "lost_exec_ringbuf_full": 1,
     "clock_steps": 1, "logs_spool_write_failed": 2, "logs_queue_overflow": 4, "executable_identity_computed": 3,
     "logs_export_retries": 1},
    {"exec_seen": 9, "exits_seen": 2, "logs_exported": 9, "traces_exported": 3, "traces_spool_bytes": 0,
     "process_table_size": 8, "lost_exec_ringbuf_full": 1, "clock_steps": 1, "logs_spool_write_failed": 2,
     "logs_queue_overflow": 4, "executable_identity_computed": 3, "executable_identity_cache_hits": 6,
     "spool_unsafe_files": 1, "logs_export_retries": 1},
    {"exec_seen": 12, "exits_seen": 2, "logs_exported": 7, "traces_exported": 3, "traces_spool_bytes": 5,
     "process_table_size": 0, "lost_exec_ringbuf_full": 1, "clock_steps": 1, "logs_spool_write_failed": 2,
     "logs_queue_overflow": 4, "executable_identity_computed": 3, "executable_identity_cache_hits": 6,
     "spool_unsafe_files": 1, "logs_export_retries": 1, "ringbuf_used_bytes": 0.5},
]


@pytest.mark.parametrize("delta", [False, True], ids=["cumulative", "delta"])
def test_requests_are_byte_for_byte_those_of_the_sdk_path(delta: bool) -> None:
    made = instruments()
    sdk = SdkPath(made, delta)
    ours = MetricsCollector(made, RESOURCE, "otel-exec", "9.9", SCHEMA, delta=delta, clock=ticking_clock())
    for report in REPORTS:
        data = sdk.collect(dict(report))
        assert data is not None
        request = ours.request(dict(report))
        assert request == reference_request(sdk.pinned(data))
        assert ExportMetricsServiceRequest.FromString(request) == encode_metrics(sdk.pinned(data))


def test_sums_say_their_temporality_and_deltas_start_at_the_last_collection() -> None:
    made = instruments()
    ours = MetricsCollector(made, RESOURCE, "otel-exec", "9.9", SCHEMA, delta=True, clock=ticking_clock())
    ours.request(REPORTS[0])
    second = ExportMetricsServiceRequest.FromString(ours.request(REPORTS[1]))  # type: ignore[arg-type]
    metrics = {m.name: m for m in second.resource_metrics[0].scope_metrics[0].metrics}
    events = metrics["otel_exec.events"].sum
    assert events.aggregation_temporality == AggregationTemporality.DELTA and events.is_monotonic
    assert [(p.as_int, p.start_time_unix_nano, p.time_unix_nano) for p in events.data_points] == \
        [(4, 12, 22), (2, 12, 22)]
    steps = metrics["otel_exec.clock.steps"].sum.data_points
    assert [(p.as_int, p.start_time_unix_nano) for p in steps] == [(1, 21)]  # first seen in this collection


def test_a_collection_without_a_point_sends_nothing_as_the_sdk_does() -> None:
    gauge = Instrument("otel_exec.quiet", "By", "", False, lambda r: [(r[k], {}) for k in ("x",) if k in r])
    sdk = SdkPath((gauge,), False)
    ours = MetricsCollector((gauge,), RESOURCE, "otel-exec", "9.9", SCHEMA, clock=ticking_clock())
    assert sdk.collect({}) is None and ours.request({}) is None
    data = sdk.collect({"x": -3})
    assert data is not None and ours.request({"x": -3}) == reference_request(sdk.pinned(data))


def test_temporality_preference_follows_the_sdk_variable() -> None:
    var = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
    assert not delta_preferred({}) and not delta_preferred({var: "lowmemory"})
    assert not delta_preferred({var: "cumulative"}) and delta_preferred({var: " Delta"})


class FakeTransport:
    target = "collector:4317"

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.sent: list[bytes] = []
        self.started = self.stopped = False
        self.sending = threading.Event()

    def start(self) -> None:
        self.started = True

    def send(self, payload: bytes) -> Answer:
        self.sent.append(payload)
        self.sending.set()
        return self.answer

    def shutdown(self) -> None:
        self.stopped = True


def _periodic(env: dict[str, str]) -> PeriodicMetrics:
    collector = MetricsCollector(instruments(), RESOURCE, "otel-exec", "9.9", SCHEMA)
    return PeriodicMetrics(collector, lambda: dict(REPORTS[0]), env)


def test_shutdown_sends_a_last_collection() -> None:
    periodic = _periodic({"OTEL_METRIC_EXPORT_INTERVAL": "600000"})
    transport = FakeTransport(Answer(Outcome.SENT))
    periodic.start(transport)  # type: ignore[arg-type]
    assert transport.started and not transport.sent
    periodic.shutdown()
    assert len(transport.sent) == 1 and transport.stopped


def test_collections_come_every_interval_and_a_failure_is_logged_once_per_cause(
        caplog: pytest.LogCaptureFixture) -> None:
    periodic = _periodic({"OTEL_METRIC_EXPORT_INTERVAL": "20"})
    transport = FakeTransport(Answer(Outcome.RETRY, "UNAVAILABLE", "connection refused"))
    with caplog.at_level(logging.ERROR, logger="otel_exec.export.otlp.metrics"):
        periodic.start(transport)  # type: ignore[arg-type]
        assert transport.sending.wait(10)
        periodic.shutdown()
    assert len(transport.sent) >= 2  # one period at least, and the last one
    failures = [r.getMessage() for r in caplog.records]
    assert failures == ["Failed to export metrics to collector:4317: UNAVAILABLE: connection refused (logged once "
                        "per cause; the next export carries the totals)"]


def test_interval_and_timeout_are_read_as_the_sdk_reads_them(caplog: pytest.LogCaptureFixture) -> None:
    assert (_periodic({}).interval_ms, _periodic({}).timeout_ms) == (60000, 30000)
    periodic = _periodic({"OTEL_METRIC_EXPORT_INTERVAL": "1500.5", "OTEL_METRIC_EXPORT_TIMEOUT": "5000"})
    assert (periodic.interval_ms, periodic.timeout_ms) == (1500.5, 5000)
    with caplog.at_level(logging.WARNING):
        assert _periodic({"OTEL_METRIC_EXPORT_INTERVAL": "soon"}).interval_ms == 60000
    assert "OTEL_METRIC_EXPORT_INTERVAL" in caplog.text
    with pytest.raises(ValueError):
        _periodic({"OTEL_METRIC_EXPORT_INTERVAL": "0"})


@pytest.mark.parametrize("delta", [False, True], ids=["cumulative", "delta"])
def test_one_attribute_set_observed_twice_is_summed_as_the_sdk_does(delta: bool) -> None:
    counter = Instrument("otel_exec.twice", "{x}", "d", True,
                         lambda r: [(r["n"], {"a": "x", "b": "y"}), (2, {"b": "y", "a": "x"}), (0.5, {})])
    sdk = SdkPath((counter,), delta)
    ours = MetricsCollector((counter,), RESOURCE, "otel-exec", "9.9", SCHEMA, delta=delta, clock=ticking_clock())
    for n in (1, 4, 4):
        data = sdk.collect({"n": n})
        assert data is not None and ours.request({"n": n}) == reference_request(sdk.pinned(data))
