"""W3C Trace Context carried in a process's environment.

Per the OpenTelemetry specification for environment variables as context
carriers, TRACEPARENT, TRACESTATE and BAGGAGE hold the W3C header values.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# version "00": exactly four fields. Higher versions may append fields after
# a "-" (W3C forward compatibility); version ff is invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TRACESTATE_MAX = 512  # W3C: at most 32 members; keep the header bounded


@dataclass(frozen=True, slots=True)
class RemoteParent:
    trace_id: bytes
    span_id: bytes
    sampled: bool
    trace_state: str


def parse_traceparent(value: str) -> tuple[bytes, bytes, bool] | None:
    """(trace id, span id, sampled) of a valid traceparent, else None."""
    m = _TRACEPARENT.fullmatch(value.strip())
    if not m:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return bytes.fromhex(trace_id), bytes.fromhex(span_id), bool(int(flags, 16) & 1)


def trace_context_entries(env: list[str]) -> dict[str, str]:
    """TRACEPARENT / TRACESTATE / BAGGAGE values from a KEY=VALUE list. A key
    set twice keeps its first value, as getenv(3) does. Cached on a shared
    decoded block (events.Strings)."""
    cached = getattr(env, "trace_context", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    found = _scan(env)
    if hasattr(type(env), "trace_context"):
        env.trace_context = found  # type: ignore[attr-defined]
    return found


def _scan(env: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in env:
        if entry[:1] in "TB" and (entry.startswith("TRACE") or entry.startswith("BAGGAGE=")):
            key, sep, value = entry.partition("=")
            if sep and key in ("TRACEPARENT", "TRACESTATE", "BAGGAGE"):  # getenv(3) skips entries without "="
                found.setdefault(key, value)
    return found


def remote_parent(ctx: dict[str, str]) -> RemoteParent | None:
    raw = ctx.get("TRACEPARENT")
    parsed = parse_traceparent(raw) if raw is not None else None
    if parsed is None:
        return None
    return RemoteParent(parsed[0], parsed[1], parsed[2], ctx.get("TRACESTATE", "")[:_TRACESTATE_MAX])
