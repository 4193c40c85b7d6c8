"""protowire, the hand-written protobuf writer and reader, case by case: every
writer's bytes against the official protobuf classes (opentelemetry-proto and
google.protobuf's well-known types), and the reader (`fields`, `signed64`)
on what those classes serialize and on crafted and malformed input. Written
to kill the mutants of otel_exec/export/otlp/protowire.py (docs/testing.md)."""
from __future__ import annotations

import random
import struct

import pytest
from google.protobuf.wrappers_pb2 import BytesValue, DoubleValue, Int64Value, UInt32Value, UInt64Value
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanPb

from otel_exec.export.otlp import protowire as w

# Every varint length (1 to 10 bytes): both ends of each and one past them.
_LENGTH_EDGES = sorted({v for k in range(1, 10) for v in ((1 << 7 * k) - 2, (1 << 7 * k) - 1, 1 << 7 * k,
                                                          (1 << 7 * k) + 1)} | {0, 1, 2, (1 << 64) - 1})


def _values() -> list[int]:
    """The length edges and random values of every length."""
    rng = random.Random(18)
    return _LENGTH_EDGES + [rng.randrange(1 << 7 * (k - 1), 1 << min(7 * k, 64)) for k in range(1, 11)
                            for _ in range(40)]


def _uint64(n: int) -> bytes:
    """The varint protobuf writes for `n` (an unsigned field, tag byte off)."""
    return UInt64Value(value=n).SerializeToString()[1:] if n else b"\x00"


# --- the writer ----------------------------------------------------------------

