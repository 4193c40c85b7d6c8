"""The kernel side's counters by name: the report() keys of both backends.

A name is spelled once here; each backend's list (layout.COUNTER_NAMES for
CO-RE, bcc/layout.COUNTER_NAMES for BCC) gives the order of its header's
enum oe_counter and uses the shared name where the two count the same thing.
A counter of records lost is named LOST + its reason: loss_reason() is the
one place that tells a loss counter apart.
"""
from __future__ import annotations

LOST = "lost_"

# Kept by both backends, with the same meaning.
EXEC_SEEN = "exec_seen"
EXEC_FILTERED = "exec_filtered"
LOST_EXEC_RINGBUF_FULL = LOST + "exec_ringbuf_full"
LOST_EXIT_RINGBUF_FULL = LOST + "exit_ringbuf_full"
CUT_ARGV = "cut_argv"
CUT_ENV = "cut_env"
CUT_STRING = "cut_string"  # cmdpath or interp longer than the string bound
READ_ERROR = "read_error"  # argv/env could not be read

# CO-RE only.
EXEC_SAMPLED_OUT = "exec_sampled_out"
LOST_EXEC_NO_SCRATCH = LOST + "exec_no_scratch"
LOST_UNREPORTED_RINGBUF_FULL = LOST + "unreported_ringbuf_full"
CUT_PATH = "cut_path"
# Exec records output without env, or with argv cut too, when the ring had no
# room for them whole.
CUT_RING_FULL = "cut_ring_full"

# BCC only: its exec is four records (ARGS, PREP, EXEC, DISCARD), each of
# which can miss the ring, and its lineage lives in kernel maps.
LOST_ARGS_RINGBUF_FULL = LOST + "args_ringbuf_full"
LOST_PREP_RINGBUF_FULL = LOST + "prep_ringbuf_full"
LOST_DISCARD_RINGBUF_FULL = LOST + "discard_ringbuf_full"
LOST_NO_SCRATCH = LOST + "no_scratch"
MAP_FULL_PROCS = "map_full_procs"
MAP_FULL_PENDING = "map_full_pending"


def loss_reason(name: str) -> str | None:
    """The otel_exec.lost reason of a kernel counter, None if it counts no loss."""
    return name.removeprefix(LOST) if name.startswith(LOST) else None
