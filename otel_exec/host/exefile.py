"""Content identity of one open file: SHA-256, the OpenTelemetry htlhash,
and for ELF files the GNU and Go build ids. Pure: reads the descriptor it
is given with pread, keeps no state.

- htlhash (the semantic conventions' executable build id of that name, and
  the OpenTelemetry eBPF profiler's file id): SHA-256 over the first 4096
  bytes, the last 4096 bytes (they overlap for files under 8192 bytes) and
  the length as a big-endian 64-bit integer; the first 16 bytes, as hex.
- GNU build id: the descriptor of the `NT_GNU_BUILD_ID` note (name "GNU").
- Go build id: the descriptor of the note named "Go" of type 4
  (`.note.go.buildid`, which the Go linker writes into every ELF binary),
  as `go tool buildid` prints it.
- SHA-256 of the whole file up to `sha256_max_bytes`; above it none (the
  htlhash is the partial hash then).
"""
from __future__ import annotations

import hashlib
import os
import struct

from otel_exec.model.executable import COMPLETE, TOO_LARGE, ExecutableIdentity

HTL_PAGE = 4096
CHUNK = 1 << 20
NT_GNU_BUILD_ID = 3
NT_GO_BUILD_ID = 4
PT_NOTE = 4
SHT_NOTE = 7
NOTES_MAX = 1 << 16  # bytes of one note segment read; build id notes are tiny
HEADERS_MAX = 1 << 16  # bytes of program or section headers read


def pread_all(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, min(size, CHUNK), offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def htlhash(fd: int, size: int) -> str:
    digest = hashlib.sha256(pread_all(fd, HTL_PAGE, 0))
    tail = min(size, HTL_PAGE)
    digest.update(pread_all(fd, tail, size - tail))
    digest.update(size.to_bytes(8, "big"))
    return digest.digest()[:16].hex()


def sha256(fd: int, size: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(CHUNK, size - offset), offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _notes(data: bytes, endian: str, align: int) -> list[tuple[bytes, int, bytes]]:
    """(name without NULs, type, descriptor) of each note in data."""
    head = struct.Struct(endian + "III")
    notes = []
    off = 0
    while off + head.size <= len(data):
        namesz, descsz, ntype = head.unpack_from(data, off)
        off += head.size
        name = data[off:off + namesz].rstrip(b"\0")
        off += (namesz + align - 1) // align * align
        desc = data[off:off + descsz]
        if len(desc) < descsz:
            break
        off += (descsz + align - 1) // align * align
        notes.append((name, ntype, desc))
    return notes


def elf_build_ids(fd: int, size: int) -> tuple[str | None, str | None]:
    """(GNU build id, Go build id) of an ELF file; (None, None) otherwise."""
    ident = os.pread(fd, 64, 0)
    if len(ident) < 52 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        return None, None
    is64, endian = ident[4] == 2, "<" if ident[5] == 1 else ">"
    if is64:
        if len(ident) < 64:
            return None, None
        phoff, shoff = struct.unpack_from(endian + "QQ", ident, 32)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(endian + "HHHH", ident, 54)
        ph = struct.Struct(endian + "IIQQQQQQ")  # type, flags, offset, vaddr, paddr, filesz, memsz, align
        sh = struct.Struct(endian + "IIQQQQIIQQ")  # name, type, flags, addr, offset, size, link, info, align, entsize
    else:
        phoff, shoff = struct.unpack_from(endian + "II", ident, 28)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(endian + "HHHH", ident, 42)
        ph = struct.Struct(endian + "IIIIIIII")  # type, offset, vaddr, paddr, filesz, memsz, flags, align
        sh = struct.Struct(endian + "IIIIIIIIII")
    segments: list[tuple[int, int, int]] = []  # (offset, size, align) of note data
    if phentsize >= ph.size and phnum and phoff < size:
        table = pread_all(fd, min(phnum * phentsize, HEADERS_MAX), phoff)
        for off in range(0, len(table) - ph.size + 1, phentsize):
            fields = ph.unpack_from(table, off)
            if fields[0] != PT_NOTE:
                continue
            if is64:
                segments.append((fields[2], fields[5], fields[7]))
            else:
                segments.append((fields[1], fields[4], fields[7]))
    if not segments and shentsize >= sh.size and shnum and shoff < size:  # no program headers with notes: sections
        table = pread_all(fd, min(shnum * shentsize, HEADERS_MAX), shoff)
        for off in range(0, len(table) - sh.size + 1, shentsize):
            fields = sh.unpack_from(table, off)
            if fields[1] == SHT_NOTE:
                segments.append((fields[4], fields[5], fields[8]))
    gnu = go = None
    for offset, length, align in segments:
        if offset >= size:
            continue
        data = pread_all(fd, min(length, NOTES_MAX, size - offset), offset)
        for name, ntype, desc in _notes(data, endian, 8 if align == 8 else 4):
            if name == b"GNU" and ntype == NT_GNU_BUILD_ID and gnu is None:
                gnu = desc.hex()
            elif name == b"Go" and ntype == NT_GO_BUILD_ID and go is None:
                go = desc.decode("utf-8", "backslashreplace")
    return gnu, go


def identify(fd: int, size: int, sha256_max_bytes: int | None) -> ExecutableIdentity:
    """Everything this module computes, for the file open at fd that is
    size bytes long. sha256_max_bytes None: no SHA-256 (switched off)."""
    gnu, go = elf_build_ids(fd, size)
    too_large = sha256_max_bytes is not None and size > sha256_max_bytes
    return ExecutableIdentity(
        status=TOO_LARGE if too_large else COMPLETE, size=size,
        sha256=sha256(fd, size) if sha256_max_bytes is not None and not too_large else None,
        htlhash=htlhash(fd, size), gnu_build_id=gnu, go_build_id=go)
