"""The C extension otel_exec.core._decode_native against its Python reference.

Every input goes through two decoders with caches of their own: the
reference (``Decoder(native=None).decode``: pure Python) and the native one
(``Decoder(native=...).native.decode``: C for an exec whose shared part is
cached and for an exit, the C string helpers when it is not), and both must
give the same event field by field, or the same DecodeError. Each record is
fed twice and again with other per-process fields, so the C path of a
cache hit meets every record the reference decodes. The inputs: the
decoder's property-test strategies and mutations (tests/helpers/record_fuzz.py),
the redaction corpus through the policy stage, records captured from the
kernel, and ring buffers laid out by hand for the C walk of the ring.

The module is imported here whatever OTEL_EXEC_NATIVE says (it only decides
what the agent uses), so this runs in both CI passes; it must be built
(`.venv/bin/python setup.py build_ext --inplace`).
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import fields
from types import ModuleType
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from otel_exec.config import Config
from otel_exec.core import ringbuf
from otel_exec.core.decode import NATIVE_DECODER, DecodeError, Decoder, native_for_layout
from otel_exec.core.ringbuf import RingBuffer
from otel_exec.core.source import CoreSource
from otel_exec.host.identity import HostIdentity
from otel_exec.lineage.traceparent import trace_context_entries
from otel_exec.model import layout
from otel_exec.model.blocks import split_block
from otel_exec.model.events import ExecEvent
from otel_exec.native import native_wanted
from otel_exec.policy.redact import RedactionPolicy
from otel_exec.policy.stage import ExecPolicy
from tests.helpers.record_fuzz import (SIZE_OFFSET, exec_records, exit_records, fix_size, fix_strings,
                                       fuzz_settings, mutate, mutation, u32)
from tests.helpers.hostile import ODD_NAMES
from tests.helpers.records import IDENTITY, block, build_exec, leaf_first
from tests.helpers.redaction_corpus import LOOKALIKES, SECRET_CASES
from tests.helpers.storm import run_storm, storm  # noqa: F401  (a fixture)


def _built() -> ModuleType:
    try:
        from otel_exec.core import _decode_native
    except ImportError as e:
        raise AssertionError(f"otel_exec.core._decode_native is not built ({e}): "
                             ".venv/bin/python setup.py build_ext --inplace") from None
    native = native_for_layout(_decode_native)
    assert native is not None, "the extension was built for another record layout than layout.py's"
    return native


NATIVE = _built()
HEAD = layout.EXEC_SHARED_OFFSET  # the per-process fields


def test_the_switch_decides_what_the_agent_uses() -> None:
    if native_wanted():
        assert ringbuf.NATIVE is NATIVE and NATIVE_DECODER is NATIVE
        assert Decoder(IDENTITY).native is not None
    else:
        assert ringbuf.NATIVE is None and NATIVE_DECODER is None
        assert Decoder(IDENTITY).native is None


# -- one record, two decoders ----------------------------------------------------

def event_fields(ev: Any) -> tuple[Any, ...]:
    return ("event", type(ev).__name__, {f.name: getattr(ev, f.name) for f in fields(ev) if f.name != "shared"})


class Pair:
    """A reference decoder and a native one, optionally each followed by the
    policy stage (default redaction, as the agent runs it)."""

    def __init__(self, policy: bool = False, not_collected: tuple[str, ...] = (),
                 identity: HostIdentity = IDENTITY) -> None:
        self.ref = Decoder(identity, not_collected, native=None)
        self.nat = Decoder(identity, not_collected, native=NATIVE)
        assert self.ref.native is None and self.nat.native is not None
        self.policies = [ExecPolicy(RedactionPolicy(), 1, trace_context_entries) for _ in range(2)] if policy else []

    def check(self, rec: memoryview | bytes) -> tuple[Any, ...]:
        got = []
        for i, decode in enumerate((self.ref.decode, self.nat.native.decode)):
            try:
                ev = decode(rec)
            except DecodeError as e:
                got.append(("error", str(e)))
                continue
            if self.policies and isinstance(ev, ExecEvent):
                self.policies[i].apply(ev)
            got.append(event_fields(ev))
        assert got[1] == got[0]
        return got[0]


def with_head(rec: bytes, head: bytes) -> bytes:
    """rec with other per-process fields (its type and size kept)."""
    if len(rec) < HEAD:
        return rec
    return rec[:8] + head[8:HEAD] + rec[HEAD:]


def check_records(recs: list[bytes], heads: list[bytes], policy: bool = False) -> None:
    pair = Pair(policy)
    for rec in recs:
        pair.check(rec)  # the reference fills the shared caches...
        pair.check(rec)  # ...which the C path reads
        pair.check(memoryview(bytearray(rec) + b"\xff" * 64)[:len(rec)])
        for head in heads:
            pair.check(with_head(rec, head))


@fuzz_settings(150)
@given(exec_records(), st.lists(st.binary(min_size=HEAD, max_size=HEAD), max_size=2))
def test_valid_exec_records(case: tuple[bytes, dict], heads: list[bytes]) -> None:
    rec, want = case
    pair = Pair()
    result = pair.check(rec)
    assert result[0] == "event" and {k: result[2][k] for k in want} == want
    check_records([rec], heads)


@pytest.mark.parametrize("host_part", [2, 95, 96, 97, 127, 128, 129, 130, 200, 255, 256, 257, 300])
@fuzz_settings(10)
@given(exec_records())
def test_exec_ids_whatever_the_length_of_the_host_part(host_part: int, case: tuple[bytes, dict]) -> None:
    """The C decoder hashes an exec id itself: the host part's whole blocks
    once, then one block per exec, or two when the host part's rest and
    the 32 bytes of fields do not fit in one (host parts past 96 bytes).
    Host parts (machine id, NUL, boot id, NUL) around each boundary."""
    identity = HostIdentity(machine_id="m" * (host_part - 2), boot_id="", clk_tck=100,
                            realtime_minus_boottime_ns=IDENTITY.realtime_minus_boottime_ns)
    assert len(identity._id_host_part) == host_part
    pair = Pair(identity=identity)
    pair.check(case[0])
    result = pair.check(case[0])
    if result[0] != "error":
        ev = pair.nat.native.decode(case[0])
        assert ev.exec_id == identity.exec_id(ev.host_pid, ev.start_ticks, ev.dev, ev.inode)


@fuzz_settings(150)
@given(exec_records(), st.lists(mutation, min_size=1, max_size=6), st.binary(min_size=HEAD, max_size=HEAD))
def test_mutated_exec_records(case: tuple[bytes, dict], ops: list[tuple], head: bytes) -> None:
    check_records([mutate(case[0], ops)], [head])


@fuzz_settings(100)
@given(exit_records(u32), st.lists(mutation, max_size=4))
def test_exit_records(rec: bytes, ops: list[tuple]) -> None:
    check_records([mutate(rec, ops) if ops else rec], [])


@fuzz_settings(150)
@given(st.binary(max_size=1024), st.sampled_from([layout.REC_EXEC, layout.REC_EXIT, layout.REC_UNREPORTED_EXEC, 0]))
@example(b"", 0)
def test_random_bodies(body: bytes, rtype: int) -> None:
    rec = bytearray(layout.HEADER.pack(rtype, 0, 0) + body)
    check_records([bytes(body)], [])
    fix_size(rec)
    check_records([bytes(rec)], [])
    fix_strings(rec)
    check_records([bytes(rec)], [])


@pytest.mark.parametrize("pad", range(9))
def test_padding_after_a_record(pad: int) -> None:
    strs = [b"/bin/true\0", b"\0", leaf_first([b"bin", b"true"]), b"", b"", leaf_first([b"tmp"]), b"",
            b"true\0", b"A=1\0"]
    exit_rec = layout.EXIT.pack(layout.REC_EXIT, layout.EXIT.size, 5, 7 * 10**7, 42, 9 | 0x80, b"true")
    for rec in (build_exec(strs), exit_rec):
        pair = Pair()
        for _ in range(2):
            pair.check(memoryview(rec + b"\xfe" * 16)[:len(rec) + pad])


def test_pids_and_starts_that_share_a_place_in_the_decoders_int_memo() -> None:
    """The C decoder keeps recent pids and start ticks as ints, one place per
    value modulo its size (1024): values a multiple of it apart, of execs and
    exits through one decoder, each keep their own value, and equal values
    come out as one int."""
    exec_at = layout.member_offsets(layout.EXEC_MEMBERS)
    exit_at = layout.member_offsets(layout.EXIT_MEMBERS)
    strs = [b"/bin/true\0", b"\0", leaf_first([b"bin", b"true"]), b"", b"", leaf_first([b"tmp"]), b"",
            b"true\0", b"A=1\0"]
    base = build_exec(strs)
    tick_ns = 10**9 // IDENTITY.clk_tck
    pair = Pair()
    for n, k in enumerate((0, 1, 2, 1, 0, 3, 0, 1024, 2048)):
        pid, ppid, start = 5 + 1024 * k, 6 + 1024 * (n % 3), (7 + 1024 * k) * tick_ns
        rec = bytearray(base)
        for name in ("host_pid", "host_tid", "pid", "tid"):
            struct.pack_into("<I", rec, exec_at[name], pid)
        for name in ("host_ppid", "image_ppid", "ppid"):
            struct.pack_into("<I", rec, exec_at[name], ppid)
        struct.pack_into("<Q", rec, exec_at["start_boottime_ns"], start)
        struct.pack_into("<Q", rec, exec_at["parent_start_boottime_ns"], start + 1536 * tick_ns)
        for _ in range(2):  # the second one through the C path
            _, _, got = pair.check(bytes(rec))
        assert (got["host_pid"], got["ppid"], got["start_ticks"], got["parent_start_ticks"]) == \
            (pid, ppid, 7 + 1024 * k, 7 + 1024 * k + 1536)
        ev = pair.nat.native.decode(bytes(rec))
        assert ev.pid is ev.tid is ev.host_pid is ev.host_tid and ev.ppid is ev.host_ppid is ev.image_ppid
        exit_rec = bytearray(layout.EXIT.pack(layout.REC_EXIT, layout.EXIT.size, 5, start, pid, 0, b"true"))
        _, _, got = pair.check(bytes(exit_rec))
        assert (got["pid"], got["start_ticks"]) == (pid, 7 + 1024 * k)
        ex = pair.nat.native.decode(bytes(exit_rec))
        assert ex.pid is ev.host_pid and ex.start_ticks is ev.start_ticks


def test_every_not_collected_field_gets_the_same_placeholder() -> None:
    strs = [b"/bin/true\0", b"\0", leaf_first([b"bin", b"true"]), leaf_first([b"lib", b"ld.so"]),
            leaf_first([b"dev", b"null"]), leaf_first([b"tmp"]), leaf_first([b"system.slice"]), b"true\0", b"A=1\0"]
    rec = build_exec(strs, **{"file.dev": 0x800001, "file.inode": 12, "interpreter.inode": 3, "stdin.mode": 0o20666})
    names = tuple(f.name for f in fields(ExecEvent))
    for name in ("pwd", "dev", "inode", "argv", "env", "cgroup_path", "hostname"):
        assert name in names
        pair = Pair(not_collected=(name,))
        for _ in range(2):
            assert pair.check(rec)[2]["unavailable"] == (name,)


def test_records_of_one_shared_part_share_their_blocks_in_both() -> None:
    strs = [b"/bin/true\0", b"\0", leaf_first([b"bin", b"true"]), b"", b"", leaf_first([b"tmp"]), b"",
            b"true\0x\0", b"A=1\0"]
    rec = build_exec(strs, host_pid=10)
    other = build_exec(strs, host_pid=11)
    for decode in (Decoder(IDENTITY, native=None).decode, Decoder(IDENTITY, native=NATIVE).native.decode):
        decode(build_exec(strs, host_pid=9))  # seen once: kept from the next time on
        a, b = decode(rec), decode(other)
        assert isinstance(a, ExecEvent) and isinstance(b, ExecEvent)
        assert a.shared is b.shared and a.argv is b.argv and a.env is b.env
        assert (a.host_pid, b.host_pid) == (10, 11)


def test_a_shared_part_decoded_again_once_its_cache_was_emptied() -> None:
    strs = [b"/bin/true\0", b"\0", leaf_first([b"bin", b"true"]), b"", b"", leaf_first([b"tmp"]), b"",
            b"true\0", b"A=1\0"]
    rec = build_exec(strs)
    dec = Decoder(IDENTITY, native=NATIVE)
    dec.native.decode(rec)  # seen once: kept from the next time on
    first = dec.native.decode(rec)
    again = dec.native.decode(rec)  # the C path, from the cache
    dec._shared.clear()  # as BoundedCache.remember empties it when full
    after = dec.native.decode(rec)
    kept = dec.native.decode(rec)
    assert isinstance(first, ExecEvent) and isinstance(again, ExecEvent) and isinstance(after, ExecEvent)
    assert again.shared is first.shared
    assert after.shared is not first.shared
    assert list(dec._shared.values()) == [kept.shared]
    assert event_fields(after) == event_fields(first)


# -- the redaction corpus, through the policy stage -----------------------------

def corpus_record(argv: list[str], env: dict[str, str], pid: int) -> bytes:
    name = argv[0].encode() if argv else b"sh"
    strs = [name + b"\0", b"\0", leaf_first([b"usr", b"bin", name]), b"",
            leaf_first([b"dev", b"pts", b"0"]), leaf_first([b"home", b"u"]), leaf_first([b"user.slice"]),
            block([a.encode() for a in argv]), block([f"{k}={v}".encode() for k, v in env.items()])]
    return build_exec(strs, host_pid=pid, pid=pid, argc=len(argv), envc=len(env), **{"stdin.mode": 0o20620})


def test_the_redaction_corpus() -> None:
    cases = [(argv, env) for argv, env, _ in SECRET_CASES] + LOOKALIKES
    recs = [corpus_record(argv, env, 100 + i) for i, (argv, env) in enumerate(cases)]
    heads = [corpus_record(["x"], {}, 7)[:HEAD]]
    check_records(recs, heads, policy=True)


# -- the string helpers -----------------------------------------------------------

interesting = st.sampled_from([b"\0", b"/", b"=", b"\\", b"\n", b"\xff", b"\xc3", b"\xa9", b"\xc3\xa9", b"\xe2\x82",
                               b"\xf0\x9f\x98\x80", b"\xed\xa0\x80", b"a", b".."])
raw = st.one_of(st.binary(max_size=40), st.lists(interesting, max_size=12).map(b"".join))


@fuzz_settings(300)
@given(raw, st.booleans(), st.integers(0, 7), st.sampled_from([0, 0x50495045, 0x534F434B, 0x09041934, 1]), st.integers(0, 2**64 - 1))
def test_string_helpers(data: bytes, truncated: bool, pflags: int, magic: int, inode: int) -> None:
    from otel_exec.core.decode import _cstr, join_path
    assert NATIVE.split_block(data, truncated) == split_block(data, truncated)
    assert NATIVE.cstr(data) == _cstr(data)
    assert NATIVE.join_path(data, pflags) == join_path(data, pflags)
    assert NATIVE.join_path(data, pflags, magic, inode) == join_path(data, pflags, magic, inode)


def test_a_long_path() -> None:
    from otel_exec.core.decode import join_path
    data = leaf_first([b"d" * 255] * 40)  # more than the C helper's stack buffer
    for pf in range(8):
        assert NATIVE.join_path(data, pf) == join_path(data, pf)


# -- the ring walk ------------------------------------------------------------------

RING = 4096


def fake_ring(size: int = RING) -> RingBuffer:
    """A RingBuffer over plain memory, laid out as the kernel's mmap."""
    ring = object.__new__(RingBuffer)
    ring._mask, ring._size = size - 1, size
    ring._cons_pos = memoryview(bytearray(8)).cast("Q")
    ring._prod_pos = memoryview(bytearray(8)).cast("Q")
    ring._data = memoryview(bytearray(size))
    ring._hdr = ring._data.cast("I")
    return ring


