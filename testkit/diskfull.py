"""A full file system on purpose: what the spool meets when the disk fills."""
from __future__ import annotations

import errno
from pathlib import Path


def fill(fs: Path) -> Path:
    """Take every free block of fs; returns the ballast file. A write error
    other than ENOSPC is raised: the file system did not simply fill."""
    ballast = fs / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return ballast
