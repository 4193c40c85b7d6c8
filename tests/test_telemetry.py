"""Self-telemetry: OTel metrics at the collector and the --stats-interval line."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from agent_run import AgentRun, kernel_available, marked_env, new_mark
from collector import Collector
from otel_exec.telemetry import loss_reason

pytestmark = pytest.mark.kernel


def test_stats_interval_prints_a_summary_line(tmp_path: Path) -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    run = AgentRun(tmp_path, "--stats-interval", "0.2")
    subprocess.run(["/bin/true"], env=marked_env(new_mark()), check=True)
    time.sleep(0.6)
    rc, err = run.stop()
    assert rc == 0, err
    lines = [l for l in err.splitlines() if l.startswith("otel-exec: execs=")]
    assert len(lines) >= 2
    assert all(f" {k}=" in lines[-1] for k in ("exported_logs", "lost", "spool", "ringbuf", "table"))


def test_metrics_reach_the_collector(make_collector, tmp_path: Path) -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    collector: Collector = make_collector()
    env = dict(os.environ, OTEL_METRIC_EXPORT_INTERVAL="500", OTEL_BLRP_SCHEDULE_DELAY="100")
    run = AgentRun(tmp_path, "--endpoint", collector.grpc_endpoint, env=env)
    subprocess.run(["/bin/true"], env=marked_env(new_mark()), check=True)
    time.sleep(2)
    rc, err = run.stop()
    assert rc == 0, err
    out = collector.output_path.read_text(errors="replace")  # rotel's debug dump, metrics included
    for name in ("otel_exec.events", "otel_exec.records.exported", "otel_exec.lost", "otel_exec.spool.size",
                 "otel_exec.ringbuf.used", "otel_exec.process_table.size", "otel_exec.export.latency"):
        assert name in out, name


def test_every_loss_counter_has_a_reason() -> None:
    for key in ("lost_exec_ringbuf_full", "lost_exit_ringbuf_full", "lost_exec_no_scratch", "decode_errors",
                "logs_queue_overflow", "logs_spool_evicted", "traces_failed"):
        assert loss_reason(key)
    assert loss_reason("exec_seen") is None and loss_reason("logs_exported") is None
    assert loss_reason("process_table_evicted") is None  # a bound on memory, not lost records
    for key in ("logs_dropped_disk_full", "traces_spool_corrupt", "logs_spool_segment_lost"):
        assert loss_reason(key)
    for key in ("logs_spool_write_failed", "logs_spool_cursor_reset", "spool_unsafe_files", "spool_foreign_files"):
        assert loss_reason(key) is None  # kept in memory, or repaired: nothing lost by itself
