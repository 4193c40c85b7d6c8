"""Property tests of the record decoder against random and mutated records.

Records are built by tests/helpers/record_fuzz.py from otel_exec/model/layout.py
(the mirror of bpf/otel_exec.h, itself checked against the BTF by
tests/model/test_layout.py), then damaged: bytes flipped, size and string-length fields set to absurd
values, records cut short or extended. Whatever it is fed,
``Decoder.decode`` either returns an event or raises ``DecodeError``; and
it reads nothing past the record: the result is the same whether the record
is passed as exactly-sized ``bytes`` or as a memoryview slice of a larger
buffer full of sentinel bytes, and no sentinel shows up in any decoded
string. Bytes the ring buffer adds as padding after a record (fewer than 8,
which the decoder accepts) must not leak into the event either.

Deterministic (``derandomize=True``) and a few seconds long.
"""
from __future__ import annotations

import struct
from dataclasses import fields as dc_fields
from typing import Any

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from otel_exec.model import layout
from otel_exec.core.decode import DecodeError, Decoder
from otel_exec.lineage.traceparent import trace_context_entries
from otel_exec.model.events import Event, ExecEvent, ExitEvent, UnreportedExecEvent
from otel_exec.policy.redact import RedactionPolicy
from otel_exec.policy.stage import ExecPolicy
from tests.helpers.records import IDENTITY, build_exec, leaf_first
from tests.helpers.record_fuzz import (SIZE_OFFSET, STR_LEN_OFFSETS, build_exit, esc, exec_records, exit_records,
                                       fix_size, fix_strings, fuzz_settings, mutate, mutation, u32, u64)


# -- the contract -------------------------------------------------------------

class RedactingDecoder(Decoder):
    """decode, then the policy stage with the agent's default redaction, as
    otel-exec run puts them one after the other (agent.Agent.handle)."""

    def __init__(self) -> None:
        super().__init__(IDENTITY)
        self.policy = ExecPolicy(RedactionPolicy(), 1, trace_context_entries)

    def decode(self, rec: memoryview | bytes) -> Event:
        ev = super().decode(rec)
        if isinstance(ev, ExecEvent):
            self.policy.apply(ev)
        return ev


def decoders() -> list[Decoder]:
    """Fresh decoders (no cache shared between the inputs compared): plain,
    and with the agent's default redaction, as otel-exec run builds it."""
    return [Decoder(IDENTITY), RedactingDecoder()]


def outcome(dec: Decoder, rec: memoryview | bytes) -> tuple[str, Any]:
    """("event", its fields) or ("error", DecodeError); anything else fails
    the test."""
    try:
        ev = dec.decode(rec)
    except DecodeError:
        return ("error", None)
    except Exception as e:
        raise AssertionError(f"decode raised {type(e).__name__}: {e!r} (not a DecodeError)") from e
    assert isinstance(ev, (ExecEvent, ExitEvent, UnreportedExecEvent))
    return ("event", {f.name: getattr(ev, f.name) for f in dc_fields(ev) if f.name != "shared"})


def strings_of(fields: dict) -> list[str]:
    out: list[str] = []
    for v in fields.values():
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, list):
            out.extend(x for x in v if isinstance(x, str))
    return out


def sentinel_for(rec: bytes) -> int | None:
    """A byte that is never valid in UTF-8 (so the decoder always shows it
    as "\\xNN") and that the record does not contain; None if there is none."""
    for b in range(0xF8, 0x100):
        if b not in rec:
            return b
    return None