def fill(ring: RingBuffer, start: int, records: list[tuple[bytes, int]]) -> None:
    """records (payload, header flags) written from position start."""
    data, mask = ring._data, ring._mask
    pos = start
    for payload, flags in records:
        off = pos & mask
        struct.pack_into("<II", data, off, len(payload) | flags, 0)
        end = off + 8 + len(payload)
        if end <= ring._size:
            data[off + 8:end] = payload
        else:
            cut = ring._size - off - 8
            data[off + 8:] = payload[:cut]
            data[:len(payload) - cut] = payload[cut:]
        pos += (len(payload) + 8 + 7) & ~7
    ring._cons_pos[0] = start
    ring._prod_pos[0] = pos


def ring_copy(ring: RingBuffer, max_bytes: int = 1 << 20) -> Any:
    """The C walk over a fake ring: a RingCopy without its thread."""
    return NATIVE.RingCopy(ring._cons_pos, ring._prod_pos, ring._data, -1, max_bytes)


def walk(ring: RingBuffer, native: bool, limit: int, fail_at: int = -1) -> tuple[Any, ...]:
    """Drains as RingBuffer.drain makes them (max_records 0: none): the
    first with limit, the handler raising once at record fail_at, then two
    of the rest (the failing record is handed over again). The C walk moves the whole ring into its queue
    at once, so the ring's position is compared only at the end."""
    got: list[bytes] = []
    failed: list[int] = []

    def handle(view: memoryview | bytes) -> None:
        if len(got) == fail_at and not failed:
            failed.append(fail_at)
            raise RuntimeError("handler failed")
        got.append(bytes(view))

    copy = ring_copy(ring) if native else None
    counts = []
    for lim in (limit, -1, -1):
        try:
            if lim == 0:
                count = 0
            elif copy is not None:
                count = copy.drain(handle, lim, None, None)
            else:
                count = ring._drain_reference(handle, lim)
        except RuntimeError:
            count = -1
        counts.append(count)
    if copy is not None:
        assert copy.queued_bytes() == 0
        copy.close()
    return counts, got, ring._cons_pos[0]


