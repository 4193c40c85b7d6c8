"""The C extension otel_exec.export._spool_native against its Python
reference (spool._write_framed): the same records written by both must give
the same bytes, completed after short writes, and the same OSError when the
file takes no more. The module is imported here whatever OTEL_EXEC_NATIVE
says (it only decides what the spool uses), so this runs in both CI passes;
it must be built (`.venv/bin/python setup.py build_ext --inplace`).
"""
from __future__ import annotations

import errno
import os
import resource
import signal
import socket
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from otel_exec.export import spool as spool_mod
from otel_exec.export.otlp import protowire as w
from otel_exec.export.spool import SignalSpool, frame
from otel_exec.native import native_wanted
from tests.helpers.record_fuzz import fuzz_settings


def _built() -> ModuleType:
    try:
        from otel_exec.export import _spool_native
    except ImportError as e:
        raise AssertionError(f"otel_exec.export._spool_native is not built ({e}): "
                             ".venv/bin/python setup.py build_ext --inplace") from None
    return _spool_native


NATIVE = _built()
WRITERS: dict[str, Callable[[int, list[bytes]], None]] = {"reference": spool_mod._write_framed,
                                                          "native": NATIVE.write_framed}


SPLITTERS: dict[str, Callable[[memoryview, int], list[bytes | memoryview]]] = {
    "reference": spool_mod._split_framed, "native": NATIVE.split_framed}


def test_the_switch_decides_what_the_spool_uses() -> None:
    want = NATIVE.write_framed if native_wanted() else spool_mod._write_framed
    assert spool_mod.write_framed is want and SignalSpool._write_all is want
    split = NATIVE.split_framed if native_wanted() else spool_mod._split_framed
    assert spool_mod.split_framed is split


def framed(records: list[bytes]) -> bytes:
    return b"".join(frame(len(r)) + r for r in records)


def written_by(write: Callable[[int, list[bytes]], None], path: Path, records: list[bytes]) -> bytes:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b"before")  # appended after what the segment holds
        write(fd, records)
    finally:
        os.close(fd)
    return path.read_bytes()


@fuzz_settings(100)
@given(st.lists(st.binary(max_size=3000), max_size=40), st.integers(0, 1100))
@example([], 0)
@example([b""], 0)
@example([b"x" * 70_000], 0)  # a length prefix with a third byte
@example([b"r"], 511)  # one writev() of 512 records (IOV_MAX buffers)
@example([b"r"], 512)  # one record into a second writev()
@example([b"ab", b"c"], 1100)  # three writev() calls
def test_both_write_the_same_bytes(tmp_path_factory: pytest.TempPathFactory, records: list[bytes],
                                   more: int) -> None:
    records = records + [b"%d" % i for i in range(more)]
    d = tmp_path_factory.mktemp("w")
    got = {name: written_by(write, d / name, records) for name, write in WRITERS.items()}
    assert got["native"] == got["reference"] == b"before" + framed(records)


@pytest.mark.parametrize("name", WRITERS)
def test_short_writes_and_interruptions_are_completed(name: str) -> None:
    """A signal that lands while writev() waits on a socket its reader
    empties slowly cuts the write short (some bytes sent) or interrupts it
    (none sent: EINTR, the handler runs): every byte still arrives, in
    order."""
    records = [bytes((i % 251,)) * (1000 + i) for i in range(600)]
    a, b = socket.socketpair()
    got = bytearray()

    def read() -> None:
        while chunk := b.recv(65536):
            got.extend(chunk)
            time.sleep(0.01)  # slower than the writer: it waits for room

    reader = threading.Thread(target=read)
    reader.start()
    old_handler = signal.signal(signal.SIGALRM, lambda *_: None)
    signal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)
    try:
        WRITERS[name](a.fileno(), records)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        a.close()
        reader.join()
        b.close()
    assert bytes(got) == framed(records)


def test_a_file_that_takes_no_more_fails_both_alike(tmp_path: Path) -> None:
    """A file size limit cuts a write short and refuses the rest (EFBIG):
    both stop at the same byte, with the same error."""
    records = [b"x" * 1000 for _ in range(10)]
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    got = {}
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4500, old_limit[1]))
        for name, write in WRITERS.items():
            with pytest.raises(OSError) as raised:
                written_by(write, tmp_path / name, records)
            got[name] = (raised.value.errno, (tmp_path / name).read_bytes())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert got["native"] == got["reference"] == (errno.EFBIG, (b"before" + framed(records))[:4500])


