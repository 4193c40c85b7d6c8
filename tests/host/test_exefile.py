"""otel_exec.host.exefile against independent tools: sha256sum, readelf -n,
go tool buildid, and a plain reading of the htlhash definition (semantic
conventions, process.executable.build_id.htlhash)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from testkit.exe_reference import build_c, build_go, go_tool_buildid, readelf_build_id, reference_htlhash, sha256sum
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


def synthetic_elf(is64: bool, big_endian: bool, segments: bool, sections: bool) -> bytes:
    """A minimal ELF file holding a GNU build id note and a Go build id
    note, reachable through a PT_NOTE program header and/or an SHT_NOTE
    section (with a section name table, as readelf wants)."""
    import struct

    e = ">" if big_endian else "<"
    gnu, go = bytes(range(1, 21)), b"synthetic/go-build-id"

    def note(name: bytes, ntype: int, desc: bytes) -> bytes:
        name0 = name + b"\0"
        pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
        return struct.pack(e + "III", len(name0), len(desc), ntype) + pad(name0) + pad(desc)

    notes = note(b"GNU", 3, gnu) + note(b"Go", 4, go)
    ehsize, phentsize, shentsize = (64, 56, 64) if is64 else (52, 32, 40)
    phoff = ehsize if segments else 0
    notes_off = ehsize + (phentsize if segments else 0)
    shstrtab = b"\0.note\0.shstrtab\0"
    strtab_off = notes_off + len(notes)
    shoff = (strtab_off + len(shstrtab) + 7) // 8 * 8 if sections else 0
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 2 if big_endian else 1, 1]) + bytes(9)
    addr = "Q" if is64 else "I"
    header = ident + struct.pack(e + "HHI" + addr * 3 + "IHHHHHH", 2, 62, 1, 0, phoff, shoff, 0, ehsize,
                                 phentsize, 1 if segments else 0, shentsize, 3 if sections else 0,
                                 2 if sections else 0)
    out = bytearray(header)
    if segments:
        if is64:
            out += struct.pack(e + "IIQQQQQQ", 4, 4, notes_off, 0, 0, len(notes), len(notes), 4)
        else:
            out += struct.pack(e + "IIIIIIII", 4, notes_off, 0, 0, len(notes), len(notes), 4, 4)
    out += notes + shstrtab
    if sections:
        out += bytes(shoff - len(out))
        sh = e + ("IIQQQQIIQQ" if is64 else "IIIIIIIIII")
        out += struct.pack(sh, *([0] * 10))
        out += struct.pack(sh, 1, 7, 2, 0, notes_off, len(notes), 0, 0, 4, 0)
        out += struct.pack(sh, 7, 3, 0, 0, strtab_off, len(shstrtab), 0, 0, 1, 0)
    return bytes(out)


@pytest.mark.parametrize("is64", [True, False], ids=["elf64", "elf32"])
@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("where", ["segments", "sections", "both"])
def test_synthetic_elf_classes_byte_orders_and_note_places(tmp_path: Path, is64: bool, big_endian: bool,
                                                           where: str) -> None:
    """32- and 64-bit, little- and big-endian, notes found through the
    program headers or the section headers: the build ids readelf -n
    prints."""
    f = tmp_path / "synthetic"
    f.write_bytes(synthetic_elf(is64, big_endian, where != "sections", where != "segments"))
    ident = identify(f)
    assert ident.gnu_build_id == readelf_build_id(f) == bytes(range(1, 21)).hex()
    assert ident.go_build_id == "synthetic/go-build-id"
    assert ident.htlhash == reference_htlhash(f) and ident.sha256 == sha256sum(f)
