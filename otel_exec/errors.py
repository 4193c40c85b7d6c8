"""Errors the CLI turns into a message on stderr and a distinct exit code.

Scripts and service managers tell failure causes apart by the exit code, so
each cause has its own subclass; the message says what to fix in one line.
"""
from __future__ import annotations


class OtelExecError(Exception):
    """Base of every error the CLI reports as ``otel-exec: <str(err)>``;
    each subclass names its exit code in its class statement."""

    exit_code = 1

    def __init_subclass__(cls, exit_code: int | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code


class UsageError(OtelExecError, exit_code=2):
    """Bad command line or configuration."""


class PrivilegeError(OtelExecError, exit_code=3):
    """Not root, or missing CAP_BPF / CAP_PERFMON."""


class PrivilegeLeakError(OtelExecError, exit_code=8):
    """After the privilege drop, a thread of the agent still holds more than
    the source needs at run time: a capability, its bounding set, no
    no_new_privs, or (with --user) another uid or gid."""


class NoBtfError(OtelExecError, exit_code=4):
    """The kernel exposes no BTF (/sys/kernel/btf/vmlinux), so CO-RE cannot relocate."""


class TracefsError(OtelExecError, exit_code=5):
    """tracefs is needed but missing or unreadable."""


class BccError(OtelExecError, exit_code=7):
    """--backend bcc was asked for and BCC cannot run: no `bcc` Python
    module, or no kernel headers for it to compile against."""


class BpfError(OtelExecError, exit_code=6):
    """libbpf or a bpf() call failed: open, attach, map access."""


class BpfLoadError(BpfError):
    """The kernel (usually the verifier) or libbpf refused to load the object.

    ``summary`` is the one-line cause; ``log_tail`` holds the last lines of
    the libbpf/verifier log, where the verifier states why it gave up. Both
    are in ``str()`` (summary first) because the cause is unusable without
    the tail; a caller wanting one line uses ``summary``.
    """

    def __init__(self, summary: str, log_tail: str) -> None:
        super().__init__(summary, log_tail)
        self.summary = summary
        self.log_tail = log_tail

    def __str__(self) -> str:
        if not self.log_tail:
            return self.summary
        return f"{self.summary}\n{self.log_tail}"
