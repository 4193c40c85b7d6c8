"""W3C Trace Context carried in a process's environment.

Per the OpenTelemetry specification for environment variables as context
carriers, TRACEPARENT, TRACESTATE and BAGGAGE hold the W3C header values;
the names of the first two can be changed (--traceparent-env,
--tracestate-env), as that specification asks of an implementation.
"""
from __future__ import annotations

import re

from otel_exec.errors import UsageError
from otel_exec.policy.redact import bounded_tracestate

# version "00": exactly four fields. Higher versions may append fields after
# a "-" (W3C forward compatibility); version ff is invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# A name a shell can set: what getenv(3) callers and env(1) agree on.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SAMPLED = 1  # the sampled bit of the trace flags


# A plain class with slots, not a dataclass: this module is on the start-up
# path (docs/architecture.md, Rules).
class RemoteParent:
    __slots__ = ("trace_id", "span_id", "flags", "trace_state")

    def __init__(self, trace_id: bytes, span_id: bytes, flags: int, trace_state: str) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags  # the trace flags as received; bit 0 (SAMPLED): the parent was sampled
        self.trace_state = trace_state


def parse_traceparent(value: str) -> tuple[bytes, bytes, int] | None:
    """(trace id, span id, trace flags) of a valid traceparent, else None."""
    m = _TRACEPARENT.fullmatch(value.strip())
    if not m:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return bytes.fromhex(trace_id), bytes.fromhex(span_id), int(flags, 16)


class TraceContextCarrier:
    """The environment variables that carry the W3C context, and their
    values in an environment, keyed by the W3C field they carry
    (TRACEPARENT, TRACESTATE, BAGGAGE) whatever the variable's name."""

    def __init__(self, traceparent: str = "TRACEPARENT", tracestate: str = "TRACESTATE") -> None:
        for flag, name in (("--traceparent-env", traceparent), ("--tracestate-env", tracestate)):
            if not _ENV_NAME.fullmatch(name):
                raise UsageError(f"{flag} {name!r}: not an environment variable name (letters, digits, "
                                 "_, not starting with a digit)")
        # W3C field -> the variable that carries it.
        self.names = {"TRACEPARENT": traceparent, "TRACESTATE": tracestate, "BAGGAGE": "BAGGAGE"}
        if len(set(self.names.values())) < len(self.names):
            raise UsageError(f"--traceparent-env {traceparent}, --tracestate-env {tracestate}: each field "
                             "needs a variable of its own (BAGGAGE is taken)")
        self._field_of = {name: field for field, name in self.names.items()}
        self._prefixes = tuple(name + "=" for name in self._field_of)
        self._initials = "".join({name[0] for name in self._field_of})  # a cheap test first

    def entries(self, env: list[str]) -> dict[str, str]:
        """The context fields set in a KEY=VALUE list. A variable set twice
        keeps its first value, as getenv(3) does. Cached on a shared decoded
        block (events.Strings)."""
        cached = getattr(env, "trace_context", None)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        found: dict[str, str] = {}
        initials, prefixes, field_of = self._initials, self._prefixes, self._field_of
        for entry in env:
            if entry[:1] in initials and entry.startswith(prefixes):  # getenv(3) skips entries without "="
                name, _, value = entry.partition("=")
                found.setdefault(field_of[name], value)
        if hasattr(type(env), "trace_context"):
            env.trace_context = found  # type: ignore[attr-defined]
        return found


# The default names: what a process reads when nothing else is configured.
trace_context_entries = TraceContextCarrier().entries


def remote_parent(ctx: dict[str, str]) -> RemoteParent | None:
    raw = ctx.get("TRACEPARENT")
    parsed = parse_traceparent(raw) if raw is not None else None
    if parsed is None:
        return None
    return RemoteParent(parsed[0], parsed[1], parsed[2], bounded_tracestate(ctx.get("TRACESTATE", "")))
