"""Agent configuration: one dataclass, built from the command line."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from otel_exec.model.events import ExecEvent
from otel_exec.model.layout import ARGS_MAX, FILTER_ENTRIES_MAX, PREFIX_LEN

ENV_CAPTURE_MODES = ("none", "redacted", "all")
FORMATS = ("pretty", "jsonl")
EXPORTERS = ("console", "otlp")
BACKENDS = ("auto", "core", "bcc")
# --no-field NAME: what the kernel then does not read, as the ExecEvent
# fields left out (named in ExecEvent.unavailable, docs/fields.md).
FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    "argv": ("argv", "argv_truncated"),
    "env": ("env", "env_truncated"),
    "stdin": ("stdin_type", "stdin_path"),
    "interpreter": ("interpreter_pathname", "interpreter_dev", "interpreter_inode", "interpreter_ctime"),
    "paths": ("pathname", "interpreter_pathname", "stdin_path", "pwd", "cgroup_path", "container_id"),
}


@dataclass
class Config:
    exporters: tuple[str, ...] = ()  # empty: otlp if an endpoint is configured, else console
    endpoint: str | None = None
    protocol: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    span_env: bool = False
    spool_dir: str | None = "/var/lib/otel-exec"  # None: records wait in memory only
    spool_max_bytes: int = 1 << 30
    spool_full_action: str = "drop-oldest"  # which records give way when disk and memory are full
    spool_allow_group_read: bool = False  # accept a spool directory its group may read (0750)
    user: str | None = None  # run as this user once attached (--user)
    stats_interval: float | None = None  # seconds between summaries on stderr
    shutdown_grace: float = 10.0  # seconds to flush queues on stop
    format: str | None = None  # None: pretty on a TTY, jsonl otherwise
    output: str | None = None  # None: stdout
    duration: float | None = None
    ready_file: str | None = None
    env_capture: str = "redacted"
    redact_patterns: list[str] = field(default_factory=list)
    redact_allow: list[str] = field(default_factory=list)  # values the built-in rules leave alone
    env_allow: list[str] = field(default_factory=list)
    trust_traceparent: str = "any"  # whose TRACEPARENT parents spans (spans.TraceparentTrust)
    comm: list[str] = field(default_factory=list)
    exclude_comm: list[str] = field(default_factory=list)
    path_prefix: list[str] = field(default_factory=list)
    uid: list[int] = field(default_factory=list)
    container_only: bool = False
    cgroup: list[str] = field(default_factory=list)
    sample_rate: int = 1  # keep 1 exec in N (in the kernel); 1 keeps every exec
    # Execs that sampling never drops (they still go through the filters).
    keep_comm: list[str] = field(default_factory=list)
    keep_uid: list[int] = field(default_factory=list)
    keep_path_prefix: list[str] = field(default_factory=list)
    no_field: list[str] = field(default_factory=list)  # FIELD_GROUPS the kernel does not read
    argv_max_bytes: int = 32 * 1024
    env_max_bytes: int = 32 * 1024
    # The ring absorbs bursts the reader cannot follow at once (hundreds of
    # parents forking together); the default leaves a margin over the
    # smallest ring that lost nothing in tests/test_hostile.py's burst
    # (docs/operations.md#sizing). All of it is resident (mapped once, see
    # ringbuf.py): this is the largest single item of the agent's RSS.
    ringbuf_bytes: int = 4 * 1024 * 1024
    # The reader sleeps this long between drains unless the kernel wakes it
    # because wakeup_fraction of the ring is full: batching wake-ups is what
    # keeps the per-exec kernel cost low.
    poll_interval: float = 0.1
    wakeup_fraction: float = 0.25
    process_table_size: int = 65536
    # core: CO-RE through libbpf (needs kernel BTF); bcc: BCC (needs the bcc
    # module and kernel headers, docs/backends.md); auto: core where the
    # kernel has BTF, else bcc.
    backend: str = "auto"
    # Executable identity (docs/fields.md#executable-identity): build ids and
    # htlhash of every exec's file, SHA-256 up to a size cap.
    executable_identity: bool = True
    executable_sha256: bool = True
    executable_sha256_max_bytes: int = 256 << 20
    executable_cache_entries: int = 4096
    executable_wait_ms: float = 5.0

    def not_collected(self) -> tuple[str, ...]:
        """The ExecEvent fields --no-field leaves out, in field order."""
        off = {name for group in self.no_field for name in FIELD_GROUPS[group]}
        return tuple(name for name in ExecEvent.__slots__ if name in off)

    def bcc_unsupported(self) -> list[str]:
        """The options given that the BCC backend does not implement: its
        program cannot read what they need, or the savings they are for
        would not happen there (docs/backends.md)."""
        return [flag for flag, given in (
            ("--sample-rate", self.sample_rate > 1), ("--keep-comm", bool(self.keep_comm)),
            ("--keep-uid", bool(self.keep_uid)), ("--keep-path-prefix", bool(self.keep_path_prefix)),
            ("--no-field", bool(self.no_field))) if given]

    def check_backend(self, backend: str, why: str) -> None:
        """Refuse options the chosen backend would otherwise ignore."""
        from otel_exec.errors import UsageError

        unsupported = self.bcc_unsupported() if backend == "bcc" else []
        if unsupported:
            raise UsageError(f"{', '.join(unsupported)}: not supported by the BCC backend ({why}); "
                             "the CO-RE backend needs kernel BTF (docs/backends.md)")

    def validate(self) -> None:
        from otel_exec.errors import UsageError

        if self.env_capture not in ENV_CAPTURE_MODES:
            raise UsageError(f"--env-capture must be one of {', '.join(ENV_CAPTURE_MODES)}")
        from otel_exec.lineage.spans import TraceparentTrust

        TraceparentTrust.parse(self.trust_traceparent)
        for flag, patterns in (("--redact-pattern", self.redact_patterns), ("--redact-allow", self.redact_allow)):
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise UsageError(f"{flag} {pattern!r}: not a regular expression: {e}") from None
        if self.format is not None and self.format not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
        for name in self.exporters:
            if name not in EXPORTERS:
                raise UsageError(f"unknown exporter {name!r}; available: {', '.join(EXPORTERS)}")
        for name, value in (("--argv-max-bytes", self.argv_max_bytes), ("--env-max-bytes", self.env_max_bytes)):
            if not 0 <= value <= ARGS_MAX:
                raise UsageError(f"{name} must be between 0 and {ARGS_MAX}")
        rb = self.ringbuf_bytes
        if rb < 4096 * 16 or rb & (rb - 1):
            raise UsageError("--ringbuf-bytes must be a power of two of at least 64 KiB")
        if rb < 4 * (ARGS_MAX * 2 + 64 * 1024):
            # One exec record can reach ~300 KiB; the ring must hold several.
            raise UsageError(f"--ringbuf-bytes must be at least {4 * (ARGS_MAX * 2 + 64 * 1024)}")
        if self.duration is not None and self.duration <= 0:
            raise UsageError("--duration must be positive")
        if not 0.001 <= self.poll_interval <= 10:
            raise UsageError("--poll-interval must be between 0.001 and 10 seconds")
        for comm in (*self.comm, *self.exclude_comm, *self.keep_comm):
            if not comm or len(comm.encode()) > 15:
                raise UsageError(f"comm {comm!r} must be 1 to 15 bytes (the kernel's TASK_COMM_LEN)")
        for prefix in (*self.path_prefix, *self.keep_path_prefix):
            if not 1 <= len(os.fsencode(prefix)) < PREFIX_LEN:
                raise UsageError(f"path prefix {prefix!r} must be 1 to {PREFIX_LEN - 1} bytes "
                                 "(the kernel compares that much of a path)")
        for uid in (*self.uid, *self.keep_uid):
            if not 0 <= uid < 2**32 - 1:
                raise UsageError(f"uid {uid} is not a valid user id")
        for name, values in (("--comm, --exclude-comm and --keep-comm", {*self.comm, *self.exclude_comm,
                                                                         *self.keep_comm}),
                             ("--uid and --keep-uid", {*self.uid, *self.keep_uid}),
                             ("--cgroup", set(self.cgroup)),
                             ("--path-prefix and --keep-path-prefix", {*self.path_prefix, *self.keep_path_prefix})):
            if len(values) > FILTER_ENTRIES_MAX:
                raise UsageError(f"{name} take at most {FILTER_ENTRIES_MAX} distinct values")
        if not 1 <= self.sample_rate < 2**32:
            raise UsageError("--sample-rate must be a whole number from 1 (keep every exec) to 4294967295")
        keeps = [flag for flag, given in (("--keep-comm", self.keep_comm), ("--keep-uid", self.keep_uid),
                                          ("--keep-path-prefix", self.keep_path_prefix)) if given]
        if keeps and self.sample_rate == 1:
            raise UsageError(f"{', '.join(keeps)} only spare execs from sampling: give --sample-rate N > 1 too")
        for group in self.no_field:
            if group not in FIELD_GROUPS:
                raise UsageError(f"--no-field {group!r}: must be one of {', '.join(FIELD_GROUPS)}")
        if self.cgroup:
            from otel_exec.host.cgroups import resolve

            for spec in self.cgroup:
                resolve(spec)  # a cgroup that does not exist fails now, not after attaching
        if self.user is not None:
            from otel_exec.host.privileges import resolve_user

            resolve_user(self.user)  # an unknown user fails now, not after attaching
        if self.stats_interval is not None and self.stats_interval <= 0:
            raise UsageError("--stats-interval must be positive")
        if self.spool_max_bytes < 16 << 20:
            raise UsageError("--spool-max-bytes must be at least 16 MiB")
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}")
        self.check_backend(self.backend, "--backend bcc")
        if self.process_table_size < 1024:
            raise UsageError("--process-table-size must be at least 1024")
        if self.executable_sha256_max_bytes < 0:
            raise UsageError("--executable-sha256-max-bytes must not be negative")
        if self.executable_cache_entries < 1:
            raise UsageError("--executable-cache-entries must be at least 1")
        if not 0 <= self.executable_wait_ms <= 1000:
            raise UsageError("--executable-wait-ms must be between 0 and 1000")