payloads = st.lists(st.tuples(st.binary(max_size=200),
                              st.sampled_from([0, 0, 0, ringbuf._DISCARD, ringbuf._BUSY])), max_size=12)


@fuzz_settings(200)
@given(st.integers(0, 2**40).map(lambda p: p & ~7), payloads, st.integers(-1, 6), st.integers(-1, 6))
@example(RING - 16, [(b"x" * 40, 0), (b"y" * 3, 0)], -1, -1)  # the first record wraps
def test_the_c_walk_of_the_ring(start: int, records: list[tuple[bytes, int]], limit: int, fail_at: int) -> None:
    results = []
    for native in (False, True):
        ring = fake_ring()
        fill(ring, start, records)
        results.append(walk(ring, native, limit, fail_at))
    assert results[1] == results[0]


def both_walks(records: list[tuple[bytes, int]], size: int, start: int) -> list[tuple[Any, ...]]:
    """records through the C walk and decoder, and through the reference
    walk and decoder (CoreSource.drain's closure): what each handed on."""
    results = []
    for native in (False, True):
        ring = fake_ring(size)
        fill(ring, start, records)
        dec = Decoder(IDENTITY, native=NATIVE if native else None)
        events: list[Any] = []
        errors: list[str] = []
        if native:
            copy = ring_copy(ring)
            count = copy.drain(events.append, -1, dec.native, lambda e: errors.append(str(e)))
            copy.close()
        else:
            def one(rec: memoryview) -> None:
                try:
                    events.append(dec.decode(rec))
                except DecodeError as e:
                    errors.append(str(e))
            count = ring._drain_reference(one, -1)
        results.append((count, [event_fields(e) for e in events], errors, ring._cons_pos[0]))
    assert results[1] == results[0]
    return results


