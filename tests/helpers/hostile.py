"""The hostile corpus's odd file names (tests/e2e/test_hostile.py execs a
binary under each; tests/core/test_decode_native.py decodes the records of
those execs with both decoders), and the chains of directories deep or
long paths are made of."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

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


def make_chain(base: Path, names: list[bytes], leaf: bytes, src: str) -> tuple[bytes, int]:
    """mkdir base/n1/n2/... with dir fds (the whole path may exceed
    PATH_MAX), copy `src` into the deepest one as `leaf`. Returns the full
    path (bytes) and an open O_PATH fd of the deepest directory."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for n in names:
            os.mkdir(n, dir_fd=fd)
            nfd = os.open(n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        out = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755, dir_fd=fd)
        with open(src, "rb") as f, os.fdopen(out, "wb") as o:
            shutil.copyfileobj(f, o)
    except BaseException:
        os.close(fd)
        raise
    return os.fsencode(base) + b"/" + b"/".join(names) + b"/" + leaf, fd
