"""The OTLP services a receiver on loopback serves: per signal, its request
and response messages, its gRPC service name, and its OTLP/HTTP path."""
from __future__ import annotations

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
