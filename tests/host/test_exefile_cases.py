"""otel_exec.host.exefile on hand-made files: the read loops' bounds, the
note parser's padding, and ELF headers arranged as real files may arrange
them (notes aligned to 8, memsz unlike filesz, several note segments,
truncated tables, the read caps). The expected values come from the ELF
specification's layout read literally here, not from the module."""
from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from otel_exec.host import exefile

GNU_ID = bytes(range(1, 21))
OTHER_ID = bytes(range(100, 120))


def _pad(b: bytes, align: int) -> bytes:
    return b + b"\0" * (-len(b) % align)


def note(name: bytes, ntype: int, desc: bytes, align: int = 4, e: str = "<") -> bytes:
    """One ELF note: name and descriptor each padded to align."""
    name0 = name + b"\0" if name else b""
    return struct.pack(e + "III", len(name0), len(desc), ntype) + _pad(name0, align) + _pad(desc, align)


def elf(segments: list[tuple] = (), sections: list[tuple] = (), data: list[bytes] = (), is64: bool = True,
        e: str = "<", phentsize: int | None = None, phnum: int | None = None,
        ph_pad: bytes = b"", sh_pad: bytes = b"") -> bytes:
    """An ELF file: header, program headers, section headers, then the data
    blobs each at an 8-aligned offset. A segment is (type, blob index,
    align) or (type, blob index, align, memsz, flags); a section (type,
    blob index, align). A blob index of None is the largest offset there is
    (past the end; negative if read as signed). ph_pad and sh_pad follow
    each entry (the entry sizes grow by their length)."""
    ehsize, phsize, shsize = (64, 56 + len(ph_pad), 64 + len(sh_pad)) if is64 else \
        (52, 32 + len(ph_pad), 40 + len(sh_pad))
    phoff = ehsize if segments else 0
    shoff = ehsize + phsize * len(segments) if sections else 0
    start = ehsize + phsize * len(segments) + shsize * len(sections)
    offsets, at = [], _round8(start)
    for blob in data:
        offsets.append(at)
        at = _round8(at + len(blob))
    end = at

    def where(index: int | None) -> tuple[int, int]:
        return ((1 << (64 if is64 else 32)) - 1, 64) if index is None else (offsets[index], len(data[index]))

    head = b"\x7fELF" + bytes([2 if is64 else 1, 1 if e == "<" else 2, 1]) + bytes(9)
    addr = "Q" if is64 else "I"
    out = bytearray(head + struct.pack(
        e + "HHI" + addr * 3 + "IHHHHHH", 2, 62, 1, 0, phoff, shoff, 0, ehsize,
        phsize if phentsize is None else phentsize, len(segments) if phnum is None else phnum,
        shsize, len(sections), 0))
    for seg in segments:
        ptype, index, align, *rest = seg
        off, size = where(index)
        memsz, flags = rest if rest else (size, 4)
        if is64:
            out += struct.pack(e + "IIQQQQQQ", ptype, flags, off, 0x1000, 0x2000, size, memsz, align)
        else:
            out += struct.pack(e + "IIIIIIII", ptype, off, 0x1000, 0x2000, size, memsz, flags, align)
        out += ph_pad
    for stype, index, align in sections:
        off, size = where(index)
        if is64:
            out += struct.pack(e + "IIQQQQIIQQ", 1, stype, 2, 0x3000, off, size, 5, 6, align, 0)
        else:
            out += struct.pack(e + "IIIIIIIIII", 1, stype, 2, 0x3000, off, size, 5, 6, align, 0)
        out += sh_pad
    for off, blob in zip(offsets, data):
        out += bytes(off - len(out)) + blob
    return bytes(out + bytes(end - len(out)))


def _round8(n: int) -> int:
    return (n + 7) // 8 * 8


def ids(tmp_path: Path, content: bytes) -> tuple[str | None, str | None]:
    f = tmp_path / "f"
    f.write_bytes(content)
    fd = os.open(f, os.O_RDONLY)
    try:
        return exefile.elf_build_ids(fd, len(content))
    finally:
        os.close(fd)


def opened(tmp_path: Path, content: bytes) -> int:
    f = tmp_path / "data"
    f.write_bytes(content)
    return os.open(f, os.O_RDONLY)


PT_NOTE, PT_LOAD, SHT_NOTE, SHT_PROGBITS = 4, 1, 7, 1


