"""The shape of an exec record: bounds that keep every record within what
Loki accepts by default, and the OpenTelemetry attribute limits
(docs/attributes.md#the-shape-of-a-record).

Loki's OTLP endpoint turns every log attribute, and every resource and
scope attribute that is not an index label, into structured metadata of
the line, and refuses a line with more than max_structured_metadata_entries_count
(default 128) entries, more than max_structured_metadata_size (default
64KB, which Loki parses as 64,000 bytes) bytes of metadata, counted as
each entry's name plus its value as text, or a body longer than
max_line_size (default 256KB: 256,000 bytes). The agent controls the
record's own attributes and body: RecordLimits gives them a budget below
those numbers, and what Loki and the collector add (severity, trace ids,
timestamps, resource, scope) keeps the rest.

Shaping runs where the encoder caches its work (once per shared part of a
kernel record, which holds the argv and environment blocks), never per
exec.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Mapping, Union

from otel_exec.errors import UsageError
from otel_exec.export.otlp import attributes as keys

# Loki's defaults (limits_config), the numbers the default budget fits.
LOKI_MAX_ENTRIES = 128  # max_structured_metadata_entries_count
LOKI_MAX_METADATA_BYTES = 64_000  # max_structured_metadata_size: 64KB

# What Loki adds to a line's metadata besides the record's attributes, at
# most: observed_timestamp, severity_number, severity_text, flags,
# trace_id, span_id, dropped_attributes_count; scope_name, scope_version
# and its dropped count; the resource attributes that are not labels (the
# agent's ten or so, and what a collector adds: container.id,
# k8s.pod.uid, k8s.node.name, container.image.name, ...).
DEFAULT_MAX_ATTRIBUTES = LOKI_MAX_ENTRIES - 28
DEFAULT_MAX_BYTES = LOKI_MAX_METADATA_BYTES - 4_000

# No path the kernel resolves is longer (OE_PATH_MAX); argv[0], the one
# other unbounded value outside argv and the environment, is cut to it.
VALUE_MAX_BYTES = 4096
# The smallest budget that still leaves argv and the environment room
# after the other attributes at their longest (ten values of 4096 bytes).
MIN_MAX_BYTES = 48 * 1024
# The exec's own ids (pid, parent pid, vpid, vppid, creation time, exec
# id, parent exec id): encoded per exec, outside the shaping, so counted
# here. An OTEL_* limit below these would cut an exec's identity.
IDS_COUNT = 7
IDS_MAX_BYTES = 400
# Its file's identity when that is on (host/executables.py: up to six
# attributes of the executable, four more of a `#!` script), also outside
# the shaping: counted; their bytes (under 1,000) fit in the margin left
# under Loki's limit (DEFAULT_MAX_BYTES).
EXECUTABLE_IDENTITY_COUNT = 6
SCRIPT_IDENTITY_COUNT = 4


def identity_count(has_identity: bool, has_script: bool) -> int:
    """Attributes the file identity may add to an exec record."""
    return (EXECUTABLE_IDENTITY_COUNT + (SCRIPT_IDENTITY_COUNT if has_script else 0)) if has_identity else 0
MIN_COUNT_LIMIT = 16
MIN_VALUE_LENGTH_LIMIT = 32  # an exec id is 32 characters
# What ending a span adds (spans.py: ended_by, incomplete, exit code or
# signal, error.type, untrusted traceparent): room kept for it.
SPAN_END_ATTRIBUTES = 5
BODY = "body"  # in otel_exec.record.cut: the body (the command line) was cut

Value = Union[str, bool, int, float, list]
Pair = tuple[str, Value]


@dataclass(frozen=True)
class RecordLimits:
    """The budget of one record's attributes and body (run options) and the
    OTEL_* attribute limits (None: unlimited)."""

    max_attributes: int = DEFAULT_MAX_ATTRIBUTES
    max_bytes: int = DEFAULT_MAX_BYTES
    # Environment variables as attributes of their own (--env-attributes);
    # the rest packed as KEY=VALUE into one attribute. None by default: the
    # per-variable key prefix was most of a record's environment bytes.
    env_attributes: int = 0
    body_max_bytes: int = 4096
    # --record-attributes full: an exec record also sends the attributes its
    # others say exactly (encode.py leaves them out by default).
    repeat_derived: bool = False
    log_count: int = 128
    log_value_length: int | None = None
    span_count: int = 128
    span_value_length: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **options: int | bool) -> RecordLimits:
        """The run options with OTEL_ATTRIBUTE_COUNT_LIMIT,
        OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT and their OTEL_LOGRECORD_* and
        OTEL_SPAN_* variants (the signal's own variable wins)."""
        return cls(**options,
                   log_count=_limit(environ, "LOGRECORD", "COUNT", MIN_COUNT_LIMIT) or 128,
                   log_value_length=_limit(environ, "LOGRECORD", "VALUE_LENGTH", MIN_VALUE_LENGTH_LIMIT),
                   span_count=_limit(environ, "SPAN", "COUNT", MIN_COUNT_LIMIT) or 128,
                   span_value_length=_limit(environ, "SPAN", "VALUE_LENGTH", MIN_VALUE_LENGTH_LIMIT))


def _limit(environ: Mapping[str, str], signal: str, what: str, minimum: int) -> int | None:
    for var in (f"OTEL_{signal}_ATTRIBUTE_{what}_LIMIT", f"OTEL_ATTRIBUTE_{what}_LIMIT"):
        raw = environ.get(var, "").strip()
        if raw:
            try:
                value = int(raw)
            except ValueError:
                raise UsageError(f"{var}={raw!r}: not a whole number") from None
            if value < minimum:
                raise UsageError(f"{var}={raw!r}: must be at least {minimum}: a lower limit would cut "
                                 "the exec's own ids (docs/attributes.md#the-shape-of-a-record)")
            return value
    return None


# Go's encoding/json, which Loki uses to turn an array into text: these
# characters take more bytes escaped (the control characters at most 6;
# <, > and & are escaped for HTML; U+FFFD stands for bytes that were not
# UTF-8, which Go writes as an escape).
_JSON_ESCAPES = {**{c: f"\\u{c:04x}" for c in range(0x20)}, ord("\n"): "\\n", ord("\r"): "\\r",
                 ord("\t"): "\\t", ord('"'): '\\"', ord("\\"): "\\\\", ord("<"): "\\u003c",
                 ord(">"): "\\u003e", ord("&"): "\\u0026", 0x2028: "\\u2028", 0x2029: "\\u2029",
                 0xFFFD: "\\ufffd"}


def _utf8_size(s: str) -> int:
    return len(s.encode("utf-8", "replace"))


def _json_size(s: str) -> int:
    """Bytes of s as a JSON string, quotes included, as Go writes it (at
    most: Go writes \\b and \\f in 2 bytes, counted here as 6)."""
    return 2 + _utf8_size(s.translate(_JSON_ESCAPES))


def value_size(value: Value) -> int:
    """Bytes of an attribute value as Loki's metadata text."""
    if isinstance(value, str):
        return _utf8_size(value)
    if isinstance(value, bool):
        return 4 if value else 5
    if isinstance(value, list):
        return 1 + sum(_json_size(str(e)) + 1 for e in value) if value else 2
    return len(str(value))


def utf8_cut(s: str, max_bytes: int) -> str:
    b = s.encode("utf-8", "replace")
    return s if len(b) <= max_bytes else b[:max(max_bytes, 0)].decode("utf-8", "ignore")


def _json_cut(s: str, room: int) -> str:
    """The longest start of s whose JSON string takes at most room bytes."""
    t = utf8_cut(s, room - 2)
    while t and _json_size(t) > room:
        t = t[:len(t) - (_json_size(t) - room)]
    return t


def _fit_array(items: list[str], room: int) -> tuple[list[str], bool]:
    """The items, in order, that fit in room bytes of JSON array text; the
    first one that does not fit is cut to what is left, the rest left out.
    True when anything was cut."""
    used = 2  # []
    for i, item in enumerate(items):
        size = _json_size(item) + (1 if i else 0)
        if used + size > room:
            left = room - used - (1 if i else 0)
            head = [*items[:i], _json_cut(item, left)] if left > 2 else items[:i]
            return head, True
        used += size
    return items, False


def _otel_cut(value: Value, length: int) -> Value:
    if isinstance(value, str):
        return value[:length]
    if isinstance(value, list):
        return [e[:length] if isinstance(e, str) else e for e in value]
    return value


def fits(limits: RecordLimits, count: int, env_attributes: int, encoded_size: int,
         argv: list[str] | None, line: str | None) -> bool:
    """Whether a record is within the budget as it is (the environment's
    first limits.env_attributes variables as attributes of their own, the
    rest packed: env_attributes attributes in all), from its attributes'
    encoded (protobuf) size, without sizing each one: an attribute's text
    in Loki is at most 6 times its encoded bytes (a JSON escape takes 6
    bytes for 1) plus 20 (an int64 in decimal); argv[0] and the body need
    no cut."""
    return (count + env_attributes <= min(limits.max_attributes, limits.log_count)
            and 6 * encoded_size + 20 * (count + env_attributes) + IDS_MAX_BYTES <= limits.max_bytes
            and (line is None or len(line) <= limits.body_max_bytes // 4 or _utf8_size(line) <= limits.body_max_bytes)
            and (not argv or len(argv[0]) <= VALUE_MAX_BYTES // 4))


class Shaped:
    """One record's attributes shaped: `common` (the cut flag first, the
    command line last), `env` (the environment's), and the body text."""

    __slots__ = ("common", "env", "body")

    def __init__(self, common: list[Pair], env: list[Pair], body: str | None) -> None:
        self.common = common
        self.env = env
        self.body = body


def shape_record(fixed: list[Pair], argv: list[str] | None, env: list[tuple[str, str]], bare: list[str],
                 limits: RecordLimits, value_length: int | None, ids_count: int = IDS_COUNT) -> Shaped:
    """The record's attributes within the budget: `fixed` (every attribute
    but the command line's arguments and the environment) with values
    bounded; argv as process.command_args and the environment (per-key
    attributes, then the rest packed into otel_exec.env.rest and
    otel_exec.env_entries_without_value) share what is left, each taking
    at least half when both do not fit; the body is the command line, cut
    at body_max_bytes. What was cut is named in otel_exec.record.cut."""
    fixed = [(k, v) for k, v in fixed if k != keys.COMMAND_ARGS]  # argv is shaped below
    cut: list[str] = []
    env_mark = keys.ENV_PREFIX.rstrip(".")
    if value_length is not None:
        limited = [(k, _otel_cut(v, value_length)) for k, v in fixed]
        cut += [k for (k, v), (_, w) in zip(fixed, limited) if v != w]
        fixed = limited
        if argv is not None and any(len(a) > value_length for a in argv):
            argv = [a[:value_length] for a in argv]
            cut.append(keys.COMMAND_ARGS)
        if any(len(v) > value_length for _, v in env) or any(len(b) > value_length for b in bare):
            env = [(k, v[:value_length]) for k, v in env]
            bare = [b[:value_length] for b in bare]
            cut.append(env_mark)
    shaped: list[Pair] = []
    size = IDS_MAX_BYTES if ids_count else 0
    for key, value in fixed:
        if isinstance(value, str) and len(value) > VALUE_MAX_BYTES // 4 and _utf8_size(value) > VALUE_MAX_BYTES:
            value = utf8_cut(value, VALUE_MAX_BYTES)
            cut.append(key)
        shaped.append((key, value))
        size += len(key) + value_size(value)

    body = None
    if argv is not None:
        line = shlex.join(argv)
        body = utf8_cut(line, limits.body_max_bytes)
        if len(body) < len(line):
            cut.append(BODY)

    # The room left, with the cut flag's worst case taken off first.
    flag_reserve = len(keys.RECORD_CUT) + value_size([*cut, keys.COMMAND_ARGS, env_mark])
    room = limits.max_bytes - size - flag_reserve
    count_room = min(limits.max_attributes, limits.log_count) - ids_count - len(shaped) - 1

    if argv is not None:
        key_size = len(keys.COMMAND_ARGS)
        argv_size = value_size(argv)
        env_size = sum(len(keys.ENV_PREFIX) + len(k) + _utf8_size(v) for k, v in env) + value_size(bare)
        args_room = room - key_size
        share = min(argv_size, max(args_room // 2, args_room - env_size))
        args, argv_cut = _fit_array(argv, share)
        if argv_cut:
            cut.append(keys.COMMAND_ARGS)
        shaped.append((keys.COMMAND_ARGS, args))
        room -= key_size + value_size(args)
        count_room -= 1

    env_pairs, env_cut = _shape_env(env, bare, room, min(limits.env_attributes, count_room - 2), value_length)
    if env_cut:
        cut.append(env_mark)
    if cut:
        shaped.insert(0, (keys.RECORD_CUT, list(dict.fromkeys(cut))))
    return Shaped(shaped, env_pairs, body)


def _shape_env(env: list[tuple[str, str]], bare: list[str], room: int, per_key: int,
               value_length: int | None) -> tuple[list[Pair], bool]:
    """The environment in room bytes: the first per_key variables as
    attributes of their own, the others as KEY=VALUE in one array (each
    entry a string of it: cut to the OTel value length, as the values of
    the others are), the entries without "=" in another."""
    pairs: list[Pair] = []
    rest: list[str] = []
    for i, (name, value) in enumerate(env):
        key = keys.ENV_PREFIX + name
        cost = len(key) + _utf8_size(value)
        if len(pairs) >= per_key or cost > room - len(keys.ENV_REST) - 2:
            rest = [f"{n}={v}" for n, v in env[i:]]
            break
        pairs.append((key, value))
        room -= cost
    cut = False
    if value_length is not None and any(len(entry) > value_length for entry in rest):
        rest = [entry[:value_length] for entry in rest]
        cut = True
    for key, entries in ((keys.ENV_REST, rest), (keys.ENV_WITHOUT_VALUE, bare)):
        if entries:
            kept, entries_cut = _fit_array(entries, room - len(key))
            cut = cut or entries_cut
            if kept:
                pairs.append((key, kept))
                room -= len(key) + value_size(kept)
    return pairs, cut
