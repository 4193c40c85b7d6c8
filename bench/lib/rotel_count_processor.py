"""Rotel logs processor for the benchmark: counts the storm's records, and their latency.

Loaded by rotel (``--otlp-with-logs-processor``, started by bench/run.py), not
imported by the benchmark: it runs in rotel's embedded interpreter (the
system's libpython3.11, stdlib only) on every batch rotel decoded.

It must stay light: the collector shares the machine's 2 cores with the storm
and the agent, so every microsecond spent here is taken from what is measured.
Hence one clock read per batch, no per-record objects of our own, and one
compact line per batch (not per record) appended to the output file:

    {"t": <ns at processing>, "n": <storm records>, "o": <other records>,
     "a": <storm records whose body is OEBENCH_BODY>,
     "us": <time spent here, µs>, "h": {"<latency ms>": <count>, ...}}

where latency = processing time - record timestamp (the kernel's event time),
bucketed by millisecond, and OEBENCH_BODY (optional) the storm's command line
as the record's body should read it: the check of the argv the agent
attributed to each exec against the storm's own.

With OEBENCH_DETAIL=1 (bench/reliability.py, where what arrived matters more
than what it costs) a line also has

    "ids": [[<otel_exec.exec_id>, <time_unix_nano>] of each storm record, ...],
    "e": {"<event name of other records>": {"<unix second>": <count>}},
    "gap": [[<time_unix_nano>, <otel_exec.gap.seconds>], ...],
    "obs": [<process.pid of otel_exec.process.observed records whose body
             holds the marker value>, ...]

so that duplicates (delivery is at least once: a record sent again is the
same bytes) can be told from new records, also from a new exec that got the
same exec id, and start-up records counted. A storm record carries the marker; so does the exec
of the storm launcher itself (the marker is in its environment, which it
passes on), told apart by its command line (the record's body) and counted
as other. Settings come from rotel's environment (set by
bench/lib/rotel_collector.py); the names below are shared with it.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from typing import Any

_OUT = os.environ["OEBENCH_COUNT_FILE"]
_KEY = os.environ["OEBENCH_MARKER_KEY"]
_VALUE = os.environ["OEBENCH_MARKER_VALUE"]
_LAUNCHER = os.environ["OEBENCH_LAUNCHER"]
_ENV_PREFIX = "process.environment_variable."
# otel-exec's default environment: every variable as KEY=VALUE, in order, in
# one array (--env-attributes 0); the entries without "=" after it.
_ENV_PACKED = "otel_exec.env.rest"
_ENV_BARE = "otel_exec.env_entries_without_value"
_DETAIL = os.environ.get("OEBENCH_DETAIL") == "1"
_BODY = os.environ.get("OEBENCH_BODY")
_EXEC_ID = "otel_exec.exec_id"
# Where otel-exec puts the exec id among an exec record's attributes (after
# the pids and the creation time); found by a scan if that ever changes.
_EXEC_ID_INDEX = 5
_GAP = "otel_exec.agent.gap"
_OBSERVED = "otel_exec.process.observed"


_KEY_IN_ENV = _KEY.startswith(_ENV_PREFIX)
_PACKED_ENTRY = f"{_KEY[len(_ENV_PREFIX):]}={_VALUE}"  # the marker as an entry of _ENV_PACKED


def _is_storm(attributes: Any) -> bool:
    if not _KEY_IN_ENV:  # e.g. otel_exec.cmdpath, when the environment is not collected
        return _attribute(attributes, _KEY) == _VALUE
    # Scanned from the end, stopping once past the block of env attributes:
    # otel-exec puts the environment last, and bench/lib/storm.py puts the marker
    # last in the storm's environment, so a storm record is decided in one
    # step (the packed array's last entry, or the last per-variable
    # attribute) and any other record without scanning its ~40 non-env
    # attributes (each access builds a Python object in rotel, ~0.5 us). An
    # attribute layout without a trailing env block still works, just slower.
    in_env = False
    for i in range(len(attributes) - 1, -1, -1):
        kv = attributes[i]
        key = kv.key
        if key == _KEY:
            return kv.value.value == _VALUE
        if key == _ENV_PACKED:
            entries = kv.value.value
            last = len(entries) - 1
            return last >= 0 and entries[last].value == _PACKED_ENTRY
        if key.startswith(_ENV_PREFIX) or key == _ENV_BARE:
            in_env = True
        elif in_env:
            return False
    return False


def _text(body: Any) -> Any:
    return None if body is None else body.value


def _is_launcher(text: Any) -> bool:
    return isinstance(text, str) and text.startswith(_LAUNCHER)


def _attribute(attributes: Any, key: str, hint: int = 0) -> Any:
    """The value of attribute key (looked for at index hint first), or None."""
    if hint < len(attributes) and attributes[hint].key == key:
        return attributes[hint].value.value
    for kv in attributes:
        if kv.key == key:
            return kv.value.value
    return None


def _detail(resource_logs: Any, summary: dict[str, Any]) -> None:
    """The OEBENCH_DETAIL fields of summary (see the module's doc)."""
    ids: list[list[Any]] = []
    events: dict[str, dict[int, int]] = {}
    gaps: list[list[Any]] = []
    observed: list[int] = []
    for scope_logs in resource_logs.scope_logs:
        for record in scope_logs.log_records:
            attributes = record.attributes
            if _is_storm(attributes) and not _is_launcher(_text(record.body)):
                ids.append([_attribute(attributes, _EXEC_ID, _EXEC_ID_INDEX), record.time_unix_nano])
                continue
            name = record.event_name
            t = record.time_unix_nano
            per_second = events.setdefault(name, {})
            per_second[t // 10**9] = per_second.get(t // 10**9, 0) + 1
            if name == _GAP:
                gaps.append([t, _attribute(attributes, "otel_exec.gap.seconds")])
            elif name == _OBSERVED:
                body = record.body
                text = None if body is None else body.value
                if isinstance(text, str) and _VALUE in text:
                    observed.append(_attribute(attributes, "process.pid"))
    summary.update(ids=ids, e=events, gap=gaps, obs=observed)


def _summarise(resource_logs: Any, now: int) -> dict[str, Any]:
    storm = other = argv_ok = 0
    histogram: dict[int, int] = {}
    for scope_logs in resource_logs.scope_logs:
        for record in scope_logs.log_records:
            if not _is_storm(record.attributes):
                other += 1
                continue
            text = _text(record.body)
            if _is_launcher(text):
                other += 1
                continue
            storm += 1
            argv_ok += text == _BODY
            # A record stamped after "now" (clock skew) counts as 0 ms.
            ms = max(0, now - record.time_unix_nano) // 1_000_000
            histogram[ms] = histogram.get(ms, 0) + 1
    return {"t": now, "n": storm, "o": other, "a": argv_ok, "h": histogram}


def process_logs(resource_logs: Any) -> None:
    now = time.time_ns()
    t0 = time.perf_counter()
    # An exception escaping a processor makes rotel (0.0.1a15) panic and
    # exit; write it as a line instead, which bench/lib/rotel_collector.py raises.
    try:
        summary = _summarise(resource_logs, now)
        if _DETAIL:
            _detail(resource_logs, summary)
        # Wall time, an upper bound of this hook's CPU: it waits on nothing
        # but may be preempted.
        summary["us"] = round((time.perf_counter() - t0) * 1e6)
        line = json.dumps(summary, separators=(",", ":"))
    except Exception:  # noqa: BLE001 -- see above: reported, not swallowed
        line = json.dumps({"t": now, "error": traceback.format_exc()})
    # One O_APPEND write per batch: the reader only ever sees whole lines.
    fd = os.open(_OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
