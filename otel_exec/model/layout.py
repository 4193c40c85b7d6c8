"""Python mirror of bpf/otel_exec.h, the record layout.

tests/model/test_layout_registry.py compares every member offset and struct size
below with the BTF of the header compiled for the BPF target, so a change to
the header that is not made here fails the tests instead of silently
shifting fields.
"""
from __future__ import annotations

import struct

from otel_exec.model import counters

ABI_VERSION = 1

REC_EXEC = 1
REC_EXIT = 3
REC_UNREPORTED_EXEC = 4

COMM_LEN = 16
HOSTNAME_LEN = 65
ARGS_MAX = 128 * 1024
ARGV_RING_FULL_MAX = 1024  # argv bytes kept by an exec record cut for a full ring
CGROUP_DEPTH_MAX = 16  # cgroup levels the kernel walks (and --cgroup can match)

# enum oe_str: the variable-length strings that follow an exec record, in order.
STR_NAMES = ("cmdpath", "interp", "pathname", "interpreter", "stdin", "pwd", "cgroup", "argv", "env")
(STR_CMDPATH, STR_INTERP, STR_PATHNAME, STR_INTERPRETER, STR_STDIN, STR_PWD, STR_CGROUP,
 STR_ARGV, STR_ENV) = range(len(STR_NAMES))

F_ARGV_TRUNCATED = 1 << 0
F_ENV_TRUNCATED = 1 << 1
F_INVOKED_FROM_KERNEL = 1 << 2
F_ARGV_UNREADABLE = 1 << 3
F_ENV_UNREADABLE = 1 << 4
F_CMDPATH_TRUNCATED = 1 << 5
F_INTERP_TRUNCATED = 1 << 6
F_PREV_COMM_KNOWN = 1 << 7
F_PARENT_EXE_UNKNOWN = 1 << 23
F_SAMPLED = 1 << 24
F_PATH_SHIFT = 8
F_PATH_BITS = 3
PF_TRUNCATED = 1
PF_DELETED = 2
PF_DETACHED = 4
# OE_PATH_*: index of a resolved path in the per-path flag bits, named as
# the event field it fills.
PATH_FIELDS = ("pathname", "interpreter_pathname", "stdin_path", "pwd", "cgroup_path")

# enum oe_counter, in order (names: otel_exec/model/counters.py).
COUNTER_NAMES = (
    counters.EXEC_SEEN,
    counters.EXEC_FILTERED,
    counters.EXEC_SAMPLED_OUT,
    counters.LOST_EXEC_RINGBUF_FULL,
    counters.LOST_EXIT_RINGBUF_FULL,
    counters.LOST_EXEC_NO_SCRATCH,
    counters.LOST_UNREPORTED_RINGBUF_FULL,
    counters.CUT_ARGV,
    counters.CUT_ENV,
    counters.CUT_PATH,
    counters.CUT_STRING,
    counters.READ_ERROR,
    counters.CUT_RING_FULL,
)

# Filter maps: their size, and the OE_MATCH_* bits of their values.
FILTER_ENTRIES_MAX = 256
MATCH_INCLUDE = 1
MATCH_EXCLUDE = 2
MATCH_KEEP = 4
# path_prefixes keys (struct oe_prefix_key): a prefix has at most
# PREFIX_LEN - 1 bytes, the bytes of a path the kernel compares.
PREFIX_LEN = 256

# oe_config.skip
SKIP_STDIN = 1 << 0
SKIP_INTERPRETER = 1 << 1
SKIP_PATHS = 1 << 2

_FILE_ID = (("inode", "Q"), ("ctime_ns", "Q"), ("dev", "I"), ("mode", "I"))


def _file_id(prefix: str) -> list[tuple[str, str]]:
    return [(f"{prefix}.{name}", fmt) for name, fmt in _FILE_ID]


_HEADER = [("hdr.type", "I"), ("hdr.size", "I"), ("hdr.boot_ns", "Q")]

