"""Every attribute key otel-exec sends, in one table (docs/attributes.md).

Each key is spelled here and nowhere else in otel_exec/: the encoder and the
resource take the names below, and TABLE holds, for each key, the ExecEvent
fields (docs/fields.md) whose values it carries and without which it is
left out. A field is unavailable when --no-field switched off its group
(config.FIELD_GROUPS: group -> fields) or the BCC backend could not verify
it; its attributes are then not sent at all, rather than sent empty.
A key outside `otel_exec.` is a key of the OpenTelemetry semantic
conventions registry, version SEMCONV_VERSION, of the type the registry
gives it (tests/export/test_semconv_registry.py checks each one against the
opentelemetry-semantic-conventions package); every other key lives under
`otel_exec.`.
"""
from __future__ import annotations

# The registry version the keys below follow; records carry its schema URL.
SEMCONV_VERSION = "1.44.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

# attribute key -> the ExecEvent fields that, when unavailable, leave it out
TABLE: dict[str, tuple[str, ...]] = {}


def _key(key: str, fields: str) -> str:
    """A row of the table: the key, and the fields (space-separated) whose
    values it carries; "" for a key that is always sent."""
    TABLE[key] = tuple(fields.split())
    return key


# An exec's ids, per exec.
PID = _key("process.pid", "")
PARENT_PID = _key("process.parent_pid", "ppid host_ppid")
VPID = _key("process.vpid", "pid")
VPPID = _key("otel_exec.vppid", "ppid")
CREATION_TIME = _key("process.creation.time", "process_start_time")
EXEC_ID = _key("otel_exec.exec_id", "exec_id")
PARENT_EXEC_ID = _key("otel_exec.parent_exec_id", "parent_exec_id")

# The executable image.
EXECUTABLE_PATH = _key("process.executable.path", "pathname")
EXECUTABLE_NAME = _key("process.executable.name", "pathname")
FILE_INODE = _key("file.inode", "inode")
FILE_MODE = _key("file.mode", "inode_mode")
FILE_CHANGED = _key("file.changed", "ctime")
FILE_DEV = _key("otel_exec.file.dev", "dev")
FILE_TYPE = _key("otel_exec.file.type", "inode_mode")
CMDPATH = _key("otel_exec.cmdpath", "")
INTERP = _key("otel_exec.interp", "interp")
INTERPRETER_PATH = _key("otel_exec.interpreter.path", "interpreter_pathname")
INTERPRETER_DEV = _key("otel_exec.interpreter.dev", "interpreter_dev")
INTERPRETER_INODE = _key("otel_exec.interpreter.inode", "interpreter_inode")
INTERPRETER_CHANGED = _key("otel_exec.interpreter.changed", "interpreter_ctime")

# Who runs it, and where: user, working directory, cgroup, container, namespaces.
USER_ID = _key("process.user.id", "euid")
REAL_USER_ID = _key("process.real_user.id", "uid")
# The registry has user ids only: group ids are ours.
GROUP_ID = _key("otel_exec.process.group.id", "egid")
REAL_GROUP_ID = _key("otel_exec.process.real_group.id", "gid")
WORKING_DIRECTORY = _key("process.working_directory", "pwd")
CGROUP = _key("process.linux.cgroup", "cgroup_path")
CGROUP_ID = _key("otel_exec.cgroup.id", "")
CONTAINER_ID = _key("container.id", "container_id")
MOUNT_NS = _key("otel_exec.mount_ns", "mount_ns")
PID_NS = _key("otel_exec.pid_ns", "pid_ns")
HOSTNAME = _key("otel_exec.uts.hostname", "hostname")

# How it was started: the task's names before and after, its stdin, a kernel-started exec.
COMM = _key("otel_exec.comm", "")
PREV_COMM = _key("otel_exec.prev_comm", "prev_comm")
INTERACTIVE = _key("process.interactive", "stdin_type")
STDIN_TYPE = _key("otel_exec.stdin.type", "stdin_type")
STDIN_PATH = _key("otel_exec.stdin.path", "stdin_path")
INVOKED_FROM_KERNEL = _key("otel_exec.invoked_from_kernel", "")

# What the kernel side cut or counted.
ENV_COUNT = _key("otel_exec.env_count", "envc")
ARGV_TRUNCATED = _key("otel_exec.argv_truncated", "argv_truncated")
ENV_TRUNCATED = _key("otel_exec.env_truncated", "env_truncated")
PATH_TRUNCATED = _key("otel_exec.path_truncated", "")

