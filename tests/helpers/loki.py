"""Loki's ingestion rules applied to a log record as a collector received
it: would Loki's OTLP endpoint, at its default limits, accept it?

Written from Loki's own code and docs, independently of the agent's
encoder (otel_exec/export/otlp/shape.py), so that a test compares the two:
- pkg/loghttp/push/otlp.go: the line is the body as text; the structured
  metadata are the log attributes (a map flattened), the resource and
  scope attributes that are not index labels, scope_name and
  scope_version, and observed_timestamp, severity_number, severity_text,
  dropped_attributes_count, flags, trace_id, span_id when set; each name
  is the key normalized as a Prometheus label (an invalid character
  becomes "_"), each value the attribute's text (pcommon.Value.AsString:
  an array is JSON as Go's encoding/json writes it).
- pkg/distributor/validator.go: a line is refused when len(line) >
  max_line_size, when the metadata's sum of len(name) + len(value) >
  max_structured_metadata_size, or when it has more than
  max_structured_metadata_entries_count entries.
- the defaults, limits_config: max_line_size 256KB, max_structured_metadata_size
  64KB, max_structured_metadata_entries_count 128; Loki parses "KB" as 1000
  bytes (dskit flagext.ByteSize, go-humanize).
"""
from __future__ import annotations

import json
import re
from typing import Any

from tests.helpers.collector import LogRecord

MAX_LINE_BYTES = 256_000
MAX_METADATA_BYTES = 64_000
MAX_METADATA_ENTRIES = 128

# distributor.otlp.default_resource_attributes_as_index_labels: these
# become labels, not structured metadata.
DEFAULT_INDEX_LABELS = frozenset((
    "service.name", "service.namespace", "service.instance.id", "deployment.environment",
    "deployment.environment.name", "cloud.region", "cloud.availability_zone", "k8s.cluster.name",
    "k8s.namespace.name", "k8s.pod.name", "k8s.container.name", "container.name", "k8s.replicaset.name",
    "k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name", "k8s.cronjob.name", "k8s.job.name"))

_INVALID_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")


def label_name(key: str) -> str:
    """Prometheus's NormalizeLabel, as Loki's OTLP ingestion applies it."""
    name = _INVALID_LABEL_CHAR.sub("_", key)
    if name[:1].isdigit():
        name = "key_" + name
    elif name.startswith("_") and not name.startswith("__"):
        name = "key" + name
    return name


def _go_json(value: Any) -> str:
    """encoding/json's text (HTML-safe escaping, as json.Marshal does)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return _go_json(value)
    if isinstance(value, bytes):
        import base64
        return base64.b64encode(value).decode()
    return str(value)


def _flattened(attributes: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for key, value in attributes.items():
        name = label_name(key) if not prefix else f"{prefix}_{key}"
        if isinstance(value, dict):
            out += _flattened(value, name)
        else:
            out.append((name, value_text(value)))
    return out


def structured_metadata(record: LogRecord) -> list[tuple[str, str]]:
    """The entries Loki stores with the line."""
    entries = _flattened(record.attributes)
    entries += _flattened({k: v for k, v in record.resource.items() if k not in DEFAULT_INDEX_LABELS})
    entries += [(name, value) for name, value in (("scope_name", record.scope_name),
                                                  ("scope_version", record.scope_version)) if value]
    if record.timestamp and record.observed_timestamp:
        entries.append(("observed_timestamp", str(record.observed_timestamp)))
    if record.severity_number:
        entries.append(("severity_number", str(record.severity_number.value)))
    if record.severity_text:
        entries.append(("severity_text", record.severity_text))
    if record.dropped_attributes_count:
        entries.append(("dropped_attributes_count", str(record.dropped_attributes_count)))
    if record.flags:
        entries.append(("flags", str(record.flags)))
    if record.trace_id:
        entries.append(("trace_id", record.trace_id))
    if record.span_id:
        entries.append(("span_id", record.span_id))
    return entries


def line(record: LogRecord) -> str:
    body = record.body
    return body if isinstance(body, str) else ("" if body is None else value_text(body))


def metadata_bytes(entries: list[tuple[str, str]]) -> int:
    return sum(len(name.encode()) + len(value.encode()) for name, value in entries)


def refusals(record: LogRecord) -> list[str]:
    """Why Loki at its defaults would refuse the record's line; [] when it
    would take it."""
    entries = structured_metadata(record)
    why = []
    if len(line(record).encode()) > MAX_LINE_BYTES:
        why.append(f"line of {len(line(record).encode())} bytes > max_line_size {MAX_LINE_BYTES}")
    if metadata_bytes(entries) > MAX_METADATA_BYTES:
        why.append(f"structured metadata of {metadata_bytes(entries)} bytes > max_structured_metadata_size "
                   f"{MAX_METADATA_BYTES}")
    if len(entries) > MAX_METADATA_ENTRIES:
        why.append(f"{len(entries)} structured metadata entries > max_structured_metadata_entries_count "
                   f"{MAX_METADATA_ENTRIES}")
    return why


def from_request(request: bytes) -> list[LogRecord]:
    """The log records of an encoded ExportLogsServiceRequest, as the
    collector fixture reads them back (unit tests, no collector)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry._logs import SeverityNumber

    from tests.helpers.events import any_to_py, attrs

    records = []
    for rl in ExportLogsServiceRequest.FromString(request).resource_logs:
        resource = attrs(rl.resource.attributes)
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                records.append(LogRecord(
                    timestamp=lr.time_unix_nano, observed_timestamp=lr.observed_time_unix_nano,
                    severity_number=SeverityNumber(lr.severity_number), severity_text=lr.severity_text,
                    body=any_to_py(lr.body) if lr.HasField("body") else None, attributes=attrs(lr.attributes),
                    event_name=lr.event_name, trace_id=lr.trace_id.hex(), span_id=lr.span_id.hex(),
                    flags=lr.flags, dropped_attributes_count=lr.dropped_attributes_count, resource=resource,
                    scope_name=sl.scope.name, scope_version=sl.scope.version))
    return records