def check_contract(rec: bytes) -> None:
    for pos in range(2):
        # 1. Exactly-sized bytes.
        exact = outcome(decoders()[pos], bytes(rec))
        event(f"outcome: {exact[0]}")
        # 2. A memoryview slice of a larger buffer, the rest sentinel bytes.
        sentinel = sentinel_for(rec)
        fill = sentinel if sentinel is not None else 0xFF
        big = bytearray(rec) + bytes([fill]) * 4096
        sliced = outcome(decoders()[pos], memoryview(big)[:len(rec)])
        assert sliced == exact
        # 3. The ring's padding (< 8 bytes) after a record whose header size
        # is its real size: accepted, and not part of the event.
        if len(rec) >= layout.HEADER.size and struct.unpack_from("<I", rec, SIZE_OFFSET)[0] == len(rec):
            for pad in (1, 7):
                padded = outcome(decoders()[pos], memoryview(big)[:len(rec) + pad])
                assert padded == exact
        if exact[0] == "event" and sentinel is not None:
            mark = f"\\x{sentinel:02x}"
            for s in strings_of(exact[1]):
                assert mark not in s


@fuzz_settings(100)
@given(exec_records())
def test_valid_exec_records_decode_to_what_they_hold(case: tuple[bytes, dict]) -> None:
    rec, want = case
    ev = Decoder(IDENTITY).decode(memoryview(rec))
    assert isinstance(ev, ExecEvent)
    got = {k: getattr(ev, k) for k in want}
    assert got == want
    check_contract(rec)