# The command line, its sampling and what is missing.
COMMAND = _key("process.command", "argv")
COMMAND_ARGS = _key("process.command_args", "argv")
ARGS_COUNT = _key("process.args_count", "argc")
SAMPLE_RATE = _key("otel_exec.sample_rate", "")
UNAVAILABLE = _key("otel_exec.unavailable", "")

# The environment: one attribute per key, named ENV_PREFIX + the key, and
# the entries without "=" in one (an empty env list leaves out both).
ENV_PREFIX = "process.environment_variable."
ENV_WITHOUT_VALUE = _key("otel_exec.env_entries_without_value", "")
# The variables beyond --env-attributes, as KEY=VALUE in one array (shape.py).
ENV_REST = _key("otel_exec.env.rest", "")

# What the record's shape cut to fit its limits (shape.py): the keys whose
# values were shortened or left out, "process.environment_variable" for the
# environment, "body" for the command line in the body.
RECORD_CUT = _key("otel_exec.record.cut", "")

# What the executed file is by content (otel_exec.host.executables): registry
# keys for the build ids (they join with OpenTelemetry profiles), otel_exec.*
# for the rest; a `#!` script's own, beside its interpreter's.
BUILD_ID_GNU = _key("process.executable.build_id.gnu", "executable_identity")
BUILD_ID_GO = _key("process.executable.build_id.go", "executable_identity")
BUILD_ID_HTLHASH = _key("process.executable.build_id.htlhash", "executable_identity")
EXECUTABLE_SHA256 = _key("otel_exec.executable.sha256", "executable_identity")
EXECUTABLE_SIZE = _key("otel_exec.executable.size", "executable_identity")
EXECUTABLE_IDENTITY_STATUS = _key("otel_exec.executable.identity_status", "executable_identity")
EXECUTABLE_IDENTITY_LATE = _key("otel_exec.executable.identity_late", "")  # spans only
SCRIPT_SHA256 = _key("otel_exec.script.sha256", "executable_identity script_identity")
SCRIPT_HTLHASH = _key("otel_exec.script.htlhash", "executable_identity script_identity")
SCRIPT_SIZE = _key("otel_exec.script.size", "executable_identity script_identity")
SCRIPT_IDENTITY_STATUS = _key("otel_exec.script.identity_status", "executable_identity script_identity")


# How an image ended: on its span, and on its exit record. The exit code
# of a signal death is 128 + the signal, as shells report it.
ENDED_BY = _key("otel_exec.span.ended_by", "")
INCOMPLETE = _key("otel_exec.span.incomplete", "")
EXIT_SIGNAL = _key("otel_exec.exit.signal", "")
EXIT_CODE = _key("process.exit.code", "")
ERROR_TYPE = _key("error.type", "")
DURATION = _key("otel_exec.process.duration", "")  # exit records: seconds from exec (or start) to end
TRACEPARENT_UNTRUSTED = _key("otel_exec.traceparent.untrusted", "")

# A process found in /proc at start-up: where it was read.
OBSERVED_FROM = _key("otel_exec.observed_from", "")

# An interval no agent watched.
GAP_START = _key("otel_exec.gap.start", "")
GAP_END = _key("otel_exec.gap.end", "")
GAP_SECONDS = _key("otel_exec.gap.seconds", "")
GAP_CLOCK_STEP = _key("otel_exec.gap.clock_step_seconds", "")

# The resource of every request (and of the agent's own metrics).
SERVICE_NAME = _key("service.name", "")
SERVICE_VERSION = _key("service.version", "")
SERVICE_INSTANCE_ID = _key("service.instance.id", "")
HOST_NAME = _key("host.name", "")
HOST_ID = _key("host.id", "")
OS_TYPE = _key("os.type", "")
HOST_ARCH = _key("host.arch", "")
SDK_NAME = _key("telemetry.sdk.name", "")
SDK_LANGUAGE = _key("telemetry.sdk.language", "")
SDK_VERSION = _key("telemetry.sdk.version", "")
DISTRO_NAME = _key("telemetry.distro.name", "")
DISTRO_VERSION = _key("telemetry.distro.version", "")

_left_out: dict[tuple[str, ...], frozenset[str]] = {}


def left_out(unavailable: tuple[str, ...]) -> frozenset[str]:
    """The keys that carry one of these unavailable fields: a handful of
    distinct sets per run, each computed once."""
    keys = _left_out.get(unavailable)
    if keys is None:
        gone = set(unavailable)
        keys = frozenset(key for key, fields in TABLE.items() if gone.intersection(fields))
        if len(_left_out) < 256:
            _left_out[unavailable] = keys
    return keys
