"""`otel-exec health`: exit 0 while the agent runs and its loop keeps the
ready file fresh; non-zero with a one-line reason when it never started,
has stopped, or hangs (docs/operations.md#health)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from otel_exec import health
from otel_exec.health import REFRESH_S, unhealthy
from tests.helpers.agent_run import ROOT, AgentRun, kernel_available

kernel = pytest.mark.kernel


def otel_exec_health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otel_exec", "health", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@kernel
def test_health_follows_the_running_agent(tmp_path: Path) -> None:
    """Healthy while it runs; stuck (SIGSTOP) it goes stale, and healthy
    again once it turns; stopped, the reason says so."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    run = AgentRun(tmp_path)
    try:
        ok = otel_exec_health("--ready-file", str(run.ready))
        assert ok.returncode == 0, ok.stderr
        assert one_line(ok.stdout) == f"healthy: {run.ready} is fresh"
        # The loop touches the file while nothing else happens.
        first = run.ready.stat().st_mtime
        time.sleep(3 * REFRESH_S)
        assert run.ready.stat().st_mtime > first

        run.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(3)
            stuck = otel_exec_health("--ready-file", str(run.ready), "--max-age", "2")
        finally:
            run.proc.send_signal(signal.SIGCONT)
        assert stuck.returncode == 1
        assert one_line(stuck.stderr).startswith(f"otel-exec: error: unhealthy: {run.ready} was last refreshed ")
        assert f"the agent (pid {run.proc.pid}) is stuck" in stuck.stderr

        deadline = time.monotonic() + 10
        while otel_exec_health("--ready-file", str(run.ready), "--max-age", "2").returncode != 0:
            assert time.monotonic() < deadline, "the ready file stayed stale after SIGCONT"
            time.sleep(0.2)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    gone = otel_exec_health("--ready-file", str(run.ready))
    assert gone.returncode == 1
    assert one_line(gone.stderr) == (f"otel-exec: error: unhealthy: the agent that wrote {run.ready} "
                                     f"(pid {run.proc.pid}) is not running")


@kernel
def test_a_removed_ready_file_is_written_again(tmp_path: Path) -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    run = AgentRun(tmp_path)
    try:
        run.ready.unlink()
        deadline = time.monotonic() + 10
        while not run.ready.exists():
            assert time.monotonic() < deadline, "the agent did not write its ready file again"
            time.sleep(0.1)
        assert run.ready.read_text() == f"{run.proc.pid}\n"
        assert otel_exec_health("--ready-file", str(run.ready)).returncode == 0
    finally:
        rc, err = run.stop()
    assert rc == 0, err


def test_no_ready_file_is_unhealthy(tmp_path: Path) -> None:
    missing = tmp_path / "ready"
    result = otel_exec_health("--ready-file", str(missing))
    assert result.returncode == 1
    assert one_line(result.stderr) == (f"otel-exec: error: unhealthy: {missing} does not exist: the agent is "
                                       "starting, has stopped, or runs with another --ready-file")


def test_the_path_comes_from_run_settings_else_the_default(tmp_path: Path) -> None:
    """Without --ready-file: what `run` would write (OTEL_EXEC_READY_FILE,
    the configuration file), else DEFAULT_READY_FILE."""
    from_env = tmp_path / "from-env"
    env = dict(os.environ, OTEL_EXEC_READY_FILE=str(from_env), OTEL_EXEC_CONFIG="")
    assert str(from_env) in otel_exec_health(env=env).stderr
    config = tmp_path / "config.yaml"
    config.write_text(f"ready_file: {tmp_path / 'from-file'}\n")
    env = {k: v for k, v in os.environ.items() if k != "OTEL_EXEC_READY_FILE"}
    assert str(tmp_path / "from-file") in otel_exec_health(env=dict(env, OTEL_EXEC_CONFIG=str(config))).stderr
    assert health.DEFAULT_READY_FILE in otel_exec_health(env=dict(env, OTEL_EXEC_CONFIG="")).stderr


def test_fresh_file_of_a_live_process_is_healthy(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    ready.write_text(f"{os.getpid()}\n")
    assert unhealthy(str(ready), 30) is None


def test_stale_file_is_unhealthy(tmp_path: Path) -> None:
    """pid 1 stands for an agent that started before it last touched the file."""
    ready = tmp_path / "ready"
    ready.write_text("1\n")
    old = time.time() - 120
    os.utime(ready, (old, old))
    assert unhealthy(str(ready), 30) == f"{ready} was last refreshed 120 s ago (over 30 s): the agent (pid 1) is stuck"


def test_file_of_a_process_gone_is_unhealthy(tmp_path: Path) -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    ready = tmp_path / "ready"
    ready.write_text(f"{child.pid}\n")
    assert unhealthy(str(ready), 30) == f"the agent that wrote {ready} (pid {child.pid}) is not running"


def test_pid_of_a_later_process_is_not_the_agent(tmp_path: Path) -> None:
    """The stopped agent's pid, taken by a process started after the file
    was last touched, is not the agent (pids wrap in seconds under a storm)."""
    ready = tmp_path / "ready"
    ready.write_text(f"{os.getpid()}\n")
    started = psutil.Process().create_time()
    os.utime(ready, (started - 10, started - 10))
    assert unhealthy(str(ready), 1e9) == f"the agent that wrote {ready} (pid {os.getpid()}) is not running"


def test_garbled_file_is_unhealthy(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    ready.write_text("ready\n")
    assert unhealthy(str(ready), 30) == f"{ready} does not hold a process id"


def test_max_age_must_be_positive(tmp_path: Path) -> None:
    result = otel_exec_health("--ready-file", str(tmp_path / "ready"), "--max-age", "0")
    assert result.returncode == 2
    assert one_line(result.stderr) == "otel-exec: error: --max-age must be a positive number of seconds"