def test_pread_all_stops_at_the_end_and_keeps_its_offset(tmp_path: Path) -> None:
    content = bytes(range(10))
    fd = opened(tmp_path, content)
    try:
        assert exefile.pread_all(fd, 100, 4) == content[4:]
        assert exefile.pread_all(fd, 3, 2) == content[2:5]
        assert exefile.pread_all(fd, 1, 9) == content[9:]
        assert exefile.pread_all(fd, 0, 0) == b""
        assert exefile.pread_all(fd, 5, 10) == b""
    finally:
        os.close(fd)


def test_sha256_covers_exactly_size_bytes_over_several_chunks(tmp_path: Path) -> None:
    """size is what fstat said: a file that grew since is hashed up to it,
    one that shrank up to its end (no endless loop)."""
    content = os.urandom(2 * exefile.CHUNK + 12345)
    fd = opened(tmp_path, content)
    try:
        for size in (exefile.CHUNK + 1, exefile.CHUNK + 700_000, 2 * exefile.CHUNK, len(content)):
            assert exefile.sha256(fd, size) == hashlib.sha256(content[:size]).hexdigest(), size
        assert exefile.sha256(fd, len(content) + 5000) == hashlib.sha256(content).hexdigest()
        assert exefile.pread_all(fd, len(content), 0) == content
        assert exefile.pread_all(fd, 2 * exefile.CHUNK, 3) == content[3:3 + 2 * exefile.CHUNK]
    finally:
        os.close(fd)


def test_htlhash_uses_the_size_given(tmp_path: Path) -> None:
    content = os.urandom(20_000)
    fd = opened(tmp_path, content)
    try:
        size = 10_000
        part = content[:size]
        want = hashlib.sha256(part[:4096] + part[-4096:] + size.to_bytes(8, "big")).digest()[:16].hex()
        assert exefile.htlhash(fd, size) == want
    finally:
        os.close(fd)


def test_notes_padding_and_zero_sized_notes() -> None:
    """Names and descriptors of every length modulo the alignment; a note
    with no name and no descriptor at the very end is a note too."""
    for align in (4, 8):
        data = (note(b"ABCD", 1, b"x", align) + note(b"A", 2, b"12345", align)
                + note(b"ABCDEFG", 7, b"1234567", align) + note(b"", 9, b"", align))
        assert exefile._notes(data, "<", align) == [(b"ABCD", 1, b"x"), (b"A", 2, b"12345"),
                                                     (b"ABCDEFG", 7, b"1234567"), (b"", 9, b"")], align
    big = note(b"GNU", 3, GNU_ID, 4, ">")
    assert exefile._notes(big, ">", 4) == [(b"GNU", 3, GNU_ID)]


def test_notes_stop_at_a_cut_descriptor_and_keep_trailing_letters_of_names() -> None:
    data = note(b"GNUX", 3, GNU_ID) + note(b"GNU", 3, OTHER_ID)[:-1]
    assert exefile._notes(data, "<", 4) == [(b"GNUX", 3, GNU_ID)]
    assert exefile._notes(note(b"GNU", 3, b"") + b"\0" * 11, "<", 4) == [(b"GNU", 3, b"")]


def test_notes_aligned_to_8_through_program_and_section_headers(tmp_path: Path) -> None:
    """x86-64 binaries carry an 8-aligned note segment (.note.gnu.property);
    a 4-byte name takes 8 bytes there."""
    notes = note(b"GNU", 3, GNU_ID, 8) + note(b"Go", 4, b"go/id-21-bytes-long..", 8)
    assert ids(tmp_path, elf([(PT_NOTE, 0, 8)], data=[notes])) == (GNU_ID.hex(), "go/id-21-bytes-long..")
    assert ids(tmp_path, elf(sections=[(SHT_NOTE, 0, 8)], data=[notes])) == (GNU_ID.hex(), "go/id-21-bytes-long..")
    notes4 = note(b"GNU", 3, GNU_ID, 4) + note(b"Go", 4, b"go/id-21-bytes-long..", 4)
    assert ids(tmp_path, elf([(PT_NOTE, 0, 4)], data=[notes4])) == (GNU_ID.hex(), "go/id-21-bytes-long..")
    assert ids(tmp_path, elf([(PT_NOTE, 0, 1)], data=[notes4])) == (GNU_ID.hex(), "go/id-21-bytes-long..")


def test_segment_fields_read_from_their_own_columns(tmp_path: Path) -> None:
    """filesz, not memsz; align, not flags; both classes."""
    notes = note(b"GNU", 3, GNU_ID)
    for is64 in (True, False):
        for memsz, flags in ((0, 5), (1 << 20, 8)):
            content = elf([(PT_NOTE, 0, 4, memsz, flags)], data=[notes], is64=is64)
            assert ids(tmp_path, content) == (GNU_ID.hex(), None), (is64, memsz, flags)


