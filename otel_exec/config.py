"""Agent configuration: one dataclass, built from the command line, the
OTEL_EXEC_* variables and the configuration file (docs/configuration.md)."""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

from otel_exec.errors import UsageError
from otel_exec.export.otlp import shape
from otel_exec.model.events import ExecEvent
from otel_exec.model.layout import ARGS_MAX, FILTER_ENTRIES_MAX, PREFIX_LEN

if TYPE_CHECKING:
    from otel_exec.host.cgroups import Cgroup

ENV_CAPTURE_MODES = ("none", "redacted", "all")
FORMATS = ("pretty", "jsonl")
# --span-attributes: which of an exec's attributes its span carries (encode.span_set).
SPAN_ATTRIBUTE_SETS = ("slim", "full")
# --record-attributes: whether an exec record also repeats what its other
# attributes already say exactly (shape.RecordLimits.repeat_derived).
RECORD_ATTRIBUTE_SETS = ("compact", "full")
EXPORTERS = ("console", "otlp")
BACKENDS = ("auto", "core", "bcc")
# The ring each backend gets without --ringbuf-bytes (docs/operations.md#sizing):
# sized to absorb tests/e2e/test_hostile.py's burst with the reader that
# drains it. BCC's reader joins an exec's two records in Python and needs the
# larger ring for it; so does CO-RE's pure-Python reference reader (the C
# extension not built, or OTEL_EXEC_NATIVE=0), which spends several times
# the C reader's CPU per record and so falls behind sooner when other work
# takes the CPUs during a burst.
RINGBUF_BYTES_DEFAULT = {"core": 2 * 1024 * 1024, "bcc": 4 * 1024 * 1024}
RINGBUF_BYTES_CORE_PYTHON_READER = 8 * 1024 * 1024
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
    span_attributes: str = "slim"  # the exec's attributes on spans: slim or full (encode.span_set)
    exit_records: bool = True  # a log record per image end (--no-exit-records)
    # The shape of a record (export/otlp/shape.py): the budget that keeps
    # every record within Loki's default limits.
    record_max_attributes: int = shape.DEFAULT_MAX_ATTRIBUTES
    record_max_bytes: int = shape.DEFAULT_MAX_BYTES
    env_attributes: int = shape.RecordLimits.env_attributes
    record_attributes: str = "compact"  # "full": derivable attributes sent too (RECORD_ATTRIBUTE_SETS)
    body_max_bytes: int = shape.RecordLimits.body_max_bytes
    spool_dir: str | None = "/var/lib/otel-exec"  # None: records wait in memory only
    spool_max_bytes: int = 1 << 30
    spool_full_action: str = "drop-oldest"  # which records give way when disk and memory are full
    spool_allow_group_read: bool = False  # accept a spool directory its group may read (0750)
    user: str | None = None  # run as this user once attached (--user)
    stats_interval: float | None = None  # seconds between summaries on stderr
    shutdown_grace: float = 10.0  # seconds to flush queues on stop
    format: str | None = None  # None: pretty on a TTY, jsonl otherwise
    tree: bool = False  # pretty: indent by lineage (--tree)
    color: str = "auto"  # pretty: auto (a terminal without NO_COLOR), always, never
    verbose: bool = False  # every counter on stop, also on a terminal
    output: str | None = None  # None: stdout
    duration: float | None = None
    ready_file: str | None = None
    env_capture: str = "redacted"
    redact_patterns: list[str] = field(default_factory=list)
    redact_allow: list[str] = field(default_factory=list)  # values the built-in rules leave alone
    env_allow: list[str] = field(default_factory=list)
    trust_traceparent: str = "any"  # whose TRACEPARENT parents spans (spans.TraceparentTrust)
    # The variables carrying the W3C context (traceparent.TraceContextCarrier).
    traceparent_env: str = "TRACEPARENT"
    tracestate_env: str = "TRACESTATE"
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
    # parents forking together). All of it is resident (mapped once, see
    # ringbuf.py): this is the largest single item of the agent's RSS.
    # None: the backend's own default (ring_bytes).
    ringbuf_bytes: int | None = None
    # The reader sleeps this long between drains unless the kernel wakes it
    # because wakeup_fraction of the ring is full: batching wake-ups is what
    # keeps the per-exec kernel cost low. Each drain also has a fixed cost
    # (the wake-up, a spool write per signal, the drain's code and data
    # brought back into the caches) that only more records per drain
    # amortise at low exec rates; half the default logs delay
    # (OTEL_BLRP_SCHEDULE_DELAY, counted from the exec, so a record read
    # late is still sent by its event plus the delay) leaves the send the
    # other half.
    poll_interval: float = 0.5
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
    # --cgroup resolved, by cgroups() (validate's call, in a start).
    _cgroups: tuple[Cgroup, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def filtered(self) -> bool:
        """Whether a filter chooses which execs are reported."""
        return bool(self.comm or self.exclude_comm or self.path_prefix or self.uid or self.container_only
                    or self.cgroup)

    def cgroups(self) -> tuple[Cgroup, ...]:
        """The --cgroup values resolved (host.cgroups.resolve), once: validate
        reports one that does not exist, the kernel's filter takes their ids
        and the selection of the processes running at start their paths, so
        all three mean the same cgroups."""
        if self._cgroups is None:
            resolved: tuple[Cgroup, ...] = ()
            if self.cgroup:
                from otel_exec.host.cgroups import resolve  # only --cgroup needs it

                resolved = tuple(resolve(spec) for spec in self.cgroup)
            self._cgroups = resolved  # only once every one is resolved: a failure is raised again
        return self._cgroups

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
        unsupported = self.bcc_unsupported() if backend == "bcc" else []
        if unsupported:
            raise UsageError(f"{', '.join(unsupported)}: not supported by the BCC backend ({why}); "
                             "the CO-RE backend needs kernel BTF (docs/backends.md)")

    def ring_bytes(self, backend: str, native_reader: bool = True) -> int:
        """The ring buffer size for backend ("core" or "bcc"); native_reader:
        whether CO-RE's records are drained in C (else its pure-Python
        reference reads them)."""
        if self.ringbuf_bytes:
            return self.ringbuf_bytes
        if backend == "core" and not native_reader:
            return RINGBUF_BYTES_CORE_PYTHON_READER
        return RINGBUF_BYTES_DEFAULT[backend]

    def validate(self) -> None:
        if self.env_capture not in ENV_CAPTURE_MODES:
            raise UsageError(f"--env-capture must be one of {', '.join(ENV_CAPTURE_MODES)}")
        from otel_exec.lineage.spans import TraceparentTrust
        from otel_exec.lineage.traceparent import TraceContextCarrier

        TraceparentTrust.parse(self.trust_traceparent)
        TraceContextCarrier(self.traceparent_env, self.tracestate_env)
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
        if self.record_max_attributes < 64:
            raise UsageError("--record-max-attributes must be at least 64 (an exec's attributes without its "
                             "environment)")
        if self.record_max_bytes < shape.MIN_MAX_BYTES:
            raise UsageError(f"--record-max-bytes must be at least {shape.MIN_MAX_BYTES} (an exec's attributes "
                             "without argv and environment, at their longest)")
        if self.env_attributes < 0 or self.body_max_bytes < 0:
            raise UsageError("--env-attributes and --body-max-bytes must not be negative")
        rb = self.ringbuf_bytes
        if rb is not None and (rb < 4096 * 16 or rb & (rb - 1)):
            raise UsageError("--ringbuf-bytes must be a power of two of at least 64 KiB")
        if rb is not None and rb < 4 * (ARGS_MAX * 2 + 64 * 1024):
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
        self.cgroups()  # a cgroup that does not exist fails now, not after attaching
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


# --------------------------------------------------------------------------- settings from a file and the environment
#
# Every option of a subcommand can also come from an OTEL_EXEC_<DEST>
# variable and from key <dest> of the YAML configuration file; the names are
# derived from the argparse actions themselves, so the flag, the variable
# and the key of one setting cannot drift apart (docs/configuration.md is
# checked against settings_table() by a test). Precedence: flag, then
# variable, then file, then the built-in default. The standard OTEL_*
# variables come below all of these: an otel-exec setting overrides them.

DEFAULT_CONFIG_FILE = "/etc/otel-exec/config.yaml"
CONFIG_ENV = "OTEL_EXEC_CONFIG"
ENV_PREFIX = "OTEL_EXEC_"
CONFIG_FILE_MAX_BYTES = 1 << 20
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def settings(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options of a subcommand that a file or variable may set: all
    but --help, --version and --config itself."""
    return [a for a in sub._actions
            if a.option_strings and a.dest not in ("help", "version", "config")
            and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


def env_name(action: argparse.Action) -> str:
    return ENV_PREFIX + action.dest.upper()


def file_key(action: argparse.Action) -> str:
    return action.dest


def is_switch(action: argparse.Action) -> bool:
    return isinstance(action, argparse._StoreTrueAction)


def is_repeatable(action: argparse.Action) -> bool:
    return isinstance(action, argparse._AppendAction)


def _convert(action: argparse.Action, raw: str, source: str) -> object:
    """One value as the flag would take it: its type, then its choices."""
    flag = action.option_strings[-1]
    try:
        value = action.type(raw) if callable(action.type) else raw
    except (TypeError, ValueError):
        kind = getattr(action.type, "__name__", "value").lstrip("_")
        raise UsageError(f"{source}: {raw!r} is not a valid {kind} (as for {flag})") from None
    if action.choices is not None and value not in action.choices:
        raise UsageError(f"{source}: {raw!r} is not one of {', '.join(map(str, action.choices))} (as for {flag})")
    return value


def _scalar(value: object, source: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UsageError(f"{source}: expected a string or number, got {type(value).__name__} {value!r}")
    return str(value)


def from_env(action: argparse.Action, raw: str, source: str) -> object:
    """An OTEL_EXEC_* value: a switch is true/false; a repeatable option
    takes comma-separated values, or a YAML/JSON list for values that hold
    a comma ('["a,b", "c"]')."""
    if is_switch(action):
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise UsageError(f"{source}: {raw!r} is neither true nor false")
    if is_repeatable(action):
        if raw.lstrip().startswith("["):
            items = _yaml_load(raw, source)
            if not isinstance(items, list):
                raise UsageError(f"{source}: not a list")
        else:
            items = [v for v in raw.split(",") if v]
        return [_convert(action, _scalar(v, source), source) for v in items]
    return _convert(action, raw, source)


def from_file(action: argparse.Action, value: object, source: str) -> object:
    """A configuration-file value: a boolean for a switch, a list (or one
    value) for a repeatable option, a string or number otherwise."""
    if is_switch(action):
        if not isinstance(value, bool):
            raise UsageError(f"{source}: expected true or false, got {value!r}")
        return value
    if is_repeatable(action):
        items = value if isinstance(value, list) else [value]
        return [_convert(action, _scalar(v, source), source) for v in items]
    if isinstance(value, list) and action.type is csv:
        value = ",".join(_scalar(v, source) for v in value)
    return _convert(action, _scalar(value, source), source)


def csv(value: str) -> list[str]:
    """A comma-separated flag value (--exporter, --no-field)."""
    return [v for v in value.split(",") if v]


def _yaml_load(text: str, source: str) -> object:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UsageError(f"{source}: not valid YAML: {e}") from None


def read_config_file(path: str) -> dict[str, object]:
    """The YAML mapping in `path`, opened as safefs checks a root agent's
    input: every directory on the way and the file itself belong to root
    (or the agent's user), no other user can write to them, a symlink is
    followed only if root owns it. Another user who could edit it could
    set --endpoint or --env-capture all."""
    from otel_exec.host import safefs

    data = safefs.read_file(path, CONFIG_FILE_MAX_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    doc = _yaml_load(text, path)
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise UsageError(f"{path}: must be a mapping of setting names to values (docs/configuration.md)")
    return doc


def config_file_path(given: str | None, environ: Mapping[str, str]) -> tuple[str | None, bool]:
    """(path, required): --config, else $OTEL_EXEC_CONFIG (both must
    exist), else the default path when it exists; '' (empty) reads none."""
    path = given if given is not None else environ.get(CONFIG_ENV)
    if path is not None:
        return path or None, True
    return DEFAULT_CONFIG_FILE, False


def layered(sub: argparse.ArgumentParser, args: argparse.Namespace, given: set[str],
            file_values: Mapping[str, object], file_name: str, environ: Mapping[str, str]) -> argparse.Namespace:
    """`args` with each option not given as a flag taken from its
    OTEL_EXEC_* variable, else from the configuration file, else left at
    its default."""
    options = settings(sub)
    known = {file_key(a): a for a in options}
    unknown = sorted(set(file_values) - set(known))
    if unknown:
        import difflib  # only for this message: not imported on every start

        hints = [f"{k!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, known, 1)) else "")
                 for k in unknown]
        raise UsageError(f"{file_name}: unknown setting {', '.join(hints)}; the settings are listed in "
                         "docs/configuration.md")
    for action in options:
        if action.dest in given:
            continue
        var = env_name(action)
        if var in environ:
            setattr(args, action.dest, from_env(action, environ[var], var))
        elif file_key(action) in file_values:
            setattr(args, action.dest, from_file(action, file_values[file_key(action)],
                                                 f"{file_name}: {file_key(action)}"))
    return args


def settings_table(sub: argparse.ArgumentParser) -> str:
    """The Markdown table of docs/configuration.md: one row per option, its
    meaning the option's doc (the longer text) or else its --help line."""
    rows = ["| Flag | Environment variable | File key | Default | Meaning |", "|---|---|---|---|---|"]
    for action in settings(sub):
        flag = action.option_strings[-1] + ("" if is_switch(action) else f" {action.metavar or action.dest.upper()}")
        if is_switch(action):
            default = "false"
        elif action.default in (None, []) or action.default is argparse.SUPPRESS:
            default = ""
        else:
            default = str(action.default)
        text = getattr(action, "doc", None) or action.help or ""
        meaning = " ".join(text.split()).replace("|", "\\|") % {"default": action.default}
        kind = " (repeatable)" if is_repeatable(action) else ""
        rows.append(f"| `{flag}`{kind} | `{env_name(action)}` | `{file_key(action)}` | {default and f'`{default}`'} "
                    f"| {meaning} |")
    return "\n".join(rows) + "\n"


def _given(parser: argparse.ArgumentParser, sub: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The dests of `sub`'s options given on the command line: a second
    parse with no defaults leaves out every option not given."""
    saved = [(a, a.default) for a in sub._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[name]


def parse_layered(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                  environ: Mapping[str, str]) -> argparse.Namespace:
    """parse_args() with the OTEL_EXEC_* variables and the configuration
    file filling in the options not given as flags."""
    args = parser.parse_args(argv)
    sub = subcommand(parser, args.command)
    if not any(a.dest == "config" for a in sub._actions):
        return args
    path, required = config_file_path(args.config, environ)
    file_values: Mapping[str, object] = {}
    if path is not None and (required or os.path.lexists(path)):
        file_values = read_config_file(path)
    return layered(sub, args, _given(parser, sub, argv), file_values, path or "", environ)


# --------------------------------------------------------------------------- OTEL_*_EXPORTER, OTEL_SDK_DISABLED

SIGNALS = ("logs", "traces", "metrics")
SIGNAL_EXPORTERS = ("otlp", "console", "none")


def signal_exporters(chosen: tuple[str, ...], environ: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """The exporters each signal goes to. OTEL_SDK_DISABLED=true: none for
    every signal. Else OTEL_<SIGNAL>_EXPORTER when set (otlp, console or
    none; a comma-separated list as the SDKs take it) is more specific than
    `chosen` (--exporter) and wins; otherwise logs go where --exporter says,
    traces and metrics to otlp if --exporter has it (the console shows exec
    records, not spans)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return dict.fromkeys(SIGNALS, ())
    result = {}
    for signal in SIGNALS:
        var = f"OTEL_{signal.upper()}_EXPORTER"
        raw = environ.get(var, "").strip()
        if not raw:
            result[signal] = chosen if signal == "logs" else tuple(n for n in chosen if n == "otlp")
            continue
        names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
        for name in names:
            if name not in SIGNAL_EXPORTERS:
                raise UsageError(f"{var}={raw!r}: {name!r} is not one of {', '.join(SIGNAL_EXPORTERS)}")
        if "none" in names and len(names) > 1:
            raise UsageError(f"{var}={raw!r}: none cannot be combined with an exporter")
        if signal == "traces" and "console" in names:
            raise UsageError(f"{var}={raw!r}: the console shows exec records, not spans; use otlp or none")
        result[signal] = tuple(n for n in names if n != "none")
    return result


LOG_LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40}


def log_level(environ: Mapping[str, str]) -> tuple[int, str | None]:
    """(level, warning) of OTEL_LOG_LEVEL for every line on stderr (the
    agent's and its libraries'): info unless set, the specification's
    default; an unknown value is warned about and ignored, as it asks."""
    raw = environ.get("OTEL_LOG_LEVEL", "").strip().lower()
    if not raw:
        return LOG_LEVELS["info"], None
    if raw not in LOG_LEVELS:
        return LOG_LEVELS["info"], f"OTEL_LOG_LEVEL={raw!r} is not one of debug, info, warn, error; using info"
    return LOG_LEVELS[raw], None
