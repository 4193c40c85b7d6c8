"""The OTLP services a receiver on loopback serves: per signal, its request
and response messages, its gRPC service name, and its OTLP/HTTP path; and the
OTLP/HTTP request handler both test receivers build on."""
from __future__ import annotations

import gzip
from http.server import BaseHTTPRequestHandler
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

REQUESTS = {"logs": ExportLogsServiceRequest, "traces": ExportTraceServiceRequest,
            "metrics": ExportMetricsServiceRequest}
RESPONSES = {"logs": ExportLogsServiceResponse, "traces": ExportTraceServiceResponse,
             "metrics": ExportMetricsServiceResponse}
GRPC_SERVICES = {
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
}
HTTP_PATHS = {"/v1/logs": "logs", "/v1/traces": "traces", "/v1/metrics": "metrics"}


class OtlpHttpHandler(BaseHTTPRequestHandler):
    """Reads an OTLP/HTTP export (its signal by path, its body unzipped);
    a receiver answers it in handle_export."""

    def do_POST(self) -> None:
        signal = HTTP_PATHS.get(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if signal is None:
            self.answer(404, b"", {})
            return
        gzipped = self.headers.get("Content-Encoding") == "gzip"
        self.handle_export(signal, gzip.decompress(body) if gzipped else body, gzipped)

    def handle_export(self, signal: str, body: bytes, gzipped: bool) -> None:
        raise NotImplementedError

    def answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (a hang test)
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass
