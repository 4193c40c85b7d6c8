"""Rotel Python processor that appends every payload it sees to JSON lines.

Loaded by rotel itself (``--otlp-with-logs-processor`` and
``--otlp-with-trace-processor``, see tests/helpers/collector.py), NOT by pytest: it runs
in rotel's embedded interpreter (the system's libpython3.11 and its stdlib
only; ``rotel_sdk`` is a module that rotel provides) on the payload rotel
decoded from OTLP/gRPC or OTLP/HTTP. Writing the decoded objects out as JSON
gives tests exact, typed data, which rotel's ``--debug-log`` text cannot:
that text prints strings unescaped (a newline, ``)`` or ``, `` inside a value
makes it ambiguous) and has no way to tell bytes from strings.

Each AnyValue is written tagged like OTLP/JSON (``{"intValue": 1}``), so
int/float/bool/str/bytes survive the trip exactly; ids are lower-case hex.
The output directory comes from the environment (set by tests/helpers/collector.py).
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable
from typing import Any

# rotel_sdk exists only inside rotel (its stubs are the rotel-sdk package).
from rotel_sdk.open_telemetry.common.v1 import ArrayValue, KeyValueList  # type: ignore[import-not-found]

_OUT_DIR = os.environ["OTEL_EXEC_TEST_COLLECTOR_DIR"]
# One file per signal (names shared with tests/helpers/collector.py): rotel runs the
# two hooks in separate pipelines, possibly at the same time.
_LOGS_FILE = "logs.jsonl"
_SPANS_FILE = "spans.jsonl"


def _any_value(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    raw = value.value
    if raw is None:
        return None
    # bool before int: bool is a subclass of int.
    if isinstance(raw, bool):
        return {"boolValue": raw}
    if isinstance(raw, int):
        return {"intValue": raw}
    if isinstance(raw, float):
        return {"doubleValue": raw}
    if isinstance(raw, str):
        return {"stringValue": raw}
    # rotel hands bytes over as a plain list of ints (arrays are ArrayValue).
    if isinstance(raw, (bytes, list)):
        return {"bytesValue": bytes(raw).hex()}
    if isinstance(raw, ArrayValue):
        return {"arrayValue": [_any_value(item) for item in raw]}
    if isinstance(raw, KeyValueList):
        return {"kvlistValue": _attributes(raw)}
    raise TypeError(f"unexpected AnyValue payload {type(raw).__name__}")


def _attributes(key_values: Any) -> list[list[Any]]:
    # A list of pairs, not a dict: keeps order and any duplicate keys.
    return [[kv.key, _any_value(kv.value)] for kv in key_values]


def _resource(resource: Any) -> list[list[Any]]:
    return [] if resource is None else _attributes(resource.attributes)


def _scope(scope: Any) -> dict[str, str]:
    if scope is None:
        return {"name": "", "version": ""}
    return {"name": scope.name, "version": scope.version}


def _append(name: str, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
    # One O_APPEND write per batch: the reader never sees records of two
    # batches interleaved, and only complete lines once the write returns.
    fd = os.open(os.path.join(_OUT_DIR, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def _process(name: str, convert: Callable[[Any], list[dict[str, Any]]], payload: Any) -> None:
    # An exception escaping a processor makes rotel (0.0.1a15) panic and exit;
    # write it as a record instead, which tests/helpers/collector.py raises in the test.
    try:
        records = convert(payload)
    except Exception:  # noqa: BLE001 -- see above: reported, not swallowed
        records = [{"processor_error": traceback.format_exc()}]
    _append(name, records)


def process_logs(resource_logs: Any) -> None:
    _process(_LOGS_FILE, _log_records, resource_logs)


def process_spans(resource_spans: Any) -> None:
    _process(_SPANS_FILE, _span_records, resource_spans)


def _log_records(resource_logs: Any) -> list[dict[str, Any]]:
    resource = _resource(resource_logs.resource)
    records = []
    for scope_logs in resource_logs.scope_logs:
        scope = _scope(scope_logs.scope)
        for lr in scope_logs.log_records:
            records.append(
                {
                    "resource": resource,
                    "scope": scope,
                    "time_unix_nano": lr.time_unix_nano,
                    "observed_time_unix_nano": lr.observed_time_unix_nano,
                    "severity_number": lr.severity_number,
                    "severity_text": lr.severity_text,
                    "event_name": lr.event_name,
                    "body": _any_value(lr.body),
                    "attributes": _attributes(lr.attributes),
                    "dropped_attributes_count": lr.dropped_attributes_count,
                    "flags": lr.flags,
                    "trace_id": lr.trace_id.hex(),
                    "span_id": lr.span_id.hex(),
                }
            )
    return records


def _span_records(resource_spans: Any) -> list[dict[str, Any]]:
    resource = _resource(resource_spans.resource)
    records = []
    for scope_spans in resource_spans.scope_spans:
        scope = _scope(scope_spans.scope)
        for span in scope_spans.spans:
            status = span.status
            records.append(
                {
                    "resource": resource,
                    "scope": scope,
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "trace_state": span.trace_state,
                    "flags": span.flags,
                    "name": span.name,
                    "kind": span.kind,
                    "start_time_unix_nano": span.start_time_unix_nano,
                    "end_time_unix_nano": span.end_time_unix_nano,
                    "attributes": _attributes(span.attributes),
                    "dropped_attributes_count": span.dropped_attributes_count,
                    "events": [
                        {
                            "name": ev.name,
                            "time_unix_nano": ev.time_unix_nano,
                            "attributes": _attributes(ev.attributes),
                            "dropped_attributes_count": ev.dropped_attributes_count,
                        }
                        for ev in span.events
                    ],
                    "dropped_events_count": span.dropped_events_count,
                    "links": [
                        {
                            "trace_id": link.trace_id.hex(),
                            "span_id": link.span_id.hex(),
                            "trace_state": link.trace_state,
                            "flags": link.flags,
                            "attributes": _attributes(link.attributes),
                            "dropped_attributes_count": link.dropped_attributes_count,
                        }
                        for link in span.links
                    ],
                    "dropped_links_count": span.dropped_links_count,
                    "status_code": 0 if status is None else status.code,
                    "status_message": "" if status is None else status.message,
                }
            )
    return records
