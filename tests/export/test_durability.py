"""Nothing lost: collector outages, agent crashes, the spool (issue 5)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.helpers.agent_run import AgentRun
from tests.helpers.collector import Collector
from tests.helpers.storm import agent_env, run_storm, storm, wait_for_execs  # noqa: F401  (storm: a fixture)

pytestmark = pytest.mark.kernel

# How long the collector is down in the outage test (the acceptance asks 60 s).
OUTAGE_S = float(os.environ.get("OTEL_EXEC_OUTAGE_SECONDS", "60"))


def test_collector_outage_loses_nothing(storm: str, make_collector, tmp_path: Path) -> None:
    collector: Collector = make_collector()
    run = AgentRun(tmp_path, "--endpoint", collector.grpc_endpoint, env=agent_env())
    mark = f"outage-{time.time_ns()}"
    total = int(500 * OUTAGE_S)
    collector.stop()
    proc = run_storm(storm, mark, total, 500)
    assert proc.wait(timeout=OUTAGE_S * 3) == 0
    assert (tmp_path / "spool").exists() and any((tmp_path / "spool").glob("logs-*.seg"))
    collector.restart()
    arrived = wait_for_execs(collector, mark, total, timeout=180)
    rc, err = run.stop()
    assert rc == 0, err
    assert len(arrived) == total
    assert "lost_exec_ringbuf_full=0" in err and "logs_spool_evicted=0" in err


def test_sigkill_then_restart_delivers_everything_read(storm: str, make_collector, tmp_path: Path) -> None:
    collector: Collector = make_collector()
    first = AgentRun(tmp_path / "a", "--exporter", "otlp,console", "--endpoint", collector.grpc_endpoint,
                     "--spool-dir", str(tmp_path / "spool"), env=agent_env())
    mark = f"kill-{time.time_ns()}"
    proc = run_storm(storm, mark, 20000, 0)
    time.sleep(2)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    proc.wait(timeout=300)
    # What the first agent had read: it wrote its console lines after its
    # spool (sinks flush in order), so every printed exec was spooled.
    read = {(e["exec_id"], e["timestamp"]) for e in first.find(lambda e: f"OE_TEST_MARK={mark}" in e["env"]
                                                                and e["comm"] == "true", count=10**9, timeout=0)}
    assert 0 < len(read) < 20000
    restart_ns = time.time_ns()
    second = AgentRun(tmp_path / "b", "--endpoint", collector.grpc_endpoint,
                      "--spool-dir", str(tmp_path / "spool"), env=agent_env())
    try:
        arrived = wait_for_execs(collector, mark, read, timeout=180)
        assert read <= arrived
        (gap,) = collector.wait_for_logs(lambda r: r.event_name == "otel_exec.agent.gap", timeout=30)
        assert gap.timestamp >= restart_ns
        assert gap.attributes["otel_exec.gap.seconds"] > 0
        observed = collector.wait_for_logs(lambda r: r.event_name == "otel_exec.process.observed"
                                           and r.attributes.get("process.pid") == os.getpid(), timeout=30)
        assert observed and observed[0].attributes["otel_exec.observed_from"] == "procfs"
    finally:
        rc, err = second.stop()
    assert rc == 0, err


def test_spool_directory_is_private(storm: str, make_collector, tmp_path: Path) -> None:
    collector: Collector = make_collector()
    run = AgentRun(tmp_path, "--endpoint", collector.grpc_endpoint, env=agent_env())
    rc, err = run.stop()
    assert rc == 0, err
    spool = tmp_path / "spool"
    assert spool.stat().st_mode & 0o777 == 0o700
    for f in spool.iterdir():
        assert f.stat().st_mode & 0o077 == 0, f
