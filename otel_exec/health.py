"""The ready file: written once the agent runs, kept fresh by its loop, read
by `otel-exec health` (the container's HEALTHCHECK, the chart's probes).

The file holds the agent's pid. The loop touches it (its mtime) about once a
second, whatever comes from the kernel, so a file older than a few
refreshes means the loop stopped turning: the agent hangs, or has stopped
without removing it.
"""
from __future__ import annotations

import logging
import os
import time

from otel_exec.errors import UsageError
from otel_exec.host import procfs, safefs

log = logging.getLogger(__name__)

DEFAULT_READY_FILE = "/run/otel-exec/ready"
"""Where `otel-exec health` looks when neither --ready-file nor the
settings of `run` (OTEL_EXEC_READY_FILE, the configuration file) name one;
the image sets OTEL_EXEC_READY_FILE to it."""
REFRESH_S = 1.0
DEFAULT_MAX_AGE_S = 30.0


class ReadyFile:
    """The --ready-file of a running agent: its directory checked and held
    open from before the privilege drop, so the file is written, and then
    touched, where it was checked."""

    def __init__(self, path: str, trust: list[int]) -> None:
        self.path = path
        try:
            self._dir_fd, self._name = safefs.split(path, trust=trust)
        except safefs.UnsafePath as e:
            raise UsageError(f"--ready-file: {e}") from None
        except OSError as e:
            raise UsageError(f"--ready-file {path}: {e.strerror}") from None
        self._next_refresh = 0.0
        self._refresh_failed = False

    def write(self) -> None:
        safefs.replace_file(self._dir_fd, self._name, f"{os.getpid()}\n".encode(), 0o644)
        self._next_refresh = time.monotonic() + REFRESH_S

    def refresh(self) -> None:
        """Touch the file, at most once per REFRESH_S: called on the loop's
        housekeeping, several times per REFRESH_S. A file someone removed
        is written again; a failure is logged once (`otel-exec health` then
        reports the file stale)."""
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + REFRESH_S
        try:
            try:
                os.utime(self._name, dir_fd=self._dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                self.write()
        except OSError as e:
            if not self._refresh_failed:
                log.warning("cannot refresh --ready-file %s: %s (otel-exec health will report it stale)",
                            self.path, e.strerror)
            self._refresh_failed = True
        else:
            self._refresh_failed = False

    def close(self) -> None:
        os.close(self._dir_fd)


def unhealthy(path: str, max_age_s: float, proc: str = procfs.PROC) -> str | None:
    """Why the agent that writes `path` is not healthy, in one line; None
    when it is: the file exists, names a live process that started before
    the file was last touched (a pid the stopped agent left, taken by a
    later process, does not count), and was refreshed within max_age_s."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            raw = f.read(32)
    except FileNotFoundError:
        return (f"{path} does not exist: the agent is starting, has stopped, or runs with another "
                "--ready-file")
    except OSError as e:
        return f"cannot read {path}: {e.strerror}"
    try:
        pid = int(raw.strip())
    except ValueError:
        return f"{path} does not hold a process id"
    try:
        start_ticks = int(procfs.stat_fields(procfs.read(f"{proc}/{pid}/stat"))[procfs.STAT_STARTTIME])
    except (OSError, ValueError, IndexError):
        start_ticks = None
    # Imported here: `run` imports this module for its defaults before the
    # programs' load begins, and identity's imports (hashlib, socket) can
    # come after that.
    from otel_exec.host.identity import HostIdentity

    host = HostIdentity.current()
    if start_ticks is None or host.boot_ns_to_epoch_ns(start_ticks * host.ns_per_tick) > st.st_mtime_ns:
        return f"the agent that wrote {path} (pid {pid}) is not running"
    age = time.time() - st.st_mtime
    if age > max_age_s:
        return (f"{path} was last refreshed {age:.0f} s ago (over {max_age_s:g} s): the agent (pid {pid}) "
                "is stuck")
    return None