def test_every_note_segment_is_read_and_the_first_id_wins(tmp_path: Path) -> None:
    content = elf([(PT_LOAD, 0, 4), (PT_NOTE, None, 4), (PT_NOTE, 1, 4), (PT_NOTE, 2, 4)],
                  data=[note(b"GNU", 3, OTHER_ID), note(b"GNU", 3, GNU_ID) + note(b"Go", 4, b"first"),
                        note(b"GNU", 3, OTHER_ID) + note(b"Go", 4, b"second")])
    assert ids(tmp_path, content) == (GNU_ID.hex(), "first")


def test_only_the_right_name_and_type_count(tmp_path: Path) -> None:
    wrong = (note(b"GNU", 4, OTHER_ID) + note(b"Go", 3, b"wrong-type") + note(b"GNUX", 3, OTHER_ID)
             + note(b"Gox", 4, b"wrong-name") + note(b"Go", 1, b"wrong-type") + note(b"GNU", 1, OTHER_ID))
    notes = wrong + note(b"GNU", 3, GNU_ID) + note(b"Go", 4, b"right") + wrong
    assert ids(tmp_path, elf([(PT_NOTE, 0, 4)], data=[notes])) == (GNU_ID.hex(), "right")


def test_sections_are_read_only_without_note_segments(tmp_path: Path) -> None:
    data = [note(b"GNU", 3, GNU_ID), note(b"Go", 4, b"in-a-section")]
    both = elf([(PT_NOTE, 0, 4)], [(SHT_NOTE, 1, 4)], data=data)
    assert ids(tmp_path, both) == (GNU_ID.hex(), None)
    no_note_segment = elf([(PT_LOAD, 0, 4), (PT_LOAD, 1, 4)], [(SHT_PROGBITS, 0, 4), (SHT_NOTE, 1, 4)], data=data)
    assert ids(tmp_path, no_note_segment) == (None, "in-a-section")
    for is64 in (True, False):
        beyond = elf(sections=[(SHT_NOTE, None, 4), (SHT_NOTE, 0, 4)], data=data, is64=is64)
        assert ids(tmp_path, beyond) == (GNU_ID.hex(), None), is64


def test_go_build_id_that_is_not_utf8(tmp_path: Path) -> None:
    content = elf([(PT_NOTE, 0, 4)], data=[note(b"Go", 4, b"ab\xffcd")])
    assert ids(tmp_path, content) == (None, "ab\\xffcd")


def test_bad_class_byte_order_or_short_header(tmp_path: Path) -> None:
    notes = [note(b"GNU", 3, GNU_ID)]
    good = elf([(PT_NOTE, 0, 4)], data=notes)
    assert ids(tmp_path, good) == (GNU_ID.hex(), None)
    for cls, order in ((0, 1), (3, 1), (2, 0), (2, 3), (1, 3)):
        assert ids(tmp_path, good[:4] + bytes([cls, order]) + good[6:]) == (None, None), (cls, order)
    # a bad class byte on a 32-bit file, a bad byte order on a big-endian
    # one: read as the other value would give the id, so only the check stops it
    elf32 = elf([(PT_NOTE, 0, 4)], data=notes, is64=False)
    for cls in (0, 3):
        assert ids(tmp_path, elf32[:4] + bytes([cls]) + elf32[5:]) == (None, None), cls
    be = elf([(PT_NOTE, 0, 4)], data=[note(b"GNU", 3, GNU_ID, e=">")], e=">")
    assert ids(tmp_path, be) == (GNU_ID.hex(), None)
    for order in (0, 3):
        assert ids(tmp_path, be[:5] + bytes([order]) + be[6:]) == (None, None), order
    assert ids(tmp_path, b"\x7fELX" + good[4:]) == (None, None)
    assert ids(tmp_path, good[:60]) == (None, None)  # an ELF64 header needs 64 bytes
    assert ids(tmp_path, good[:51]) == (None, None)
    small32 = elf([(PT_NOTE, 0, 4)], data=notes, is64=False)
    assert ids(tmp_path, small32) == (GNU_ID.hex(), None)
    assert ids(tmp_path, small32[:51]) == (None, None)


