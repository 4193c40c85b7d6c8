"""The few protobuf wire-format encoders OTLP needs, written by hand.

Building opentelemetry-proto message objects costs tens of microseconds per
record in Python; concatenating pre-encoded bytes costs a few. Field numbers
come from opentelemetry/proto (common, logs, trace); tests/export/test_otlp_encoding.py
decodes the output with the official generated classes.
"""
from __future__ import annotations

import struct
from typing import Iterable, Iterator, Sequence

_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_FIXED32 = struct.Struct("<I")

# Wire types
VARINT, I64, LEN, I32 = 0, 1, 2, 5

# Single-byte varints, the common case for lengths and small ints.
_SMALL = [bytes([i]) for i in range(128)]


def varint(n: int) -> bytes:
    # Unrolled for the sizes of lengths and pids, which dominate.
    if 0 <= n < 0x80:
        return _SMALL[n]
    if 0 < n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if 0 < n < 0x200000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 0:
        n += 1 << 64  # int64 is encoded as its two's complement
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def len_field(field: int, payload: bytes) -> bytes:
    return tag(field, LEN) + varint(len(payload)) + payload


def fixed64_field(field: int, value: int) -> bytes:
    return tag(field, I64) + _FIXED64.pack(value)


def fixed32_field(field: int, value: int) -> bytes:
    return tag(field, I32) + _FIXED32.pack(value)


def varint_field(field: int, value: int) -> bytes:
    return tag(field, VARINT) + varint(value)


# --- opentelemetry.proto.common.v1 ------------------------------------------
# AnyValue: string_value 1, bool_value 2, int_value 3, double_value 4,
#           array_value 5, kvlist_value 6, bytes_value 7
# ArrayValue: values 1.  KeyValue: key 1, value 2.

Value = str | bool | int | float | Sequence[str]

_TRUE = varint_field(2, 1)
_FALSE = varint_field(2, 0)
_ANY_STRING = tag(1, LEN)
_ANY_INT = tag(3, VARINT)
_ANY_DOUBLE = tag(4, I64)


def any_string(s: str) -> bytes:
    b = s.encode("utf-8", "replace")  # a lone surrogate would make the whole request invalid
    return _ANY_STRING + varint(len(b)) + b


def any_value(v: Value) -> bytes:
    if isinstance(v, str):
        return any_string(v)
    if isinstance(v, bool):
        return _TRUE if v else _FALSE
    if isinstance(v, int):
        return _ANY_INT + varint(v)
    if isinstance(v, float):
        return _ANY_DOUBLE + _DOUBLE.pack(v)
    array = b"".join(len_field(1, any_value(e)) for e in v)
    return len_field(5, array)


def key_head(key: str) -> bytes:
    """The constant start of a KeyValue for `key`: its key field and the tag
    of its value field. Encoded once per attribute name."""
    return len_field(1, key.encode()) + tag(2, LEN)


def key_value(head: bytes, value: bytes) -> bytes:
    """A KeyValue message from key_head() and an encoded AnyValue."""
    return head + varint(len(value)) + value


def repeated(field: int, messages: Iterable[bytes]) -> bytes:
    """Each encoded message as one occurrence of a repeated field."""
    t = tag(field, LEN)
    return b"".join(t + varint(len(m)) + m for m in messages)


# --- decoding (collector answers, and splitting a request) -------------------

def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of a message: an int
    for a varint, the bytes of a LEN, I64 or I32 field. ValueError when the
    message is malformed."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        wire_type = key & 7
        value: int | bytes
        if wire_type == VARINT:
            value, pos = _read_varint(data, pos)
        else:
            if wire_type == LEN:
                size, pos = _read_varint(data, pos)
            elif wire_type in (I64, I32):
                size = 8 if wire_type == I64 else 4
            else:
                raise ValueError(f"unsupported wire type {wire_type}")
            if pos + size > end:
                raise ValueError("field runs past the end of the message")
            value, pos = data[pos:pos + size], pos + size
        yield key >> 3, wire_type, value


def signed64(n: int) -> int:
    """An int64 field's value from its varint (two's complement)."""
    return n - (1 << 64) if n >= 1 << 63 else n