@fuzz_settings(60)
@given(exit_records())
def test_valid_exit_records_decode(rec: bytes) -> None:
    ev = Decoder(IDENTITY).decode(rec)
    assert isinstance(ev, ExitEvent)
    _, _, boot_ns, start, pid, _status, comm = layout.EXIT.unpack(rec)
    assert (ev.pid, ev.timestamp, ev.start_ticks) == \
        (pid, boot_ns + IDENTITY.realtime_minus_boottime_ns, start // 10**7)
    assert ev.comm == esc(comm.split(b"\0", 1)[0])
    check_contract(rec)


@fuzz_settings(60)
@given(u64, u64, u32)
def test_valid_unreported_exec_records_decode(boot_ns: int, start: int, pid: int) -> None:
    rec = layout.UNREPORTED_EXEC.pack(layout.REC_UNREPORTED_EXEC, layout.UNREPORTED_EXEC.size, boot_ns, start, pid, 0)
    ev = Decoder(IDENTITY).decode(rec)
    assert isinstance(ev, UnreportedExecEvent)
    assert (ev.pid, ev.timestamp, ev.start_ticks) == \
        (pid, boot_ns + IDENTITY.realtime_minus_boottime_ns, start // 10**7)
    check_contract(rec)
    with pytest.raises(DecodeError):
        Decoder(IDENTITY).decode(rec[:-1])


@fuzz_settings(150)
@given(exec_records(), st.lists(mutation, min_size=1, max_size=6))
def test_mutated_exec_records_decode_or_raise_decode_error(case: tuple[bytes, dict], ops: list[tuple]) -> None:
    check_contract(mutate(case[0], ops))


@fuzz_settings(100)
@given(exit_records(u32), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_exit_records_decode_or_raise_decode_error(rec: bytes, ops: list[tuple]) -> None:
    check_contract(mutate(rec, ops))


@fuzz_settings(150)
@given(st.binary(max_size=1024))
@example(b"")
@example(b"\x01\x00\x00\x00" + struct.pack("<I", 16) + bytes(8))
@example(b"\x03\x00\x00\x00" + struct.pack("<I", 16) + bytes(8))
def test_random_bytes_decode_or_raise_decode_error(raw: bytes) -> None:
    check_contract(raw)


@fuzz_settings(120)
@given(st.binary(min_size=layout.EXEC.size - layout.HEADER.size, max_size=1024),
       st.sampled_from([layout.REC_EXEC, layout.REC_EXIT, layout.REC_UNREPORTED_EXEC]))
def test_random_bodies_with_a_consistent_header(body: bytes, rtype: int) -> None:
    """Random bytes behind a header whose size is right, so the decoder
    gets past the first check; half the time str_len[] adds up too."""
    rec = bytearray(layout.HEADER.pack(rtype, 0, 0) + body)
    fix_size(rec)
    check_contract(bytes(rec))
    if rtype == layout.REC_EXEC:
        fix_strings(rec)
        check_contract(bytes(rec))


@pytest.mark.parametrize("size", [layout.EXEC.size + 1, 2**31, 2**32 - 1])
def test_absurd_string_lengths_are_decode_errors(size: int) -> None:
    strs = [b"/bin/true\0", b"/bin/true\0", leaf_first([b"bin", b"true"]), b"", b"", b"", b"", b"true\0", b""]
    rec = bytearray(build_exec(strs))
    struct.pack_into("<I", rec, STR_LEN_OFFSETS[layout.STR_ARGV], size)
    with pytest.raises(DecodeError):
        Decoder(IDENTITY).decode(memoryview(rec))
    # Lengths that wrap around 2**32 when summed must not fool the check.
    struct.pack_into("<I", rec, STR_LEN_OFFSETS[layout.STR_ARGV], 2**32 - 1)
    struct.pack_into("<I", rec, STR_LEN_OFFSETS[layout.STR_ENV], 6)
    with pytest.raises(DecodeError):
        Decoder(IDENTITY).decode(memoryview(rec))


def test_padding_up_to_seven_bytes_is_not_part_of_the_record() -> None:
    strs = [b"/bin/true\0", b"/bin/true\0", leaf_first([b"bin", b"true"]), b"", b"", leaf_first([b"tmp"]), b"",
            b"true\0a\0", b"A=1\0"]
    rec = build_exec(strs, flags=layout.F_ARGV_TRUNCATED)
    for pad in range(8):
        buf = memoryview(rec + b"\xff" * 64)[:len(rec) + pad]
        ev = Decoder(IDENTITY).decode(buf)
        assert isinstance(ev, ExecEvent)
        assert ev.argv == ["true", "a"] and ev.env == ["A=1"]
    with pytest.raises(DecodeError):
        Decoder(IDENTITY).decode(memoryview(rec + bytes(8)))


def test_exit_status_with_bit_31_set() -> None:
    rec = build_exit(pid=1234, exit_code=0x8000_0000, comm=b"x")
    try:
        ev = Decoder(IDENTITY).decode(memoryview(rec))
    except DecodeError:
        return
    assert isinstance(ev, ExitEvent)


@pytest.mark.parametrize("status,exit_code,signo,core", [
    (0, 0, None, False),
    (3 << 8, 3, None, False),
    (255 << 8, 255, None, False),
    (0x80, 0, None, False),  # the core bit means nothing without a signal
    (9, None, 9, False),  # SIGKILL
    (11 | 0x80, None, 11, True),  # SIGSEGV, core dumped
    (0x7E, None, 0x7E, False),  # the highest signal number
    (0x7F, 0, None, False),  # 0x7F: stopped, not an end
])
def test_exit_records_decode_the_wait_status(status: int, exit_code: int | None, signo: int | None,
                                             core: bool) -> None:
    rec = build_exit(**{"pid": 1234, "exit_code": status, "comm": b"sleep\0junk",
                        "start_boottime_ns": 3 * 10**7 + 5, "hdr.boot_ns": 42})
    ev = Decoder(IDENTITY).decode(memoryview(rec))
    assert isinstance(ev, ExitEvent)
    assert (ev.exit_code, ev.signal, ev.core_dumped) == (exit_code, signo, core)
    assert (ev.pid, ev.comm, ev.start_ticks, ev.timestamp) == (1234, "sleep", 3,
                                                               42 + IDENTITY.realtime_minus_boottime_ns)


def test_a_short_exit_record_says_how_short() -> None:
    size = layout.EXIT.size
    rec = build_exit(**{"pid": 1, "hdr.size": size - 1})[:-1]  # its header agrees it is short
    with pytest.raises(DecodeError, match=rf"^record of {size - 1} bytes, its type needs {size}$"):
        Decoder(IDENTITY).decode(memoryview(rec))
