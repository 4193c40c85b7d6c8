"""Self-telemetry: OTel metrics at the collector and the --stats-interval line."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.agent_run import AgentRun, kernel_available, marked_env, new_mark, stats_lines, stop_line
from tests.helpers.collector import Collector, last_value, metric_points
from otel_exec.export.telemetry import loss_reason

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
    lines = stats_lines(err)
    assert len(lines) >= 2
    assert all(k in lines[-1] for k in ("exported_logs", "lost", "spool", "ringbuf", "table"))


def test_metrics_reach_the_collector_with_the_agent_s_values(make_collector, tmp_path: Path) -> None:
    """Each metric's last data point at the collector is the value the stop
    line reports (the final export reads the same counters)."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    collector: Collector = make_collector()
    env = dict(os.environ, OTEL_METRIC_EXPORT_INTERVAL="500", OTEL_BLRP_SCHEDULE_DELAY="100")
    run = AgentRun(tmp_path, "--endpoint", collector.grpc_endpoint, env=env)
    mark = new_mark()
    for _ in range(3):
        subprocess.run(["/bin/true"], env=marked_env(mark), check=True)
    time.sleep(2)  # exported, and a metric export after that
    rc, err = run.stop()
    assert rc == 0, err
    counters = stop_line(err)
    dump = collector.output_path.read_text(errors="replace")
    assert last_value(dump, "otel_exec.events", type="exec") == counters["exec_seen"] >= 3
    assert last_value(dump, "otel_exec.events", type="exit") == counters["exits_seen"] >= 3
    for signal in ("logs", "traces"):
        assert last_value(dump, "otel_exec.records.exported", signal=signal) == counters[f"{signal}_exported"]
        assert last_value(dump, "otel_exec.spool.size", signal=signal) == counters[f"{signal}_spool_bytes"]
        assert last_value(dump, "otel_exec.spool.oldest_age", signal=signal) == counters[f"{signal}_spool_oldest_age_s"]
        assert last_value(dump, "otel_exec.export.latency", signal=signal) == counters[f"{signal}_export_latency_ms"]
    assert counters["logs_exported"] >= 3 and counters["logs_export_latency_ms"] > 0
    assert last_value(dump, "otel_exec.process_table.size") == counters["process_table_size"] > 0
    assert last_value(dump, "otel_exec.ringbuf.used") == counters["ringbuf_used_bytes"]
    for key, value in counters.items():
        if loss_reason(key):
            assert last_value(dump, "otel_exec.lost", reason=loss_reason(key)) == value
    for outcome in ("computed", "cache_hits", "flagged", "read_errors"):
        assert last_value(dump, "otel_exec.executable_identity", outcome=outcome.removesuffix("s")) == \
            counters[f"executable_identity_{outcome}"]
    assert counters["executable_identity_computed"] >= 1 and counters["executable_identity_cache_hits"] >= 2


def test_spool_age_and_size_grow_while_the_collector_is_down(make_collector, tmp_path: Path) -> None:
    """Logs and spans go to a port nobody listens on, metrics to the
    collector: the spool keeps everything since the start, and its oldest
    unsent segment is as old as the agent."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    collector: Collector = make_collector()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: refused
    env = dict(os.environ, OTEL_METRIC_EXPORT_INTERVAL="300", OTEL_BLRP_SCHEDULE_DELAY="100",
               OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=dead, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=dead,
               OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=collector.grpc_endpoint)
    started = time.monotonic()
    run = AgentRun(tmp_path, "--exporter", "otlp", env=env)
    subprocess.run(["/bin/true"], env=marked_env(new_mark()), check=True)
    time.sleep(3)
    rc, err = run.stop()
    lived = time.monotonic() - started
    assert rc == 0, err
    counters = stop_line(err)
    assert counters["logs_exported"] == 0 and counters["logs_spool_bytes"] > 0
    assert 2 <= counters["logs_spool_oldest_age_s"] <= lived + 1
    dump = collector.output_path.read_text(errors="replace")
    assert 2 <= last_value(dump, "otel_exec.spool.oldest_age", signal="logs") <= lived + 1
    assert last_value(dump, "otel_exec.spool.size", signal="logs") == counters["logs_spool_bytes"]
    ages = [v for a, v in metric_points(dump, "otel_exec.spool.oldest_age") if a.get("signal") == "logs"]
    assert ages == sorted(ages) and ages[0] < ages[-1]  # it grows while nothing is accepted


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
