"""Python mirror of bpf/otel_exec_bcc.h: the BCC program's records, the
`procs` entries and the counters.

tests/model/test_layout_registry.py checks every member offset and struct size
below against the header compiled for the BPF target, and the constants
against its #defines.
"""
from __future__ import annotations

import struct

from otel_exec.model import counters
from otel_exec.model.layout import COMM_LEN

REC_ARGS, REC_PREP, REC_EXEC, REC_EXIT, REC_DISCARD = 11, 12, 13, 14, 15
STR_MAX = 4096  # cmdpath and interp, NUL included

# ARGS flags (OE_A_*)
A_ARGV_CUT, A_ENV_CUT, A_ARGV_UNREADABLE, A_ENV_UNREADABLE, A_ARGC_UNKNOWN, A_ENVC_UNKNOWN = 1, 2, 4, 8, 16, 32
# EXEC flags (OE_E_*)
E_HOST_PID_NS, E_PARENT_KTHREAD, E_IMAGE_KNOWN, E_START_KNOWN, E_FILENAME_CUT = 1, 2, 4, 8, 16
# EXEC parent_kind (OE_P_*)
P_UNKNOWN, P_ALIVE, P_PARENT_OF, P_PREEXISTING = 0, 1, 2, 3
# EXIT flags
X_START_KNOWN = 1

# enum oe_counter, in order (names: otel_exec/model/counters.py).
COUNTER_NAMES = (
    counters.EXEC_SEEN,
    counters.EXEC_FILTERED,
    counters.LOST_EXEC_RINGBUF_FULL,
    counters.LOST_ARGS_RINGBUF_FULL,
    counters.LOST_PREP_RINGBUF_FULL,
    counters.LOST_EXIT_RINGBUF_FULL,
    counters.LOST_DISCARD_RINGBUF_FULL,
    counters.LOST_NO_SCRATCH,
    counters.CUT_ARGV,
    counters.CUT_ENV,
    counters.CUT_STRING,
    counters.READ_ERROR,
    counters.MAP_FULL_PROCS,
    counters.MAP_FULL_PENDING,
)

HDR_MEMBERS: list[tuple[str, str]] = [("hdr.type", "I"), ("hdr.size", "I"), ("hdr.boot_ns", "Q")]

# (member, struct format) in declaration order, as model/layout.py.
ARGS_MEMBERS: list[tuple[str, str]] = [
    *HDR_MEMBERS,
    ("tid", "I"), ("flags", "I"), ("argc", "I"), ("envc", "I"), ("argv_len", "I"), ("env_len", "I"),
    ("comm", f"{COMM_LEN}s"),
]

PREP_MEMBERS: list[tuple[str, str]] = [
    *HDR_MEMBERS,
    ("tid", "I"), ("interp_len", "I"),
    ("comm", f"{COMM_LEN}s"),
]

EXEC_MEMBERS: list[tuple[str, str]] = [
    *HDR_MEMBERS,
    ("cgroup_id", "Q"), ("args_ns", "Q"), ("prep_ns", "Q"), ("start_lo", "Q"), ("start_hi", "Q"),
    ("parent_image", "Q"), ("ppid_life", "Q"),
    ("host_pid", "I"), ("host_tid", "I"), ("old_tid", "I"), ("uid", "I"), ("gid", "I"), ("ppid", "I"),
    ("parent_kind", "I"), ("image_ppid", "I"), ("flags", "I"), ("filename_len", "I"),
    ("comm", f"{COMM_LEN}s"),
]

EXIT_MEMBERS: list[tuple[str, str]] = [
    *HDR_MEMBERS,
    ("start_lo", "Q"), ("start_hi", "Q"), ("pid", "I"), ("flags", "I"),
    ("comm", f"{COMM_LEN}s"),
]

DISCARD_MEMBERS: list[tuple[str, str]] = [
    *HDR_MEMBERS,
    ("tid", "I"), ("pad", "I"), ("args_ns", "Q"),
]

# Map entries: BCC builds their ctypes classes from the header when it
# compiles the program; user space reads procs' life and img_token and
# writes comm_filter's c by these member names.
PROC_MEMBERS: list[tuple[str, str]] = [
    ("life", "Q"), ("ppid_life", "Q"), ("start_lo", "Q"), ("start_hi", "Q"), ("img_token", "Q"),
    ("ppid", "I"), ("img_owner", "I"), ("flags", "I"), ("pad", "I"),
]

COMM_MEMBERS: list[tuple[str, str]] = [("c", f"{COMM_LEN}s")]


def _struct(members: list[tuple[str, str]]) -> struct.Struct:
    return struct.Struct("<" + "".join(fmt for _, fmt in members))


HDR = _struct(HDR_MEMBERS)
ARGS = _struct(ARGS_MEMBERS)
PREP = _struct(PREP_MEMBERS)
EXEC = _struct(EXEC_MEMBERS)
EXIT = _struct(EXIT_MEMBERS)
DISCARD = _struct(DISCARD_MEMBERS)