# (member, struct format) in declaration order; "<" layouts have no implicit
# padding, so explicit pad members keep C's alignment.
EXEC_MEMBERS: list[tuple[str, str]] = [
    *_HEADER,
    ("start_boottime_ns", "Q"),
    ("parent_start_boottime_ns", "Q"),
    ("host_pid", "I"), ("host_tid", "I"), ("host_ppid", "I"), ("old_tid", "I"),
    ("image_ppid", "I"),
    ("pid", "I"), ("tid", "I"), ("ppid", "I"),
    ("cgroup_id", "Q"),
    *_file_id("file"),
    *_file_id("interpreter"),
    *_file_id("stdin"),
    *_file_id("parent_exe"),
    ("stdin_fs_magic", "I"),
    ("uid", "I"), ("gid", "I"), ("euid", "I"), ("egid", "I"),
    ("mount_ns", "I"), ("pid_ns", "I"),
    ("argc", "I"), ("envc", "I"),
    ("flags", "I"),
    *[(f"str_len[{i}]", "I") for i in range(len(STR_NAMES))],
    ("comm", f"{COMM_LEN}s"),
    ("prev_comm", f"{COMM_LEN}s"),
    ("hostname", f"{HOSTNAME_LEN}s"),
    ("_pad", "3s"),
]

EXIT_MEMBERS: list[tuple[str, str]] = [
    *_HEADER,
    ("start_boottime_ns", "Q"),
    ("pid", "I"),
    ("exit_code", "I"),
    ("comm", f"{COMM_LEN}s"),
]

UNREPORTED_EXEC_MEMBERS: list[tuple[str, str]] = [
    *_HEADER,
    ("start_boottime_ns", "Q"),
    ("pid", "I"),
    ("_pad", "I"),
]

PREFIX_KEY_MEMBERS: list[tuple[str, str]] = [
    ("prefixlen", "I"),
    ("data", f"{PREFIX_LEN}s"),
]

CONFIG_MEMBERS: list[tuple[str, str]] = [
    ("self_tgid", "I"),
    ("argv_max", "I"),
    ("env_max", "I"),
    ("host_pid_ns", "I"),
    ("filter_comm_include", "B"),
    ("filter_comm_exclude", "B"),
    ("filter_uid", "B"),
    ("container_only", "B"),
    ("wakeup_bytes", "I"),
    ("filter_cgroup", "B"),
    ("filter_path", "B"),
    ("keep_comm", "B"),
    ("keep_uid", "B"),
    ("keep_path", "B"),
    ("_pad", "3s"),
    ("sample_rate", "I"),
    ("skip", "I"),
]


def _struct(members: list[tuple[str, str]]) -> struct.Struct:
    return struct.Struct("<" + "".join(fmt for _, fmt in members))


def member_offsets(members: list[tuple[str, str]]) -> dict[str, int]:
    """Offset of every member, as the C compiler lays it out."""
    offsets: dict[str, int] = {}
    pos = 0
    for name, fmt in members:
        offsets[name] = pos
        pos += struct.calcsize("<" + fmt)
    return offsets


EXEC = _struct(EXEC_MEMBERS)
_SHARED_FROM = [name for name, _ in EXEC_MEMBERS].index("cgroup_id")
EXEC_SHARED_OFFSET = 64  # OE_EXEC_SHARED_OFFSET: where the per-process fields end
EXEC_HEAD = _struct(EXEC_MEMBERS[:_SHARED_FROM])  # the per-process fields
EXEC_SHARED = _struct(EXEC_MEMBERS[_SHARED_FROM:])  # the rest, before the strings
EXIT = _struct(EXIT_MEMBERS)
UNREPORTED_EXEC = _struct(UNREPORTED_EXEC_MEMBERS)
PREFIX_KEY = _struct(PREFIX_KEY_MEMBERS)
CONFIG = _struct(CONFIG_MEMBERS)
HEADER = _struct(_HEADER)

# Index of the first str_len entry in an unpacked EXEC tuple.
EXEC_STR_LEN_INDEX = [name for name, _ in EXEC_MEMBERS].index("str_len[0]")
