"""The agent's own metrics, encoded by hand (otlp/metrics.py), decode to the
same ExportMetricsServiceRequest the OTLP exporter packages would send."""
from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from otel_exec.export.otlp.metrics import metrics_request, preferred_temporality


def _collect(temporality: dict[type, AggregationTemporality] | None = None) -> object:
    reader = InMemoryMetricReader(preferred_temporality=temporality)
    provider = MeterProvider(metric_readers=[reader],
                             resource=Resource({"service.name": "otel-exec", "n": 3, "f": 0.5, "ok": True},
                                               schema_url="https://opentelemetry.io/schemas/1.26.0"))
    meter = provider.get_meter("otel-exec", "9.9", schema_url="https://opentelemetry.io/schemas/1.26.0")

    def counter(_: CallbackOptions) -> list[Observation]:
        return [Observation(5, {"signal": "logs"}), Observation(2**40, {"signal": "traces"}), Observation(0, {})]

    def gauge(_: CallbackOptions) -> list[Observation]:
        return [Observation(-3, {}), Observation(2.5, {"signal": "logs", "reason": "x"})]

    meter.create_observable_counter("otel_exec.lost", [counter], unit="{record}", description="Records lost")
    meter.create_observable_gauge("otel_exec.spool.size", [gauge], unit="By")
    meter.create_observable_gauge("otel_exec.quiet", [lambda _: []])
    return reader.get_metrics_data()


def test_metrics_decode_as_the_sdk_encodes_them() -> None:
    data = _collect()
    assert ExportMetricsServiceRequest.FromString(metrics_request(data)) == encode_metrics(data)  # type: ignore[arg-type]


def test_delta_temporality_is_encoded_as_the_sdk_encodes_it() -> None:
    data = _collect(preferred_temporality({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"}))
    ours = ExportMetricsServiceRequest.FromString(metrics_request(data))  # type: ignore[arg-type]
    assert ours == encode_metrics(data)  # type: ignore[arg-type]
    sums = [m.sum for m in ours.resource_metrics[0].scope_metrics[0].metrics if m.HasField("sum")]
    assert sums and all(s.aggregation_temporality == AggregationTemporality.DELTA for s in sums)


def test_temporality_preference_follows_the_sdk_variable() -> None:
    var = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
    assert preferred_temporality({})[ObservableCounter] is AggregationTemporality.CUMULATIVE
    assert preferred_temporality({var: "lowmemory"})[ObservableCounter] is AggregationTemporality.CUMULATIVE
    assert preferred_temporality({var: "Delta"})[ObservableCounter] is AggregationTemporality.DELTA
