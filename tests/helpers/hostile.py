"""The hostile corpus's odd file names (tests/e2e/test_hostile.py execs a
binary under each; tests/core/test_decode_native.py decodes the records of
those execs with both decoders)."""
from __future__ import annotations

ODD_NAMES = {
    "newline": b"oe\nnew\nline",
    "quotes": b"oe-\"double\"-'single'",
    "backslash_x": b"oe-\\xff-literal",  # looks like an escape; docs: not reversible
    "non_utf8": b"oe-\xff\xfe-\xc3(",
    "cut_utf8": b"oe-\xe2\x82",
    "control": b"oe-\x1b[31m-\x07-\x7f",
    "space_tab": b" oe leading space\tand tab ",
    "dash": b"-oe-dash",
    "deleted_suffix": b"oe (deleted)",  # not deleted: the kernel's own ambiguity
    "name_255_ascii": b"n" * 255,
    "name_255_utf8": "\u00e9".encode() * 127 + b"x",
    "name_255_non_utf8": b"\xff" * 255,
}