def test_what_the_native_writer_refuses() -> None:
    """Not a list of bytes, or not a descriptor: refused before anything is written."""
    r, w = os.pipe()
    try:
        for args, error in [((w, (b"a",)), TypeError), ((w, [b"a", "b"]), TypeError), ((-1, [b"a"]), ValueError),
                            ((w,), TypeError)]:
            with pytest.raises(error):
                NATIVE.write_framed(*args)
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 1)
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(OSError) as raised:
        NATIVE.write_framed(w, [b"a"])  # closed
    assert raised.value.errno == errno.EBADF


def as_record(body: bytes) -> bytes:
    """A record as the agent frames them in a segment's records: field 2 (LEN)."""
    return w.len_field(2, body)


def split_by_both(data: bytes, max_records: int) -> list[bytes]:
    """What both splitters take from data: the same records, each a view of
    data's one buffer (no copy)."""
    got = {}
    for name, split in SPLITTERS.items():
        records = split(memoryview(data), max_records)
        assert all(isinstance(r, memoryview) and r.obj is data for r in records), name
        got[name] = [bytes(r) for r in records]
    assert got["native"] == got["reference"]
    return got["reference"]


# Bytes that damage a segment: a length prefix past the end, a record with
# another tag, varints that do not end, end early or late, or overflow.
_DAMAGE = st.sampled_from([
    frame(1000) + b"\x12", frame(1) + b"\x12", frame(3) + b"\x0a\x01x", frame(3) + b"\x12\x02x",
    frame(3) + b"\x12\x00x", frame(12) + b"\x12" + b"\xff" * 11, frame(12) + b"\x12" + b"\x80" * 9 + b"\x01\x00",
    frame(7) + b"\x12\x82\x80\x80\x80\x10\x00", frame(2) + b"\x12\x00", frame(0), b"\x01\x02",
])


@fuzz_settings(200)
@given(st.lists(st.one_of(st.binary(max_size=300).map(as_record), _DAMAGE.map(lambda d: b"DAMAGE" + d)), max_size=30),
       st.integers(0, 40), st.binary(max_size=8))
@example([as_record(b"")], 1, b"")  # the smallest record: tag and a zero length
@example([as_record(b"x" * 200)], 5, b"")  # a two-byte varint
@example([as_record(b"x" * 70_000)], 5, b"")  # a length prefix with a third byte
@example([b"DAMAGE" + frame(12) + b"\x12" + b"\x80" * 9 + b"\x01\x00"], 5, b"")  # 2^63, not 1
@example([b"DAMAGE" + frame(11) + b"\x12" + b"\x80" * 9 + b"\x02"], 5, b"")  # 2^64, not 0 (nor 0 in 64 bits)
def test_both_split_a_segment_alike(parts: list[bytes], max_records: int, tail: bytes) -> None:
    """A read-back buffer of records, damage and a cut tail: both splitters
    take the same leading records, at most max_records, and stop at the
    first frame that is not a whole record (spool.valid_record)."""
    framed_parts = [p[len(b"DAMAGE"):] if p.startswith(b"DAMAGE") else frame(len(p)) + p for p in parts]
    data = b"".join(framed_parts) + tail
    got = split_by_both(data, max_records)
    expected = []
    for part, raw in zip(parts, framed_parts):
        if part.startswith(b"DAMAGE") or len(expected) == max_records:
            break
        expected.append(raw[4:])
    # A damage part that happens to be a valid record counts as one: the
    # oracle stops at it, the splitters may take it; never fewer records.
    assert got[:len(expected)] == expected
    assert len(got) <= max_records


def test_what_the_native_splitter_refuses() -> None:
    for args, error in [((b"\x00" * 8, 1), TypeError), ((memoryview(b""),), TypeError),
                        ((memoryview(b""), "1"), TypeError)]:
        with pytest.raises(error):
            NATIVE.split_framed(*args)
    assert NATIVE.split_framed(memoryview(frame(2) + as_record(b"")), 0) == []
