"""What an executed file is, by content: its hashes and build ids
(docs/fields.md#executable-identity). Computed by otel_exec.host.exefile,
looked up per exec by otel_exec.host.executables."""
from __future__ import annotations

from dataclasses import dataclass

# Why a value is missing or partial (ExecutableIdentity.status).
COMPLETE = "complete"  # every value that applies was computed from the executed file
TOO_LARGE = "too_large"  # above the size cap: build ids and htlhash, no sha256
PENDING = "pending"  # not ready within the wait bound: the values follow on the span
CHANGED = "changed"  # the file found is not the one executed (replaced, modified)
GONE = "gone"  # no file to read any more (deleted, exited and removed)
MEMFD = "memfd"  # executed from a memfd or another file without a path, process gone
UNREADABLE = "unreadable"  # the agent may not read it (permissions)
NO_PATH = "no_path"  # --no-field paths: no path to open, and the process could not be read
BUSY = "busy"  # the hashing queue was full: skipped, counted
BY_PATH = "by_path"  # a script, opened by the path given to execve: the kernel reports no inode to check


@dataclass(frozen=True, slots=True)
class ExecutableIdentity:
    status: str
    size: int | None = None
    sha256: str | None = None  # hex, whole file; None above the size cap
    htlhash: str | None = None  # hex, the semantic conventions' head-tail-length hash
    gnu_build_id: str | None = None  # hex of the NT_GNU_BUILD_ID note
    go_build_id: str | None = None  # as `go tool buildid` prints it
