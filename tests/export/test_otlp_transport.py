"""The transports' configuration (the OTEL_EXPORTER_OTLP_* rules the SDK's
exporters follow) and the decoding of collector answers, without a kernel.
The same paths run for real, against fake collectors, in
tests/export/test_export_failures.py and tests/export/test_tls.py."""
from __future__ import annotations

import datetime
import email.utils
import os
import subprocess
import sys

import pytest
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from otel_exec.export.otlp import encode, transport
from otel_exec.export.otlp import protowire as w
from otel_exec.errors import UsageError
from otel_exec.export.otlp.transport import Outcome, OtlpOptions, transport_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)


def test_grpc_endpoint_scheme_decides_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    grpc_opts = OtlpOptions(protocol="grpc")
    assert transport_settings("logs", grpc_opts).target == "localhost:4317"
    assert transport_settings("logs", grpc_opts).insecure  # http:// default
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c.example:4317")
    s = transport_settings("logs", grpc_opts)
    assert (s.target, s.insecure) == ("c.example:4317", False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")  # https wins
    assert not transport_settings("logs", grpc_opts).insecure
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "c2:4317")  # no scheme: *_INSECURE decides
    s = transport_settings("traces", grpc_opts)
    assert (s.target, s.insecure) == ("c2:4317", True)
    assert transport_settings("logs", OtlpOptions(endpoint="http://flag:1", protocol="grpc")).target == "flag:1"


def test_http_endpoint_per_signal_as_is_generic_with_path(monkeypatch: pytest.MonkeyPatch) -> None:
    http = OtlpOptions(protocol="http/protobuf")
    assert transport_settings("logs", http).target == "http://localhost:4318/v1/logs"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c.example:4318/")
    assert transport_settings("traces", http).target == "https://c.example:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "https://l.example/custom/path")
    assert transport_settings("logs", http).target == "https://l.example/custom/path"
    flag = OtlpOptions(endpoint="http://flag:4318/", protocol="http/protobuf")
    assert transport_settings("logs", flag).target == "http://flag:4318/v1/logs"


def test_headers_url_decoded_per_signal_first_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20abc,x-a=1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-t=2")
    assert dict(transport_settings("logs", OtlpOptions()).headers) == {"authorization": "Bearer abc", "x-a": "1"}
    assert dict(transport_settings("traces", OtlpOptions()).headers) == {"x-t": "2"}
    flags = OtlpOptions(headers={"x-a": "flag"})
    assert dict(transport_settings("logs", flags).headers)["x-a"] == "flag"


@pytest.mark.parametrize("headers,env,fragment", [
    ({"Upper": "v"}, "", "header name 'Upper'"),
    ({"grpc-timeout": "1"}, "", "not grpc-*"),
    ({"trace-bin": "AAEC"}, "", "binary metadata"),
    ({"k": "a\tb"}, "", "not printable ASCII"),
    ({}, "k=caf%C3%A9", "OTEL_EXPORTER_OTLP_HEADERS"),
])
def test_bad_headers_are_usage_errors(monkeypatch: pytest.MonkeyPatch, headers: dict[str, str], env: str,
                                      fragment: str) -> None:
    if env:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", env)
    with pytest.raises(UsageError, match=fragment):
        transport_settings("logs", OtlpOptions(headers=headers))


def test_timeout_and_compression_per_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "7")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "2.5")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "GZIP")
    logs, traces = (transport_settings(s, OtlpOptions()) for s in ("logs", "traces"))
    assert (logs.timeout_s, logs.compression) == (2.5, "none")
    assert (traces.timeout_s, traces.compression) == (7.0, "gzip")


def test_partial_success_is_decoded_for_both_signals() -> None:
    logs = ExportLogsServiceResponse(partial_success=ExportLogsPartialSuccess(
        rejected_log_records=3, error_message="bad attr")).SerializeToString()
    spans = ExportTraceServiceResponse(partial_success=ExportTracePartialSuccess(
        rejected_spans=2)).SerializeToString()
    assert transport._sent(logs) == transport.Answer(Outcome.SENT, "partial success", "bad attr", rejected=3)
    assert transport._sent(spans).rejected == 2
    assert transport._sent(b"") == transport.Answer(Outcome.SENT)
    assert transport._sent(b"\xff\xff").outcome is Outcome.SENT  # garbage: still taken


def test_retry_after_seconds_and_http_date() -> None:
    assert transport.retry_after_s("3") == 3.0
    in_ten = email.utils.format_datetime(datetime.datetime.now(datetime.timezone.utc)
                                         + datetime.timedelta(seconds=10), usegmt=True)
    assert 8 <= transport.retry_after_s(in_ten) <= 10  # type: ignore[operator]
    assert transport.retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: now
    assert transport.retry_after_s("soon") is None and transport.retry_after_s(None) is None


def _status_with_retry_info(seconds: int, nanos: int = 0) -> bytes:
    detail = AnyMessage()
    detail.Pack(RetryInfo(retry_delay=Duration(seconds=seconds, nanos=nanos)))
    return Status(code=8, message="busy", details=[detail]).SerializeToString()


@pytest.mark.parametrize("code,trailers,outcome,delay", [
    ("UNAVAILABLE", (), Outcome.RETRY, None),
    ("DEADLINE_EXCEEDED", (), Outcome.RETRY, None),
    ("CANCELLED", (), Outcome.RETRY, None),
    ("DATA_LOSS", (), Outcome.RETRY, None),
    ("INVALID_ARGUMENT", (), Outcome.REJECTED, None),
    ("PERMISSION_DENIED", (), Outcome.REJECTED, None),
    ("UNIMPLEMENTED", (), Outcome.REJECTED, None),
    ("RESOURCE_EXHAUSTED", (), Outcome.TOO_LARGE, None),
    ("RESOURCE_EXHAUSTED", (("grpc-status-details-bin", _status_with_retry_info(4, 500_000_000)),),
     Outcome.RETRY, 4.5),
    ("RESOURCE_EXHAUSTED",
     (("google.rpc.retryinfo-bin", RetryInfo(retry_delay=Duration(seconds=2)).SerializeToString()),),
     Outcome.RETRY, 2.0),
])
def test_grpc_codes_classified_as_the_otlp_spec_says(code: str, trailers: tuple, outcome: Outcome,
                                                     delay: float | None) -> None:
    answer = transport._grpc_failure(code, "why", trailers)
    assert (answer.outcome, answer.retry_after_s, answer.reason, answer.message) == (outcome, delay, code, "why")


def test_http_error_message_from_a_status_or_text() -> None:
    assert transport._http_message(Status(message="no tenant").SerializeToString(), "application/x-protobuf") \
        == "no tenant"
    assert transport._http_message(b"plain words\n", "text/plain") == "plain words"


def test_request_records_split_back_into_the_records_it_was_built_from() -> None:
    records = [w.len_field(2, w.fixed64_field(1, i) + w.len_field(3, b"x" * i)) for i in range(1, 6)]
    request = encode.export_request(encode.encoded_resource({"service.name": "t"}), records)
    assert encode.request_records(request) == records
    half = encode.export_request(encode.encoded_resource({"service.name": "t"}), records[:2])
    assert len(ExportLogsServiceRequest.FromString(half).resource_logs[0].scope_logs[0].log_records) == 2