def test_a_record_larger_than_the_copy_s_chunk() -> None:
    """The copy's queue is made of 1 MiB chunks: a larger record gets a
    chunk of its own, after the emptied one, and the records come out in
    order."""
    ring = fake_ring(4 << 20)
    small, big = b"s" * 100, b"b" * (3 << 19)
    fill(ring, 0, [(small, 0)])
    copy = ring_copy(ring, 8 << 20)
    got: list[bytes] = []
    assert copy.drain(lambda v: got.append(bytes(v)), -1, None, None) == 1
    fill(ring, ring._prod_pos[0], [(big, 0), (small, 0)])
    assert copy.drain(lambda v: got.append(bytes(v)), -1, None, None) == 2
    copy.close()
    assert got == [small, big, small]


def test_the_c_walk_through_the_decoder() -> None:
    """Events, and a malformed record, as CoreSource.drain gets them either way."""
    strs = [b"/bin/true\0", b"\0", leaf_first([b"bin", b"true"]), b"", b"", leaf_first([b"tmp"]), b"",
            b"true\0", b"A=1\0"]
    exec_rec = build_exec(strs)
    exit_rec = layout.EXIT.pack(layout.REC_EXIT, layout.EXIT.size, 5, 7 * 10**7, 42, 3 << 8, b"true")
    bad = bytearray(exec_rec)
    struct.pack_into("<I", bad, SIZE_OFFSET, len(bad) + 8)
    records = [(exec_rec, 0), (exit_rec, 0), (bytes(bad), 0), (exec_rec, 0), (b"", ringbuf._DISCARD), (exit_rec, 0)]
    results = both_walks(records, RING, RING - 64)  # the first record wraps
    assert results[0][0] == 5 and len(results[0][2]) == 1


