"""The summary a person reads when the agent stops: run time, execs seen
and exported, then only the counters that are not zero, losses first, each
with what it means. The full counter set is the `stopped;` line
(--verbose, or stderr not a terminal) and the metrics. Every line goes
through the logging set-up: `otel-exec: LEVEL: MESSAGE`."""
from __future__ import annotations

import logging

from otel_exec.export.telemetry import loss_reason

# Its warnings (the losses) show whatever OTEL_LOG_LEVEL says: the logging
# set-up (cli.py) keeps this logger at warning or below.
log = logging.getLogger(__name__)

# Loss and trouble counters, by the suffix or name report() uses -> meaning.
_MEANINGS = {
    "lost_exec_ringbuf_full": "execs the kernel dropped: the ring buffer was full (raise --ringbuf-bytes)",
    "lost_exit_ringbuf_full": "exits the kernel dropped: the ring buffer was full (raise --ringbuf-bytes)",
    "lost_exec_no_scratch": "execs the kernel could not stage (no per-CPU scratch space)",
    "lost_unreported_ringbuf_full": "ends of filtered-out images the kernel dropped: full ring buffer",
    "decode_errors": "kernel records user space could not decode (a bug: report it)",
    "rejected": "records the collector refused for good (its reason was logged)",
    "failed": "records still failing at stop without a spool (--no-spool)",
    "queue_overflow": "records dropped: the memory queue was full (--no-spool)",
    "spool_evicted": "oldest spooled records dropped: the spool reached --spool-max-bytes",
    "dropped_disk_full": "records dropped: neither the disk nor the memory window took them",
    "spool_corrupt": "spooled records found corrupt and skipped",
    "spool_segment_lost": "spool segments lost (unreadable or removed)",
    "unsent": "records still unsent at stop (they stay in the spool for the next start)",
    "process_table_evicted": "process table entries evicted: lineage of old processes is lost (raise "
                             "--process-table-size)",
    "export_retries": "export requests that failed and were retried (collector down or slow)",
    "export_errors": "unexpected errors in the export loop (logged with a traceback)",
    "export_thread_restarts": "export threads found dead and started again",
    "spool_write_failed": "spool writes that failed (records kept in memory meanwhile)",
    "spool_cursor_reset": "spool cursors found invalid and reset",
    "spool_unsafe_files": "spool files refused as unsafe (owner, links, type)",
    "spool_foreign_files": "files in the spool directory that are not the agent's",
    "clock_steps": "wall-clock steps found since the last run",
    "read_error": "kernel reads that failed (fields left empty)",
    "cut_argv": "execs whose argv was cut at --argv-max-bytes",
    "cut_env": "execs whose environment was cut at --env-max-bytes",
    "cut_path": "paths cut at the kernel's bound",
    "cut_string": "strings cut at the kernel's bound",
    "cut_ring_full": "execs sent without their environment, or argv cut too: the ring was full (the reader was "
                     "behind)",
    "malformed_traceparent": "TRACEPARENT values that did not parse",
    "untrusted_traceparent": "TRACEPARENT values --trust-traceparent did not follow",
}


def meaning(key: str) -> str | None:
    if key in _MEANINGS:
        return _MEANINGS[key]
    for signal in ("logs_", "traces_"):
        if key.startswith(signal) and key.removeprefix(signal) in _MEANINGS:
            return _MEANINGS[key.removeprefix(signal)]
    return None


def is_loss(key: str) -> bool:
    return bool(loss_reason(key)) or key.endswith("_unsent")


def summary_lines(report: dict[str, int], run_time_s: float) -> list[tuple[int, str]]:
    """(level, message) of each summary line: the totals (info), then every
    loss that is not zero (warning), then every other trouble (info)."""
    exported = [f"{report[f'{s}_exported']} {name}" for s, name in (("logs", "log records"), ("traces", "spans"))
                if f"{s}_exported" in report]
    lines = [(logging.INFO, f"stopped after {run_time_s:.1f}s: {report.get('exec_seen', 0)} execs seen, "
                            f"{report.get('exported', 0)} reported, {report.get('exits_seen', 0)} exits"
                            + (f"; exported {', '.join(exported)}" if exported else ""))]
    losses = [(k, v) for k, v in report.items() if v and is_loss(k)]
    troubles = [(k, v) for k, v in report.items() if v and not is_loss(k) and meaning(k)]
    lines += [(logging.WARNING, f"lost {value}: {key}: {meaning(key) or 'records lost'}") for key, value in losses]
    lines += [(logging.INFO, f"{value} {key}: {meaning(key)}") for key, value in troubles]
    if not losses:
        lines.append((logging.INFO, "nothing was lost"))
    return lines


def log_summary(report: dict[str, int], run_time_s: float, every_counter: bool) -> None:
    """The summary at stop; with every_counter, then the full counter set
    (`stopped; k=v, ...`, info) and the losses among them (warning) for
    scripts and logs."""
    for level, message in summary_lines(report, run_time_s):
        log.log(level, "%s", message)
    if every_counter:
        log.info("stopped; %s", ", ".join(f"{k}={v}" for k, v in report.items()))
        lost = {k: v for k, v in report.items() if is_loss(k)}
        if any(lost.values()):
            log.warning("events were lost: %s", lost)
