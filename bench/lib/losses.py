"""Which of the agent's final-line counters count lost records: the one place
the benchmark matches counter names (the agent's own list is
otel_exec.export.telemetry.loss_reason, which needs the agent's
dependencies; this runs under any python3)."""
from __future__ import annotations


def kernel_losses(counters: dict[str, int]) -> dict[str, int]:
    """The kernel side's loss counters (lost_*): execs that never reached the agent."""
    return {k: v for k, v in counters.items() if k.startswith("lost_")}


def loss_counters(counters: dict[str, int]) -> dict[str, int]:
    """Every counter of the agent's final line that counts lost records
    (the same set its otel_exec.lost metric and its WARNING line use)."""
    kernel = kernel_losses(counters)
    return {k: v for k, v in counters.items()
            if k in kernel or k in ("decode_errors", "process_table_evicted")
            or (k.endswith(("_failed", "_rejected", "_queue_overflow", "_spool_evicted", "_unsent", "_dropped_disk_full",
                            "_spool_corrupt", "_spool_segment_lost")) and not k.endswith("_spool_write_failed"))}


def losses_text(counters: dict[str, int]) -> str:
    """The kernel's counters and spool eviction by name, the others summed up."""
    losses = loss_counters(counters)
    named = [*kernel_losses(losses)] + [k for k in ("logs_spool_evicted",) if k in losses]
    others = {k: v for k, v in losses.items() if k not in named}
    text = ", ".join(f"{k}={losses[k]}" for k in named)
    nonzero = {k: v for k, v in others.items() if v}
    text += "; " + (", ".join(f"{k}={v}" for k, v in nonzero.items()) if nonzero
                    else f"{len(others)} other loss counters ({', '.join(others)}) 0")
    return text


# The logs records the agent read but did not deliver (export failed, queue
# full, unsent at exit): the storm's losses on the export side.
EXPORT_LOSS_KEYS = ("logs_failed", "logs_queue_overflow", "logs_unsent")