def test_varint_of_every_length_is_protobuf_s() -> None:
    for n in _values():
        assert w.varint(n) == _uint64(n), n
        assert len(w.varint(n)) == max(1, (n.bit_length() + 6) // 7), n


def test_negative_varints_are_the_ten_byte_two_s_complement() -> None:
    rng = random.Random(64)
    for n in [-1, -2, -127, -128, -129, -(1 << 14), -(1 << 21), -(1 << 21) - 1, -(1 << 62), -(1 << 63)] + \
            [-rng.randrange(1, 1 << 63) for _ in range(100)]:
        assert w.varint(n) == Int64Value(value=n).SerializeToString()[1:], n
        assert w.varint(n) == w.varint(n + (1 << 64)) and len(w.varint(n)) == 10, n


def test_tags_of_small_and_large_field_numbers() -> None:
    smallest_value = {w.VARINT: b"\x05", w.I64: bytes(8), w.LEN: b"\x00", w.I32: bytes(4)}
    for field in (1, 2, 15, 16, 17, 2047, 2048, 262_143, 262_144, (1 << 29) - 1):
        for wire_type, value in smallest_value.items():
            assert w.tag(field, wire_type) == _uint64(field << 3 | wire_type), (field, wire_type)
            ((number, read_type, _),) = w.fields(w.tag(field, wire_type) + value)
            assert (number, read_type) == (field, wire_type)
    # The wire types are protobuf's numbers.
    assert (w.VARINT, w.I64, w.LEN, w.I32) == (0, 1, 2, 5)


def test_field_writers_match_protobuf_messages() -> None:
    for n in _values():
        if n:  # protobuf leaves a zero out
            assert w.varint_field(1, n) == UInt64Value(value=n).SerializeToString(), n
            assert w.fixed64_field(7, n) == SpanPb(start_time_unix_nano=n).SerializeToString(), n
    for n in (1, 2, 0xFF, 0x100, 0x80000301, 0xFFFFFFFF):
        assert w.fixed32_field(16, n) == SpanPb(flags=n).SerializeToString(), n
        assert w.varint_field(1, n) == UInt32Value(value=n).SerializeToString(), n
    # A zero is written (the writer does not drop defaults) and read back.
    assert w.varint_field(1, 0) == b"\x08\x00" and UInt64Value.FromString(w.varint_field(1, 0)).value == 0
    assert w.fixed64_field(1, 0) == b"\x09" + bytes(8)
    assert w.fixed32_field(2, 0) == b"\x15" + bytes(4)
    for size in (1, 127, 128, 300, 16_383, 16_384, 70_000):
        payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        assert w.len_field(1, payload) == BytesValue(value=payload).SerializeToString(), size
    assert w.len_field(1, b"") == b"\x0a\x00"


def test_len_field_frames_any_payload_for_protobuf() -> None:
    for size in (0, 1, 127, 128, 300, 16_383, 16_384, 2_097_152):
        body = w.len_field(7, b"\xfe" * size)  # AnyValue.bytes_value
        record = LogRecord.FromString(w.len_field(5, body))
        assert record.body.bytes_value == b"\xfe" * size, size


def test_any_value_strings_match_protobuf() -> None:
    for s in ("", "a", "ü", "\u20ac" * 50, "x" * 127, "x" * 128, "y" * 16_384, "\U0001f600", "a\x00b"):
        assert w.any_string(s) == AnyValue(string_value=s).SerializeToString() or s == "", s
        assert w.any_value(s) == w.any_string(s)
        assert AnyValue.FromString(w.any_value(s)).string_value == s
    assert w.any_string("") == b"\x0a\x00"


def test_lone_surrogates_become_question_marks_not_errors() -> None:
    for s, kept in (("\udcff", "?"), ("a\udc80b\udcffc", "a?b?c"), ("\ud800" * 3, "???"), ("é\udcc3", "é?")):
        assert w.any_string(s) == AnyValue(string_value=kept).SerializeToString(), s
        assert w.any_value(s) == w.any_string(s)


def test_any_value_scalars_match_protobuf() -> None:
    assert w.any_value(True) == AnyValue(bool_value=True).SerializeToString() == b"\x10\x01"
    assert w.any_value(False) == b"\x10\x00"
    assert AnyValue.FromString(w.any_value(False)).WhichOneof("value") == "bool_value"
    for n in _values():
        if n < 1 << 63:
            assert w.any_value(n) == AnyValue(int_value=n).SerializeToString() or n == 0, n
            assert w.any_value(-n) == AnyValue(int_value=-n).SerializeToString() or n == 0, n
    assert w.any_value(0) == b"\x18\x00"
    for x in (0.0, -0.0, 1.0, -2.5, 1e300, 5e-324, float("inf"), float("-inf")):
        assert w.any_value(x) == AnyValue(double_value=x).SerializeToString() or x == 0.0, x
        assert w.any_value(x) == b"\x21" + struct.pack("<d", x)
        assert AnyValue.FromString(w.any_value(x)).WhichOneof("value") == "double_value"


def test_any_value_arrays_match_protobuf() -> None:
    for items in ([], ["a"], ["a", "", "ü", "\udcff"], ["x" * 200] * 3, ("t", "u")):
        want = AnyValue(array_value=ArrayValue(values=[
            AnyValue(string_value=s.encode("utf-8", "replace").decode()) for s in items]))
        assert w.any_value(items) == want.SerializeToString(), items
        assert AnyValue.FromString(w.any_value(items)).WhichOneof("value") == "array_value"
    assert w.any_value([]) == b"\x2a\x00"


def test_key_values_match_protobuf() -> None:
    for key in ("k", "process.pid", "ü.key", "k" * 127, "k" * 128, "k" * 20_000):
        head = w.key_head(key)
        for value in ("v", "", 7, -1, True, 2.5, ["a", "b"], "w" * 300):
            encoded = w.any_value(value)
            want = KeyValue(key=key, value=AnyValue.FromString(encoded)).SerializeToString()
            assert w.key_value(head, encoded) == want, (key, value)
            assert head == want[:len(head)]
    assert w.key_head("") == b"\x0a\x00\x12"
    assert w.key_value(w.key_head("k"), b"") == b"\x0a\x01k\x12\x00"


def test_repeated_fields_match_protobuf() -> None:
    records = [LogRecord(severity_text="x" * n).SerializeToString() for n in (0, 1, 126, 127, 128, 20_000)]
    assert w.repeated(3, records) == b"".join(w.len_field(3, r) for r in records)
    request = ExportLogsServiceRequest.FromString(w.repeated(1, [w.repeated(2, [w.repeated(2, records)])]))
    got = request.resource_logs[0].scope_logs[0].log_records
    assert [r.SerializeToString() for r in got] == records
    assert w.repeated(1, []) == b"" and w.repeated(1, iter([b""])) == b"\x0a\x00"
    assert w.repeated(16, [b"ab"]) == b"\x82\x01\x02ab"


# --- the reader ----------------------------------------------------------------

def test_fields_reads_what_protobuf_writes() -> None:
    span = SpanPb(trace_id=b"\x01" * 16, name="n" * 200, kind=3, start_time_unix_nano=(1 << 64) - 1,
                  end_time_unix_nano=5, dropped_attributes_count=300, flags=0x301)
    assert list(w.fields(span.SerializeToString())) == [
        (1, w.LEN, b"\x01" * 16), (5, w.LEN, b"n" * 200), (6, w.VARINT, 3),
        (7, w.I64, b"\xff" * 8), (8, w.I64, struct.pack("<Q", 5)), (10, w.VARINT, 300),
        (16, w.I32, struct.pack("<I", 0x301))]
    assert list(w.fields(DoubleValue(value=-2.5).SerializeToString())) == [(1, w.I64, struct.pack("<d", -2.5))]
    assert list(w.fields(b"")) == []


def test_fields_reads_varints_of_every_length() -> None:
    for n in _values():
        assert list(w.fields(UInt64Value(value=n).SerializeToString())) == ([(1, w.VARINT, n)] if n else []), n
        assert list(w.fields(w.varint_field(3, n) + w.varint_field(1, 1))) == [(3, w.VARINT, n),
                                                                              (1, w.VARINT, 1)], n
    # A varint whose last byte is 0x80 is not over: it reads the next byte.
    assert list(w.fields(b"\x08\x80\x01")) == [(1, w.VARINT, 128)]
    assert list(w.fields(b"\x08\x80\x80\x00")) == [(1, w.VARINT, 0)]  # padded: still valid protobuf
    # The longest varint: ten bytes, the last at shift 63.
    assert list(w.fields(b"\x08" + b"\xff" * 9 + b"\x01")) == [(1, w.VARINT, (1 << 64) - 1)]


def test_signed64_reads_int64_fields() -> None:
    for n in (0, 1, 2, (1 << 62), (1 << 63) - 1, -(1 << 63), -(1 << 63) + 1, -2, -1, -300):
        ((_, _, raw),) = w.fields(Int64Value(value=n).SerializeToString() or b"\x08\x00")
        assert w.signed64(raw) == n, n  # type: ignore[arg-type]
    assert w.signed64(1 << 63) == -(1 << 63)
    assert w.signed64((1 << 63) - 1) == (1 << 63) - 1
    assert w.signed64((1 << 64) - 1) == -1


def test_fields_nested_round_trip() -> None:
    inner = w.varint_field(1, 7) + w.len_field(2, b"msg")
    outer = w.len_field(1, inner) + w.fixed32_field(2, 9) + w.len_field(1, b"")
    got = list(w.fields(outer))
    assert got == [(1, w.LEN, inner), (2, w.I32, struct.pack("<I", 9)), (1, w.LEN, b"")]
    assert list(w.fields(got[0][2])) == [(1, w.VARINT, 7), (2, w.LEN, b"msg")]  # type: ignore[arg-type]


def test_a_field_ending_exactly_at_the_end_is_read() -> None:
    for field in (w.len_field(1, b"abc"), w.fixed64_field(1, 1), w.fixed32_field(1, 1), w.len_field(1, b"")):
        assert len(list(w.fields(field))) == 1
        with pytest.raises(ValueError, match=r"^field runs past the end of the message$"):
            list(w.fields(field[:-1] if field[-1:] != b"\x00" else b"\x0a\x01"))


@pytest.mark.parametrize("data", [
    b"\x0a\x04abc",            # LEN longer than what follows
    b"\x09" + bytes(7),       # fixed64 one byte short
    b"\x0d" + bytes(3),       # fixed32 one byte short
    b"\x0a\x05ab" + w.varint_field(1, 1),  # the length reaches into the next field, past the end
    w.varint_field(1, 1) + b"\x12\x7f",
])
def test_fields_refuse_a_field_past_the_end(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"^field runs past the end of the message$"):
        list(w.fields(data))


@pytest.mark.parametrize("data", [
    b"\x80",                  # a key cut in its varint
    b"\x08",                  # a varint field without its value
    b"\x08\xff",              # its value cut
    b"\x08\xff\xff",
    b"\x0a",                  # a LEN field without its length
    b"\x0a\x80",              # its length cut
    w.varint_field(1, 5) + b"\x10\x80",
    b"\x08" + b"\xff" * 10 + b"\x01",   # eleven bytes: overlong
    b"\x08" + b"\x80" * 10 + b"\x00",
    b"\x80" * 10 + b"\x01\x00",         # an overlong key
])
def test_fields_refuse_a_cut_or_overlong_varint(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"^truncated or overlong varint$"):
        list(w.fields(data))


@pytest.mark.parametrize("wire_type", [3, 4, 6, 7])
def test_fields_refuse_groups_and_unknown_wire_types(wire_type: int) -> None:
    ok = w.varint_field(1, 1)
    with pytest.raises(ValueError, match=rf"^unsupported wire type {wire_type}$"):
        list(w.fields(ok + w.tag(2, wire_type) + bytes(8)))
    # Fields before the bad one were yielded first.
    got = []
    with pytest.raises(ValueError):
        for f in w.fields(ok + w.tag(2, wire_type)):
            got.append(f)
    assert got == [(1, w.VARINT, 1)]


def test_fields_yield_one_by_one_before_a_bad_field() -> None:
    good = w.len_field(1, b"a") + w.fixed64_field(2, 3)
    got = []
    with pytest.raises(ValueError):
        for f in w.fields(good + b"\x1a\x09"):
            got.append(f)
    assert got == [(1, w.LEN, b"a"), (2, w.I64, struct.pack("<Q", 3))]


def test_fields_of_random_messages_round_trip() -> None:
    """Messages built field by field from random parts read back as built,
    and every proper prefix of one either reads as its leading fields or is
    refused: never misread."""
    rng = random.Random(93)
    for _ in range(200):
        built = []
        for _ in range(rng.randrange(1, 6)):
            number = rng.choice((1, 2, 15, 16, 2047, 2048, (1 << 29) - 1))
            kind = rng.choice((w.VARINT, w.I64, w.LEN, w.I32))
            if kind == w.VARINT:
                value: int | bytes = rng.choice(_LENGTH_EDGES)
                built.append((number, kind, value, w.varint_field(number, value)))
            elif kind == w.I64:
                value = struct.pack("<Q", rng.randrange(1 << 64))
                built.append((number, kind, value, w.fixed64_field(number, struct.unpack("<Q", value)[0])))
            elif kind == w.I32:
                value = struct.pack("<I", rng.randrange(1 << 32))
                built.append((number, kind, value, w.fixed32_field(number, struct.unpack("<I", value)[0])))
            else:
                value = rng.randbytes(rng.choice((0, 1, 127, 128, 300)))
                built.append((number, kind, value, w.len_field(number, value)))
        data = b"".join(b[3] for b in built)
        assert list(w.fields(data)) == [b[:3] for b in built]
        cut = rng.randrange(len(data))
        whole = [b[:3] for b in built]
        ends = [sum(len(b[3]) for b in built[:i]) for i in range(len(built) + 1)]
        if cut in ends:
            assert list(w.fields(data[:cut])) == whole[:ends.index(cut)]
        else:
            with pytest.raises(ValueError):
                list(w.fields(data[:cut]))
