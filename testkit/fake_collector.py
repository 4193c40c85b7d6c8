"""An OTLP receiver that answers as a test tells it to: errors, throttling,
partial success, hangs. OTLP/gRPC (grpcio's generic handlers) and OTLP/HTTP
(http.server) in plain text on loopback.

rotel (tests/helpers/collector.py) is the real collector, but it only ever accepts;
the agent's failure handling needs a collector that refuses, throttles and
stalls on cue. Each request is decoded with the opentelemetry-proto messages
and kept with the answer it got, so a test compares the agent's counters
with what the collector really saw.

    with FakeCollector(policy) as fc:
        ... agent exporting to fc.endpoint("grpc") ...
        fc.records("logs", "accepted")

policy(signal, records, nth) -> Reply is called for each logs/traces request
(nth counts that signal's requests from 0); metrics are always accepted.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent import futures
from http.server import ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from testkit.environment import variable
from testkit.otlp_services import GRPC_SERVICES, REQUESTS, OtlpHttpHandler
from testkit.poll import wait_until

_LOOPBACK = "127.0.0.1"
# The answer status of each gRPC code for HTTP, where a test uses one Reply for both.
_HTTP_FOR = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
             grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.UNAVAILABLE: 503,
             grpc.StatusCode.RESOURCE_EXHAUSTED: 429}


@dataclasses.dataclass(frozen=True)
class Reply:
    """How to answer one request. `http` overrides the status derived from
    `code` for OTLP/HTTP (413, 502, ...); `retry_after_s` becomes Retry-After
    (HTTP) or RetryInfo (gRPC); `hang_s` stalls before answering."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    http: int | None = None
    message: str = ""
    retry_after_s: int | None = None
    partial_rejected: int = 0
    hang_s: float = 0.0

    @property
    def http_status(self) -> int:
        return self.http or _HTTP_FOR.get(self.code, 200 if self.code == grpc.StatusCode.OK else 500)

    def accepted(self, protocol: str) -> bool:
        return (self.code if protocol == "grpc" else self.http_status) in (grpc.StatusCode.OK, 200)


OK = Reply()
Policy = Callable[[str, list[Any], int], Reply]


def accept_all(signal: str, records: list[Any], nth: int) -> Reply:
    return OK


@dataclasses.dataclass
class Received:
    protocol: str
    signal: str
    records: list[Any]  # LogRecord or Span messages (metrics: the request)
    reply: Reply
    accepted: bool  # the records (but reply.partial_rejected) were taken
    at: float  # time.monotonic() on arrival