def test_bad_entry_sizes_and_counts(tmp_path: Path) -> None:
    notes = [note(b"GNU", 3, GNU_ID)]
    assert ids(tmp_path, elf([(PT_NOTE, 0, 4)], data=notes, phentsize=55)) == (None, None)
    assert ids(tmp_path, elf([(PT_NOTE, 0, 4)], data=notes, phnum=0)) == (None, None)
    assert ids(tmp_path, elf([(PT_NOTE, 0, 4)], data=notes, is64=False, phentsize=31)) == (None, None)


def test_a_program_header_table_cut_short(tmp_path: Path) -> None:
    """The file ends one byte into the table's second entry (the notes come
    before the table): the first entry is read, the partial one is not,
    nothing raises."""
    notes = note(b"GNU", 3, GNU_ID)
    for is64 in (True, False):
        ehsize, phsize = (64, 56) if is64 else (52, 32)
        phoff = ehsize + len(notes)
        full = elf([(PT_NOTE, 0, 4), (PT_NOTE, 0, 4)], data=[notes], is64=is64)
        head = bytearray(full[:ehsize])
        struct.pack_into("<Q" if is64 else "<I", head, 32 if is64 else 28, phoff)
        entry = bytearray(full[ehsize:ehsize + phsize])
        struct.pack_into("<Q" if is64 else "<I", entry, 8 if is64 else 4, ehsize)
        cut = bytes(head) + notes + bytes(entry) + bytes(entry)[:-1]
        assert ids(tmp_path, cut) == (GNU_ID.hex(), None), is64


def test_header_and_note_reads_are_capped(tmp_path: Path) -> None:
    """Program headers past the first HEADERS_MAX bytes and note data past
    the first NOTES_MAX bytes of a segment are not read."""
    count = exefile.HEADERS_MAX // 56 + 10
    late = elf([(PT_LOAD, 0, 4)] * (count - 1) + [(PT_NOTE, 0, 4)], data=[note(b"GNU", 3, GNU_ID)])
    assert ids(tmp_path, late) == (None, None)
    early = elf([(PT_NOTE, 0, 4)] + [(PT_LOAD, 0, 4)] * (count - 1), data=[note(b"GNU", 3, GNU_ID)])
    assert ids(tmp_path, early) == (GNU_ID.hex(), None)
    filler = note(b"pad", 1, bytes(exefile.NOTES_MAX))
    assert ids(tmp_path, elf([(PT_NOTE, 0, 4)], data=[filler + note(b"GNU", 3, GNU_ID)])) == (None, None)
    assert ids(tmp_path, elf([(PT_NOTE, 0, 4)], data=[note(b"pad", 1, bytes(exefile.NOTES_MAX - 60))
                                                      + note(b"GNU", 3, GNU_ID)])) == (GNU_ID.hex(), None)


def test_sizes_and_offsets_read_unsigned() -> None:
    """Note sizes past 2**31 are huge, not negative: the note runs past the
    data and ends the list."""
    assert exefile._notes(struct.pack("<III", 0xFFFFFFFF, 0, 3) + b"GNU\0", "<", 4) == [(b"GNU", 3, b"")]
    assert exefile._notes(struct.pack("<III", 4, 0xFFFFFFF0, 3) + b"GNU\0" + bytes(8), "<", 4) == []


def test_entry_sizes_and_counts_past_32767(tmp_path: Path) -> None:
    notes = [note(b"GNU", 3, GNU_ID)]
    assert ids(tmp_path, elf([(PT_NOTE, 0, 4)], data=notes, ph_pad=bytes(40000 - 56))) == (GNU_ID.hex(), None)
    assert ids(tmp_path, elf(sections=[(SHT_NOTE, 0, 4)], data=notes, sh_pad=bytes(40000 - 64))) == \
        (GNU_ID.hex(), None)
    for is64 in (True, False):
        assert ids(tmp_path, elf([(PT_NOTE, 0, 4)], data=notes, is64=is64, ph_pad=bytes(40000 - 56))) == \
            (GNU_ID.hex(), None), is64
        many = bytearray(elf([(PT_NOTE, 0, 4)], data=notes, is64=is64))
        struct.pack_into("<H", many, 56 if is64 else 44, 0xFFFF)  # e_phnum: the table runs past the end
        assert ids(tmp_path, bytes(many)) == (GNU_ID.hex(), None), is64
        many = bytearray(elf(sections=[(SHT_NOTE, 0, 4)], data=notes, is64=is64))
        struct.pack_into("<H", many, 60 if is64 else 48, 0xFFFF)  # e_shnum
        assert ids(tmp_path, bytes(many)) == (GNU_ID.hex(), None), is64


