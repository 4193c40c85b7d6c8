"""otel_exec.host.exefile against independent tools: sha256sum, readelf -n,
go tool buildid, and a plain reading of the htlhash definition (semantic
conventions, process.executable.build_id.htlhash)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from exe_reference import build_c, build_go, go_tool_buildid, readelf_build_id, reference_htlhash, sha256sum
from otel_exec.host import exefile
from otel_exec.model.executable import COMPLETE, TOO_LARGE

def identify(path: Path, cap: int | None = 1 << 30):
    fd = os.open(path, os.O_RDONLY)
    try:
        return exefile.identify(fd, os.fstat(fd).st_size, cap)
    finally:
        os.close(fd)


def test_dynamic_elf_with_gnu_build_id(tmp_path: Path) -> None:
    exe = build_c(tmp_path, "dyn", "-Wl,--build-id=sha1")
    ident = identify(exe)
    assert ident.status == COMPLETE
    assert ident.gnu_build_id == readelf_build_id(exe) and len(ident.gnu_build_id) == 40
    assert ident.go_build_id is None
    assert ident.sha256 == sha256sum(exe)
    assert ident.htlhash == reference_htlhash(exe)
    assert ident.size == exe.stat().st_size


def test_build_id_styles(tmp_path: Path) -> None:
    for style in ("md5", "uuid", "0xdeadbeefcafe0123"):
        exe = build_c(tmp_path, f"id-{style}", f"-Wl,--build-id={style}")
        assert identify(exe).gnu_build_id == readelf_build_id(exe), style
    exe = build_c(tmp_path, "no-id", "-Wl,--build-id=none")
    assert readelf_build_id(exe) is None and identify(exe).gnu_build_id is None


def test_static_elf(tmp_path: Path) -> None:
    exe = build_c(tmp_path, "static", "-static", "-Wl,--build-id")
    ident = identify(exe)
    assert (ident.gnu_build_id, ident.sha256, ident.htlhash) == \
        (readelf_build_id(exe), sha256sum(exe), reference_htlhash(exe))


def test_stripped_section_headers_still_give_the_build_id(tmp_path: Path) -> None:
    """The notes are found through the program headers: a file whose
    section header table is gone keeps its build id."""
    exe = build_c(tmp_path, "dyn", "-Wl,--build-id")
    data = bytearray(exe.read_bytes())
    data[0x28:0x30] = bytes(8)  # e_shoff = 0
    data[0x3C:0x40] = bytes(4)  # e_shnum = 0, e_shstrndx = 0
    broken = tmp_path / "no-sections"
    broken.write_bytes(bytes(data))
    assert identify(broken).gnu_build_id == readelf_build_id(exe)


def test_go_binary(tmp_path: Path) -> None:
    exe = build_go(tmp_path)
    ident = identify(exe)
    assert ident.go_build_id == go_tool_buildid(exe)
    assert ident.sha256 == sha256sum(exe) and ident.htlhash == reference_htlhash(exe)


@pytest.mark.parametrize("size", [0, 1, 100, 4095, 4096, 4097, 6000, 8191, 8192, 8193, 50_000])
def test_htlhash_matches_the_definition(tmp_path: Path, size: int) -> None:
    """Shorter than 4096 bytes (head and tail are the whole file), between
    4096 and 8192 (they overlap), larger (disjoint)."""
    f = tmp_path / "f"
    f.write_bytes(os.urandom(size))
    ident = identify(f)
    assert ident.htlhash == reference_htlhash(f)
    assert ident.sha256 == sha256sum(f)
    assert ident.gnu_build_id is None and ident.go_build_id is None


def test_size_cap(tmp_path: Path) -> None:
    """Above the cap: the build ids and the htlhash (the partial hash), no
    SHA-256; at the cap, SHA-256 too; no SHA-256 at all when switched off."""
    exe = build_c(tmp_path, "dyn", "-Wl,--build-id")
    size = exe.stat().st_size
    over = identify(exe, cap=size - 1)
    assert (over.status, over.sha256) == (TOO_LARGE, None)
    assert (over.gnu_build_id, over.htlhash) == (readelf_build_id(exe), reference_htlhash(exe))
    assert identify(exe, cap=size).sha256 == sha256sum(exe)
    off = identify(exe, cap=None)
    assert (off.status, off.sha256, off.htlhash) == (COMPLETE, None, reference_htlhash(exe))


def test_truncated_and_hostile_elf_headers(tmp_path: Path) -> None:
    """A file that claims to be ELF with absurd tables gives no build id and
    no exception."""
    exe = build_c(tmp_path, "dyn", "-Wl,--build-id")
    data = exe.read_bytes()
    cases = {
        "head-only": data[:64],
        "phoff-beyond": data[:0x20] + (1 << 60).to_bytes(8, "little") + data[0x28:],
        "phoff-max": data[:0x20] + (2**64 - 1).to_bytes(8, "little") + data[0x28:],
        "notes-huge": data.replace(b"GNU\0", b"GNU\0", 1)[:200],
        "magic-only": b"\x7fELF",
    }
    for name, content in cases.items():
        f = tmp_path / name
        f.write_bytes(content)
        ident = identify(f)
        assert ident.htlhash == reference_htlhash(f), name
