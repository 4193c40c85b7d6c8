"""Preflight of the CO-RE loader (otel_exec.core.probes) that needs no kernel."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from otel_exec.errors import NoBtfError
from otel_exec.core.probes import OPTIONAL_PROGRAMS, VMLINUX_BTF, btf_names_present


def _btf_body() -> bytes:
    chunk = 1 << 18
    # One name straddles the first read's edge, one is only a prefix of a
    # real name, one is at the very end.
    body = bytearray(b"\x01" * (3 * chunk))
    body[chunk - 5:chunk - 5 + 12] = b"\0straddles\0"[:12]
    body[100:100 + 13] = b"\0prefix_longer"
    body += b"\0at_the_end\0"
    return bytes(body)


def test_btf_names_are_found_whole_in_a_mapped_file(tmp_path: Path) -> None:
    btf = tmp_path / "vmlinux"
    btf.write_bytes(_btf_body())
    assert btf_names_present({b"straddles", b"prefix", b"at_the_end", b"absent"}, btf) == \
        {b"straddles", b"at_the_end"}


def test_btf_names_are_found_whole_across_chunk_edges_when_not_mappable(tmp_path: Path) -> None:
    """A kernel before 6.16 does not map its BTF: it is read in chunks then,
    as a FIFO is."""
    btf = tmp_path / "vmlinux"
    os.mkfifo(btf)

    def feed() -> None:
        with open(btf, "wb") as w:
            w.write(_btf_body())

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert btf_names_present({b"straddles", b"prefix", b"at_the_end", b"absent"}, btf) == \
            {b"straddles", b"at_the_end"}
    finally:
        writer.join()


def test_btf_is_read_once_for_names_asked_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run`'s preflight and the loader ask about the same file: the second
    question reads it only for names not asked before; a changed file is
    read again."""
    btf = tmp_path / "vmlinux"
    btf.write_bytes(b"\0one\0two\0")
    opened: list[Path] = []
    real_open = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        opened.append(self)
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", counting_open)
    assert btf_names_present({b"one", b"three"}, btf) == {b"one"}
    assert btf_names_present({b"three"}, btf) == set()
    assert btf_names_present({b"one"}, btf) == {b"one"}
    assert opened == [btf]
    assert btf_names_present({b"one", b"two"}, btf) == {b"one", b"two"}
    assert opened == [btf, btf]  # only for "two"
    btf.write_bytes(b"\0three\0")
    opened.clear()
    assert btf_names_present({b"one", b"three"}, btf) == {b"three"}
    assert opened == [btf]


def test_unreadable_btf_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NoBtfError, match="lacks BTF"):
        btf_names_present({b"x"}, tmp_path / "missing")


@pytest.mark.kernel
@pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="no kernel BTF")
def test_this_kernel_names_its_tracepoints() -> None:
    assert b"btf_trace_sched_process_exec" in btf_names_present(
        {b"btf_trace_sched_process_exec", *OPTIONAL_PROGRAMS.values()})