# -- records from the kernel ---------------------------------------------------------

# Execs the file argv[1] after unlinking it (through /proc/self/fd).
EXEC_DELETED = ("import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.set_inheritable(fd, True); "
                "os.unlink(sys.argv[1]); os.execv(f'/proc/self/fd/{fd}', ['gone'])")


@pytest.mark.kernel
def test_records_captured_from_the_kernel(tmp_path: Any) -> None:
    """Execs of many shapes (a script and its interpreter, stdin from a pipe
    and from a file, a deleted binary, long and invalid-UTF-8 arguments, many
    variables, the hostile corpus's odd file names), captured raw from the
    ring, through both decoders."""
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    gone = tmp_path / "gone"
    odd_dir = os.fsencode(tmp_path) + b"/dir-\xff\n\"x\""
    os.mkdir(odd_dir)
    env = {"A": "1", "TRACEPARENT": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           **{f"V{i}": "x" * i for i in range(60)}}
    source = CoreSource(Config(), HostIdentity.current())
    source.attach()
    recs: list[bytes] = []

    def run(argv: list[Any], **kw: Any) -> None:
        # Through a shell that forks: the kernel side leaves out the execs
        # of the agent's own children (here this process's).
        subprocess.run(["/bin/sh", "-c", '"$@"; exit $?', "sh", *argv], check=True, **kw)
        # At once: other execs on the host fill the ring too.
        source.ring.drain(lambda v: recs.append(bytes(v)))

    try:
        for _ in range(3):
            run(["/bin/true", "a", "b"], env=env)
            run([str(script), "arg"], env=env)
            run([b"/bin/true", b"x" * 5000, b"\xff\xfe", b"--password=hunter2"],
                env={b"PASSWORD": b"hunter2", b"B": b"\xe9"}, stdin=subprocess.PIPE)
            with tempfile.TemporaryFile() as f:
                run(["/bin/true"], stdin=f)
            shutil.copy("/bin/true", gone)
            run([sys.executable, "-c", EXEC_DELETED, str(gone)])
            for name in ODD_NAMES.values():  # the hostile corpus's file names, in an odd directory
                odd = odd_dir + b"/" + name
                shutil.copy("/bin/true", odd)
                run([odd, name, b"-\xff"], cwd=odd_dir)
    finally:
        source.close()
    kinds = {struct.unpack_from("<I", r)[0] for r in recs}
    assert layout.REC_EXEC in kinds and layout.REC_EXIT in kinds and len(recs) >= 20
    assert all(any(name in r for r in recs) for name in ODD_NAMES.values())
    pair = Pair(policy=True)
    for rec in recs:
        pair.check(rec)
    for rec in recs:
        pair.check(rec)  # now the shared parts are cached: the C path


@pytest.mark.kernel
def test_records_captured_from_a_storm(storm: str) -> None:  # noqa: F811
    """A storm's records (and whatever else ran), captured raw from the ring,
    through both decoders and through both walks of a ring holding them."""
    source = CoreSource(Config(), HostIdentity.current())
    source.attach()
    recs: list[bytes] = []
    try:
        proc = run_storm(storm, "decode-native", 2000, 0)
        while proc.poll() is None:
            source.ring.wait(0.05)
            source.ring.drain(lambda v: recs.append(bytes(v)))
        source.ring.drain(lambda v: recs.append(bytes(v)))
    finally:
        source.close()
    assert proc.returncode == 0
    storm_execs = [r for r in recs if struct.unpack_from("<I", r)[0] == layout.REC_EXEC and b"decode-native" in r]
    assert len(storm_execs) >= 2000
    pair = Pair(policy=True)
    for rec in recs + recs:
        pair.check(rec)
    space = sum((len(r) + 8 + 7) & ~7 for r in recs)
    size = 1 << space.bit_length()
    both_walks([(r, 0) for r in recs], size, size - 8)  # the first record wraps
