"""The rotel collector fixture (tests/helpers/collector.py) reports exactly what the
OpenTelemetry SDK sent, over OTLP/gRPC and OTLP/HTTP, and survives restart,
pause and a port held by another process."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AnyValue

from tests.helpers import collector as collector_module
from tests.helpers.collector import Collector, CollectorError, LogRecord, Span, _JsonLines

pytestmark = pytest.mark.needs_rotel

# One attribute of every kind the SDK accepts on spans and log records.
TYPED_ATTRIBUTES: dict[str, Any] = {
    "str": "hello",
    "str.tricky": 'a "quoted", (paren) Str(x)\nsecond line',
    "str.empty": "",
    "int": 42,
    "int.negative": -7,
    "int.big": 2**62 + 1,
    "bool.true": True,
    "bool.false": False,
    "float": 3.25,
    "float.whole": 2.0,
    "str.array": ["a", "b, c", ""],
    "int.array": [1, -2, 3],
    "bool.array": [True, False],
    "float.array": [1.5, -0.5],
}


def _exporters(collector: Collector, protocol: str) -> tuple[LogRecordExporter, SpanExporter]:
    if protocol == "grpc":
        return (
            GrpcLogExporter(endpoint=collector.grpc_endpoint, insecure=True),
            GrpcSpanExporter(endpoint=collector.grpc_endpoint, insecure=True),
        )
    return (
        HttpLogExporter(endpoint=f"{collector.http_endpoint}/v1/logs"),
        HttpSpanExporter(endpoint=f"{collector.http_endpoint}/v1/traces"),
    )


@dataclass
class Sent:
    """What one SDK session sent, to compare with what the collector got."""

    run: str  # unique per test: picks this test's records out of the session collector
    trace_id: str
    parent_span_id: str
    child_span_id: str


def _send(collector: Collector, protocol: str) -> Sent:
    run = uuid.uuid4().hex
    resource = Resource.create(
        {"service.name": "collector-fixture-test", "test.run": run, "res.int": 7, "res.list": ["x", "y"]}
    )
    log_exporter, span_exporter = _exporters(collector, protocol)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    tracer = tracer_provider.get_tracer("test.tracer", "1.2.3")
    logger = logger_provider.get_logger("test.logger", "0.1")
    try:
        with (
            tracer.start_as_current_span("parent", kind=SpanKind.SERVER, attributes=TYPED_ATTRIBUTES) as parent,
            tracer.start_as_current_span("child", kind=SpanKind.CLIENT) as child,
        ):
            child.add_event("step", {"n": 1, "what": "x"})
            child.set_status(Status(StatusCode.ERROR, "it failed"))
            # Emitted in the child's context: carries its trace and span ids.
            logger.emit(
                severity_number=SeverityNumber.WARN,
                severity_text="WARN",
                body="inside the child span",
                attributes={"seq": 1},
            )
        logger.emit(
            timestamp=1_700_000_000_123_456_789,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body="an event",
            attributes={**TYPED_ATTRIBUTES, "seq": 2},
            event_name="process.exec",
        )
    finally:
        logger_provider.shutdown()
        tracer_provider.shutdown()
    ctx = child.get_span_context()
    return Sent(
        run=run,
        trace_id=trace.format_trace_id(ctx.trace_id),
        parent_span_id=trace.format_span_id(parent.get_span_context().span_id),
        child_span_id=trace.format_span_id(ctx.span_id),
    )


def _assert_typed(attributes: dict[str, Any]) -> None:
    for key, value in TYPED_ATTRIBUTES.items():
        got = attributes[key]
        assert got == value, key
        # == alone would take True for 1 and 2.0 for 2.
        assert type(got) is type(value), key
        if isinstance(value, list):
            assert [type(v) for v in got] == [type(v) for v in value], key


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_logs_are_parsed_exactly(collector: Collector, protocol: str) -> None:
    sent = _send(collector, protocol)

    def ours(r: LogRecord) -> bool:
        return r.resource.get("test.run") == sent.run

    records = sorted(collector.wait_for_logs(ours, count=2), key=lambda r: r.attributes["seq"])
    assert len(records) == 2
    in_span, event = records

    assert in_span.body == "inside the child span"
    assert in_span.severity_number is SeverityNumber.WARN
    assert in_span.severity_text == "WARN"
    assert in_span.trace_id == sent.trace_id
    assert in_span.span_id == sent.child_span_id
    assert in_span.flags & 0x01  # W3C "sampled", from the span context
    assert in_span.event_name == ""
    assert in_span.observed_timestamp > 0

    assert event.event_name == "process.exec"
    assert event.body == "an event"
    assert event.timestamp == 1_700_000_000_123_456_789
    assert event.severity_number is SeverityNumber.INFO
    assert (event.trace_id, event.span_id) == ("", "")  # emitted outside any span
    _assert_typed(event.attributes)
    assert event.scope_name == "test.logger"
    assert event.scope_version == "0.1"
    assert event.resource["service.name"] == "collector-fixture-test"
    assert event.resource["res.int"] == 7
    assert event.resource["res.list"] == ["x", "y"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_spans_are_parsed_exactly(collector: Collector, protocol: str) -> None:
    sent = _send(collector, protocol)

    def ours(s: Span) -> bool:
        return s.trace_id == sent.trace_id

    spans = {s.name: s for s in collector.wait_for_spans(ours, count=2)}
    assert set(spans) == {"parent", "child"}
    parent, child = spans["parent"], spans["child"]

    assert parent.span_id == sent.parent_span_id
    assert parent.parent_span_id == ""
    assert parent.kind is SpanKind.SERVER
    assert parent.status_code is StatusCode.UNSET
    _assert_typed(parent.attributes)

    assert child.span_id == sent.child_span_id
    assert child.parent_span_id == sent.parent_span_id
    assert child.kind is SpanKind.CLIENT
    assert child.status_code is StatusCode.ERROR
    assert child.status_message == "it failed"
    [step] = child.events
    assert step.name == "step"
    assert step.attributes == {"n": 1, "what": "x"}
    assert parent.start_time <= child.start_time <= step.timestamp <= child.end_time <= parent.end_time

    assert child.scope_name == "test.tracer"
    assert child.scope_version == "1.2.3"
    assert child.resource["test.run"] == sent.run
    assert child.resource["res.list"] == ["x", "y"]


def test_bytes_maps_and_empty_values_keep_their_types(collector: Collector) -> None:
    # Log record bodies and attributes may be any AnyValue: bytes, maps, nested
    # arrays, and empty values (None) that rotel's debug text cannot tell apart.
    run = uuid.uuid4().hex
    exporter, _ = _exporters(collector, "grpc")
    provider = LoggerProvider(resource=Resource.create({"test.run": run}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    body: AnyValue = {"raw": b"\x00\xff)", "list": [1, "a", {"none": None}], "nested": [[1.5]]}
    provider.get_logger("t").emit(body=body, attributes={"bytes": b"\x01\x02", "map": {"k": True}})
    provider.get_logger("t").emit(body=b"only bytes")
    provider.shutdown()

    records = collector.wait_for_logs(lambda r: r.resource.get("test.run") == run, count=2)
    assert [r.body for r in records] == [body, b"only bytes"]
    assert records[0].attributes == {"bytes": b"\x01\x02", "map": {"k": True}}


def test_restart_keeps_the_ports_and_the_records(make_collector: Callable[[], Collector]) -> None:
    c = make_collector()
    ports = (c.grpc_port, c.http_port)
    assert c.grpc_endpoint == f"http://127.0.0.1:{c.grpc_port}"
    assert c.http_endpoint == f"http://127.0.0.1:{c.http_port}"
    assert c.grpc_port != c.http_port
    before = _send(c, "grpc")
    # Both signals in before stopping: rotel answers a request before its
    # processor has necessarily run, and a stop drops what it has not processed.
    c.wait_for_spans(lambda s: s.trace_id == before.trace_id, count=2)
    c.wait_for_logs(lambda r: r.trace_id == before.trace_id)
    old_pid = c.pid

    c.restart()

    assert (c.grpc_port, c.http_port) == ports
    assert c.pid != old_pid
    after = _send(c, "http")
    c.wait_for_spans(lambda s: s.trace_id == after.trace_id, count=2)
    c.wait_for_logs(lambda r: r.trace_id == after.trace_id)
    assert {s.trace_id for s in c.spans()} == {before.trace_id, after.trace_id}
    assert len(c.logs()) == 4


def test_restart_waits_for_a_port_held_elsewhere(make_collector: Callable[[], Collector]) -> None:
    c = make_collector()
    c.stop()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", c.grpc_port))
    holder.listen()
    release = threading.Timer(1.0, holder.close)
    release.start()
    try:
        started = time.monotonic()
        c.start()  # fails to bind until the holder lets go, then succeeds
        assert time.monotonic() - started >= 0.9
    finally:
        release.join()
    sent = _send(c, "grpc")
    c.wait_for_spans(lambda s: s.trace_id == sent.trace_id, count=2)


def test_start_picks_other_ports_when_one_is_taken(
    make_collector: Callable[[], Collector], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process binds a picked port between the pick and rotel's bind.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    taken_port = taken.getsockname()[1]
    real_pick = collector_module._free_port_pair
    picks = iter([(taken_port, real_pick()[1])])
    monkeypatch.setattr(collector_module, "_free_port_pair", lambda: next(picks, None) or real_pick())
    try:
        c = make_collector()
    finally:
        taken.close()
    assert c.grpc_port != taken_port
    assert "Address already in use" in c.output_path.read_text()  # the first try failed
    sent = _send(c, "grpc")
    c.wait_for_spans(lambda s: s.trace_id == sent.trace_id, count=2)


def test_paused_collector_does_not_answer(make_collector: Callable[[], Collector]) -> None:
    c = make_collector()
    # Records as an exporter takes them, so that export()'s result shows.
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    run = uuid.uuid4().hex
    provider.get_logger("t").emit(body=run)
    records = memory.get_finished_logs()
    exporter = GrpcLogExporter(endpoint=c.grpc_endpoint, insecure=True, timeout=1)
    try:
        c.pause()
        try:
            assert exporter.export(records) is LogRecordExportResult.FAILURE
            assert c.logs() == []
        finally:
            c.resume()
        assert exporter.export(records) is LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()
    c.wait_for_logs(lambda r: r.body == run)


def test_records_are_read_incrementally_and_processor_errors_raise(tmp_path: Path) -> None:
    # The processor's side of the file format, written by hand: rotel appends
    # while tests read, so a line without its newline must wait.
    path = tmp_path / "logs.jsonl"
    reader = _JsonLines(path, lambda raw: raw["n"])
    assert reader.poll() == []  # no file yet: nothing received
    path.write_text('{"n": 1}\n{"n": 2')
    assert reader.poll() == [1]
    with path.open("a") as f:
        f.write('}\n{"processor_error": "Traceback: boom"}\n{"n": 3}\n')
    for _ in range(2):  # the failure stays: later polls raise it too
        with pytest.raises(CollectorError, match="boom"):
            reader.poll()
    assert reader.records == [1, 2]
