"""tracefs, which the BCC backend needs: BCC reads each tracepoint's format
(its fields, for the running kernel) and attaches through it. The CO-RE
backend attaches through BTF and needs none of this.

``ensure_tracefs()`` returns a usable tracefs directory, mounting tracefs at
/sys/kernel/tracing when nothing is mounted there (an empty directory, as
on systems that mount it only on demand), or raises TracefsError naming the
command that would fix it.
"""
from __future__ import annotations

import ctypes
import os

from otel_exec.errors import TracefsError

TRACEFS = "/sys/kernel/tracing"
DEBUGFS_TRACING = "/sys/kernel/debug/tracing"
MOUNT_COMMAND = f"mount -t tracefs nodev {TRACEFS}"


def usable(path: str) -> bool:
    """A mounted tracefs: its event directory lists the tracepoints."""
    return os.path.isdir(os.path.join(path, "events")) and os.access(os.path.join(path, "events"), os.R_OK)


def _mount_tracefs(path: str) -> None:
    # Imported here (as root, before the drop, as every mount is): the
    # start-up of an agent whose tracefs is mounted skips its imports
    # (subprocess, tempfile, random).
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
    if libc.mount(b"nodev", os.fsencode(path), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)


def ensure_tracefs(path: str = TRACEFS, fallback: str | None = DEBUGFS_TRACING) -> str:
    """A directory where tracefs is mounted: `path` (mounted now if it is an
    empty directory), else `fallback` (debugfs's view of tracefs)."""
    if usable(path):
        return path
    if fallback and usable(fallback):
        return fallback
    command = MOUNT_COMMAND if path == TRACEFS else f"mount -t tracefs nodev {path}"
    try:
        entries = os.listdir(path)
    except OSError as e:
        raise TracefsError(f"tracefs is not available: {path}: {e.strerror}; the BCC backend needs it "
                           f"(run `{command}`)") from None
    if entries:
        raise TracefsError(f"{path} is not a readable tracefs (no events/ in it); the BCC backend needs tracefs "
                           f"there (run `{command}`)")
    try:
        _mount_tracefs(path)
    except OSError as e:
        raise TracefsError(f"tracefs is not mounted at {path} and mounting it failed ({e.strerror}); "
                           f"the BCC backend needs it: run `{command}` as root") from None
    if not usable(path):
        raise TracefsError(f"tracefs was mounted at {path} but has no readable events/ (run `{command}`)")
    return path