def test_table_offsets_past_2_31_in_32_bit_files(tmp_path: Path) -> None:
    notes = [note(b"GNU", 3, GNU_ID)]
    sections_only = bytearray(elf([(PT_NOTE, 0, 4)], [(SHT_NOTE, 0, 4)], data=notes, is64=False))
    struct.pack_into("<I", sections_only, 28, 0x80000000)  # e_phoff
    assert ids(tmp_path, bytes(sections_only)) == (GNU_ID.hex(), None)
    struct.pack_into("<I", sections_only, 32, 0x80000000)  # e_shoff
    assert ids(tmp_path, bytes(sections_only)) == (None, None)
    assert ids(tmp_path, elf([(PT_NOTE, None, 4), (PT_NOTE, 0, 4)], data=notes, is64=False)) == (GNU_ID.hex(), None)


def test_entries_are_read_at_their_stride_only(tmp_path: Path) -> None:
    """Entry sizes above the structure's: the bytes between entries are
    not entries, even when they look like one."""
    data = [note(b"GNU", 3, GNU_ID), note(b"Go", 4, b"between-entries")]
    for is64 in (True, False):
        ph_size, sh_size = (56, 64) if is64 else (32, 40)
        layout = elf([(PT_LOAD, 0, 4), (PT_NOTE, 0, 4)], data=data, is64=is64, ph_pad=bytes(ph_size))
        go_at = layout.index(data[1])
        addr = "Q" if is64 else "I"
        fake_ph = struct.pack("<II" + addr * 6, 4, 4, go_at, 0, 0, len(data[1]), len(data[1]), 4) if is64 else \
            struct.pack("<IIIIIIII", 4, go_at, 0, 0, len(data[1]), len(data[1]), 4, 4)
        content = elf([(PT_LOAD, 0, 4), (PT_NOTE, 0, 4)], data=data, is64=is64, ph_pad=fake_ph)
        assert ids(tmp_path, content) == (GNU_ID.hex(), None), is64
        layout = elf(sections=[(SHT_PROGBITS, 0, 4), (SHT_NOTE, 0, 4)], data=data, is64=is64,
                     sh_pad=bytes(sh_size))
        go_at = layout.index(data[1])
        fake_sh = struct.pack("<II" + addr * 4 + "II" + addr * 2, 1, 7, 0, 0, go_at, len(data[1]), 0, 0, 4, 0)
        content = elf(sections=[(SHT_PROGBITS, 0, 4), (SHT_NOTE, 0, 4)], data=data, is64=is64, sh_pad=fake_sh)
        assert ids(tmp_path, content) == (GNU_ID.hex(), None), is64


def test_a_section_header_table_cut_short(tmp_path: Path) -> None:
    notes = note(b"GNU", 3, GNU_ID)
    for is64 in (True, False):
        ehsize, shsize = (64, 64) if is64 else (52, 40)
        full = bytearray(elf(sections=[(SHT_NOTE, 0, 4), (SHT_NOTE, 0, 4)], data=[notes], is64=is64))
        shoff = ehsize + len(notes)
        head = full[:ehsize]
        struct.pack_into("<Q" if is64 else "<I", head, 40 if is64 else 32, shoff)
        entry = bytearray(full[ehsize:ehsize + shsize])
        struct.pack_into("<Q" if is64 else "<I", entry, 24 if is64 else 16, ehsize)
        cut = bytes(head) + notes + bytes(entry) + bytes(entry)[:-1]
        assert ids(tmp_path, cut) == (GNU_ID.hex(), None), is64


def test_notes_are_read_within_the_segment_and_the_size_given(tmp_path: Path) -> None:
    """A segment's notes end at its length, even when a note follows it in
    the file; and nothing past `size` (what fstat said) is read."""
    pad, gnu = note(b"pad", 1, b"12345678"), note(b"GNU", 3, GNU_ID)
    assert ids(tmp_path, elf([(PT_NOTE, 0, 4)], data=[pad, gnu])) == (None, None)
    content = elf([(PT_NOTE, 0, 4)], data=[pad + gnu])
    assert ids(tmp_path, content) == (GNU_ID.hex(), None)
    f = tmp_path / "grown"
    f.write_bytes(content)
    fd = os.open(f, os.O_RDONLY)
    try:
        assert exefile.elf_build_ids(fd, content.index(gnu)) == (None, None)
        assert exefile.elf_build_ids(fd, content.index(gnu) + len(gnu) - 1) == (None, None)
        assert exefile.elf_build_ids(fd, len(content)) == (GNU_ID.hex(), None)
    finally:
        os.close(fd)