def _records(signal: str, request: Any) -> list[Any]:
    if signal == "logs":
        return [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    if signal == "traces":
        return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return [request]


def attributes(record: Any) -> dict[str, Any]:
    out = {}
    for kv in record.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


class FakeCollector:
    def __init__(self, policy: Policy = accept_all) -> None:
        self.policy = policy
        self.received: list[Received] = []
        # Per OTLP/HTTP logs/traces request: did it come gzipped (a grpcio
        # server does not show a request's compression to its handler).
        self.gzipped: list[bool] = []
        self._lock = threading.Lock()
        self._nth: dict[str, int] = {}
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._grpc.add_generic_rpc_handlers(tuple(
            grpc.method_handlers_generic_handler(service, {"Export": grpc.unary_unary_rpc_method_handler(
                self._grpc_export(signal))})
            for signal, service in GRPC_SERVICES.items()))
        self.grpc_port = self._grpc.add_insecure_port(f"{_LOOPBACK}:0")
        self._http = ThreadingHTTPServer((_LOOPBACK, 0), _Handler)
        self._http.daemon_threads = True
        self._http.collector = self  # type: ignore[attr-defined]
        self.http_port = self._http.server_address[1]

    def endpoint(self, protocol: str) -> str:
        return f"http://{_LOOPBACK}:{self.grpc_port if protocol == 'grpc' else self.http_port}"

    def __enter__(self) -> FakeCollector:
        self._grpc.start()
        threading.Thread(target=self._http.serve_forever, name="fake-collector-http", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._grpc.stop(grace=None).wait(5)
        self._http.shutdown()
        self._http.server_close()

    # -- answering ------------------------------------------------------------------------------
    def _decide(self, protocol: str, signal: str, body: bytes, gzipped: bool | None = None) -> Reply:
        if signal != "metrics" and gzipped is not None:
            self.gzipped.append(gzipped)
        request = REQUESTS[signal].FromString(body)
        records = _records(signal, request)
        with self._lock:
            nth = self._nth.get(signal, 0)
            self._nth[signal] = nth + 1
        reply = OK if signal == "metrics" else self.policy(signal, records, nth)
        with self._lock:
            self.received.append(Received(protocol, signal, records, reply, reply.accepted(protocol) and not
                                          reply.hang_s, time.monotonic()))
        if reply.hang_s:
            time.sleep(reply.hang_s)
        return reply

    @staticmethod
    def _response(signal: str, reply: Reply) -> bytes:
        if signal == "logs":
            return ExportLogsServiceResponse(partial_success=ExportLogsPartialSuccess(
                rejected_log_records=reply.partial_rejected, error_message=reply.message)).SerializeToString()
        if signal == "traces":
            return ExportTraceServiceResponse(partial_success=ExportTracePartialSuccess(
                rejected_spans=reply.partial_rejected, error_message=reply.message)).SerializeToString()
        return ExportMetricsServiceResponse().SerializeToString()

    def _grpc_export(self, signal: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def export(body: bytes, context: grpc.ServicerContext) -> bytes:
            reply = self._decide("grpc", signal, body)
            if reply.hang_s:
                context.abort(grpc.StatusCode.INTERNAL, "answered after a hang")
            if reply.code != grpc.StatusCode.OK:
                if reply.retry_after_s is not None:
                    info = RetryInfo(retry_delay=Duration(seconds=reply.retry_after_s))
                    context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
                context.abort(reply.code, reply.message)
            return self._response(signal, reply)
        return export

    # -- reading --------------------------------------------------------------------------------
    def requests(self, signal: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.signal == signal]

    def accepted_count(self, signal: str) -> int:
        """Records taken: in accepted requests, less what partial success refused."""
        return sum(len(r.records) - r.reply.partial_rejected for r in self.requests(signal) if r.accepted)

    def refused_count(self, signal: str) -> int:
        """Records in requests answered with an error (whatever the agent does next)."""
        return sum(len(r.records) for r in self.requests(signal) if not r.accepted)

    def marked(self, signal: str, mark_variable: str, mark: str, accepted: bool | None = True) -> list[Any]:
        """The records whose environment sets mark_variable to mark (in either
        form, testkit/environment.py)."""
        return [rec for r in self.requests(signal) if accepted is None or r.accepted == accepted
                for rec in r.records if variable(attributes(rec), mark_variable) == mark]

    def metric(self, name: str, attrs: dict[str, str]) -> int | None:
        """The last value of a cumulative sum data point the agent exported."""
        value = None
        for r in self.requests("metrics"):
            for rm in r.records[0].resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name != name:
                            continue
                        for dp in m.sum.data_points:
                            if {kv.key: kv.value.string_value for kv in dp.attributes} == attrs:
                                value = dp.as_int
        return value

    def wait(self, done: Callable[[], Any], timeout: float = 20) -> Any:
        return wait_until(done, timeout)


class _Handler(OtlpHttpHandler):
    server: ThreadingHTTPServer

    def handle_export(self, signal: str, body: bytes, gzipped: bool) -> None:
        collector: FakeCollector = self.server.collector  # type: ignore[attr-defined]
        reply = collector._decide("http/protobuf", signal, body, gzipped)
        if reply.hang_s:
            self.answer(500, b"answered after a hang", {"Content-Type": "text/plain"})
        elif reply.http_status == 200:
            self.answer(200, collector._response(signal, reply), {"Content-Type": "application/x-protobuf"})
        else:
            extra = {"Content-Type": "application/x-protobuf"}
            if reply.retry_after_s is not None:
                extra["Retry-After"] = str(reply.retry_after_s)
            self.answer(reply.http_status, Status(code=reply.code.value[0], message=reply.message)
                        .SerializeToString(), extra)
