"""--sample-rate: what one reported exec stands for.

The kernel draws (bpf/otel_exec.bpf.c, after the filters, only with N > 1):
it keeps 1 exec in N and marks the record OE_F_SAMPLED; an always-keep
option (--keep-comm, --keep-uid, --keep-path-prefix) keeps an exec without a
draw. Each reported exec says what it stands for, so that the sum over the
records estimates the execs that passed the filters (docs/fields.md).
"""
from __future__ import annotations


def stands_for(rate: int, kept_by_draw: bool) -> int | None:
    """ExecEvent.sample_rate with --sample-rate `rate` > 1: `rate` for an
    exec the draw kept, 1 for one an always-keep option kept."""
    return rate if kept_by_draw else 1
