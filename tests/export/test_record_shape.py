"""The shape of an exec record (otel_exec/export/otlp/shape.py): every
record within Loki's default limits whatever its environment and argv, the
cuts flagged, and the OTEL_* attribute limits."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanPb

from otel_exec.errors import UsageError
from otel_exec.export.otlp import attributes as keys, encode, shape
from otel_exec.export.otlp.resource import resource_attributes
from otel_exec.export.otlp.shape import RecordLimits
from otel_exec.host.identity import HostIdentity
from tests.helpers import loki
from tests.helpers.events import attrs, sample_exec

ENV_MARK = keys.ENV_PREFIX.rstrip(".")


_SPAN = SimpleNamespace(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, trace_flags=1)  # what log_record reads of a span


def _record(ev, limits: RecordLimits = RecordLimits(), span_set: int = encode.SPAN_FULL):  # type: ignore[no-untyped-def]
    """The exec's log record through the encoder and back, with the
    agent's real resource, and its span (with the exec's attributes: the
    limits shape those)."""
    enc = encode.exec_attributes(ev, span_set, limits)
    rec = encode.log_record(ev, enc, _SPAN, ev.timestamp + 1)  # type: ignore[arg-type]
    request = encode.export_request(encode.encoded_resource(resource_attributes(HostIdentity.current())), [rec])
    (record,) = loki.from_request(request)
    span_pb = SpanPb.FromString(b"".join(enc.span_attrs()))
    return record, span_pb


def _huge_exec(**over):  # type: ignore[no-untyped-def]
    """300 environment variables and a 100 KiB argv, with characters JSON
    escapes make longer."""
    env = [f"VAR_{i:03d}=" + ("v<&>\"\\" * 40) for i in range(300)]
    argv = ["/usr/bin/tool"] + [f"--opt-{i}=" + "a" * 1000 for i in range(100)]
    return sample_exec(env=["OE_FIRST=1", *env, "BARE"], argv=argv, argc=len(argv), envc=302, **over)


def test_an_ordinary_record_is_sent_as_it_is() -> None:
    ev = sample_exec()
    record, _ = _record(ev)
    assert keys.RECORD_CUT not in record.attributes
    assert record.body == "sudo -u 'x y' 'caf\u00e9'" and record.attributes[keys.COMMAND_ARGS] == ev.argv
    assert record.attributes[keys.ENV_REST] == ["HOME=/root", "API_TOKEN=[REDACTED]"]  # packed, by default
    per_variable, _ = _record(ev, RecordLimits(env_attributes=48))
    assert per_variable.attributes[keys.ENV_PREFIX + "HOME"] == "/root" and keys.ENV_REST not in per_variable.attributes
    assert record.dropped_attributes_count == 0 and not loki.refusals(record)


@pytest.mark.parametrize("env_attributes", [RecordLimits().env_attributes, 48])
def test_300_variables_and_a_100_kib_argv_fit_lokis_defaults_with_the_cut_named(env_attributes: int) -> None:
    ev = _huge_exec(shared=None)
    record, _ = _record(ev, RecordLimits(env_attributes=env_attributes))
    assert loki.refusals(record) == []
    entries = loki.structured_metadata(record)
    assert len(entries) <= loki.MAX_METADATA_ENTRIES and loki.metadata_bytes(entries) <= loki.MAX_METADATA_BYTES
    a = record.attributes
    assert set(a[keys.RECORD_CUT]) == {"body", keys.COMMAND_ARGS, ENV_MARK}
    per_key = [k for k in a if k.startswith(keys.ENV_PREFIX)]
    assert len(per_key) == env_attributes and (keys.ENV_PREFIX + "OE_FIRST" in per_key) == (env_attributes > 0)
    rest = a[keys.ENV_REST]
    packed = ["OE_FIRST=1"] if env_attributes == 0 else []
    first_packed = max(env_attributes - 1, 0)  # OE_FIRST, then VAR_000...
    assert rest and rest[:len(packed) + 1] == [*packed, f"VAR_{first_packed:03d}=" + "v<&>\"\\" * 40]
    # argv: whole arguments first, in order, then at most one cut short
    args = a[keys.COMMAND_ARGS]
    assert args[:-1] == ev.argv[:len(args) - 1] and ev.argv[len(args) - 1].startswith(args[-1])
    assert a[keys.ARGS_COUNT] == 101 and len(record.body.encode()) <= 4096
    assert ev.argv and "sudo" not in record.body and record.body.startswith("/usr/bin/tool --opt-0=aaa")


def test_the_budget_shrinks_and_grows_with_the_options() -> None:
    small = RecordLimits(max_attributes=70, max_bytes=shape.MIN_MAX_BYTES, env_attributes=5, body_max_bytes=100)
    record, _ = _record(_huge_exec(shared=None), small)
    a = record.attributes
    assert len([k for k in a if k.startswith(keys.ENV_PREFIX)]) == 5 and len(record.body.encode()) <= 100
    assert 7 + len(a) <= 70
    assert loki.metadata_bytes(loki._flattened(a)) <= shape.MIN_MAX_BYTES
    roomy = RecordLimits(max_attributes=400, max_bytes=10_000_000, env_attributes=400, body_max_bytes=1 << 20)
    record, _ = _record(_huge_exec(shared=None), roomy)
    assert keys.RECORD_CUT not in record.attributes and len(record.attributes[keys.COMMAND_ARGS]) == 101


def test_shaping_is_cached_with_the_shared_part() -> None:
    from otel_exec.model.events import SharedExec
    shared = SharedExec(())
    shared.repeats = True  # as the decoder marks a repeated command's: its encoding is kept
    first = encode.exec_attributes(_huge_exec(shared=shared))
    again = encode.exec_attributes(_huge_exec(shared=shared, host_pid=9))
    assert again.common is first.common and again.body is first.body


def test_a_long_argv0_is_cut_like_a_path() -> None:
    # process.command is sent with --record-attributes full (a compact record has it as command_args[0])
    record, _ = _record(sample_exec(argv=["x" * 10_000, "y"], shared=None), RecordLimits(repeat_derived=True))
    assert len(record.attributes[keys.COMMAND]) == shape.VALUE_MAX_BYTES
    assert keys.COMMAND in record.attributes[keys.RECORD_CUT] and not loki.refusals(record)


@pytest.mark.parametrize("text", ["plain", "<&>" * 300, "\x01\x02\"\\" * 300, "\u2028é" * 300])
def test_the_fast_bound_never_passes_a_record_the_exact_size_refuses(text: str) -> None:
    limits = RecordLimits(max_bytes=shape.MIN_MAX_BYTES)
    for n in (1, 10, 40):
        ev = sample_exec(argv=["x", *[text] * n], env=[f"K{i}={text}" for i in range(n)], shared=None)
        record, _ = _record(ev, limits)
        own = loki._flattened(record.attributes)
        assert 7 + len(own) <= limits.max_attributes
        assert loki.metadata_bytes(own) <= limits.max_bytes, (text[:10], n)


# --- OTEL_ATTRIBUTE_* limits ------------------------------------------------------

def test_count_limit_drops_the_last_attributes_and_counts_them() -> None:
    ev = sample_exec(env=[f"V{i}=x" for i in range(20)], shared=None)
    limits = RecordLimits.from_env({"OTEL_ATTRIBUTE_COUNT_LIMIT": "30"})
    record, span = _record(ev, limits)
    # Shaped to 30 attributes first (the environment packed, nothing lost), then cut: the reference is
    # the same shape without the cut.
    full, full_span = _record(ev, RecordLimits(max_attributes=30))
    assert keys.ENV_REST in full.attributes and full.dropped_attributes_count == 0
    assert len(record.attributes) == 30 and record.dropped_attributes_count == len(full.attributes) - 30
    assert list(record.attributes) == list(full.attributes)[:30]  # the later ones (the environment) go first
    assert len(span.attributes) == 30 - shape.SPAN_END_ATTRIBUTES  # room left for how the span ends
    assert span.dropped_attributes_count == len(full_span.attributes) - len(span.attributes)


def test_signal_specific_limits_win_over_the_general_ones() -> None:
    limits = RecordLimits.from_env({"OTEL_ATTRIBUTE_COUNT_LIMIT": "20", "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT": "50",
                                    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "40"})
    assert (limits.log_count, limits.span_count, limits.log_value_length, limits.span_value_length) == \
        (50, 20, None, 40)
    assert RecordLimits.from_env({}) == RecordLimits()
    assert RecordLimits.from_env({"OTEL_ATTRIBUTE_COUNT_LIMIT": ""}).log_count == 128


@pytest.mark.parametrize("env_attributes", [0, 48])
def test_value_length_limit_truncates_strings_and_string_arrays(env_attributes: int) -> None:
    ev = sample_exec(argv=["a" * 100, "b" * 100], env=["LONG=" + "z" * 100, "NOEQ" * 30], shared=None)
    limits = RecordLimits.from_env({"OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT": "40"}, repeat_derived=True,
                                   env_attributes=env_attributes)
    record, span = _record(ev, limits)
    a = record.attributes
    assert a[keys.COMMAND_ARGS] == ["a" * 40, "b" * 40] and a[keys.COMMAND] == "a" * 40
    assert a[keys.ENV_WITHOUT_VALUE] == [("NOEQ" * 30)[:40]]
    if env_attributes:
        assert a[keys.ENV_PREFIX + "LONG"] == "z" * 40 and keys.ENV_REST not in a
    else:  # each packed entry is a string of the array: cut to the length as a whole
        assert a[keys.ENV_REST] == [("LONG=" + "z" * 100)[:40]]
    assert a[keys.EXEC_ID] == ev.exec_id  # 32 characters: within any allowed limit
    assert {keys.COMMAND, keys.COMMAND_ARGS, ENV_MARK} <= set(a[keys.RECORD_CUT])
    assert all(len(v) <= 40 for v in a.values() if isinstance(v, str))
    # the span has no value limit here: its values are whole
    assert attrs(span.attributes)[keys.COMMAND_ARGS] == ["a" * 100, "b" * 100]


@pytest.mark.parametrize("env, message", [
    ({"OTEL_ATTRIBUTE_COUNT_LIMIT": "many"}, "not a whole number"),
    ({"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "3"}, "at least 16"),
    ({"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "8"}, "at least 32"),
])
def test_unusable_limits_are_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message) as e:
        RecordLimits.from_env(env)
    assert next(iter(env)) in str(e.value)


def test_a_process_found_running_with_a_huge_argv_is_shaped_too() -> None:
    ev = sample_exec(observed=True, argv=["java", *["-cp=" + "j" * 5000] * 40], shared=None)
    attributes = encode.Attrs.of(encode.seeded_attributes(ev))
    rec = encode.observed_record(ev, None, attributes, 1)
    (record,) = loki.from_request(encode.export_request(b"", [rec]))
    assert loki.refusals(record) == [] and len(record.body.encode()) <= 4096
    assert set(record.attributes[keys.RECORD_CUT]) == {"body", keys.COMMAND_ARGS}
    assert record.attributes[keys.ARGS_COUNT] == 41


@pytest.mark.parametrize("option, value, message", [
    ("record_max_attributes", 63, "--record-max-attributes must be at least 64"),
    ("record_max_bytes", shape.MIN_MAX_BYTES - 1, f"--record-max-bytes must be at least {shape.MIN_MAX_BYTES}"),
    ("env_attributes", -1, "must not be negative"),
    ("body_max_bytes", -1, "must not be negative"),
])
def test_record_options_out_of_range_are_refused(option: str, value: int, message: str) -> None:
    from otel_exec.config import Config

    with pytest.raises(UsageError, match=message):
        Config(**{option: value}).validate()  # type: ignore[arg-type]


def test_a_packed_entry_longer_than_the_value_length_is_cut_and_named() -> None:
    """A KEY=VALUE entry is one string of otel_exec.env.rest: the value
    length limit applies to it whole, key included."""
    limits = RecordLimits.from_env({"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "40"})
    fits, _ = _record(sample_exec(env=["K" * 37 + "=vv", "A=b"], shared=None), limits)
    assert fits.attributes[keys.ENV_REST] == ["K" * 37 + "=vv", "A=b"]
    assert ENV_MARK not in fits.attributes[keys.RECORD_CUT]  # which names the container id, the cgroup
    record, _ = _record(sample_exec(env=["K" * 38 + "=vv", "A=b"], shared=None), limits)
    assert record.attributes[keys.ENV_REST] == ["K" * 38 + "=v", "A=b"]
    assert record.attributes[keys.RECORD_CUT] == [*fits.attributes[keys.RECORD_CUT], ENV_MARK]
