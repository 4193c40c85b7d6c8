"""The processes already running at start, by the ten thousand: the agent
reads /proc while the kernel's events queue in the ring, and loses none of
them; of each process's environment it keeps only the trace context."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from otel_exec.host.identity import HostIdentity
from otel_exec.host.procevents import observed_execs
from tests.helpers.agent_run import AgentRun, counters_from, new_mark
from tests.helpers.storm import run_storm, storm  # noqa: F401  (fixture)

pytestmark = pytest.mark.kernel

HELD = 15000


@pytest.fixture
def held(storm: str) -> object:  # noqa: F811
    """HELD sleeping processes for the length of one test."""
    proc = subprocess.Popen([storm, "hold", str(HELD)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
        proc.kill()
        proc.wait()


def test_no_exec_is_lost_while_thousands_of_processes_are_read_at_start(tmp_path: Path, storm: str,  # noqa: F811
                                                                        held: object) -> None:
    mark = new_mark()
    # Execs all through the agent's start: the /proc reading of HELD processes
    # takes seconds, longer than the smallest ring holds the storm's records.
    flood = run_storm(storm, mark, 10000, 3000)
    try:
        run = AgentRun(tmp_path, "--ringbuf-bytes", str(2 << 20), "--no-executable-identity")
        try:
            flood.wait(180)
            time.sleep(1)
        finally:
            rc, err = run.stop()  # also when the storm times out: no agent is left running
    finally:
        flood.kill()
    assert rc == 0, err
    counters = counters_from(err)
    assert counters["process_table_size"] >= HELD
    assert counters["lost_exec_ringbuf_full"] == 0 and counters["lost_exit_ringbuf_full"] == 0, err
    assert counters["exec_seen"] == counters["exported"] + counters["exec_filtered"] + counters["exec_sampled_out"]


def test_only_the_trace_context_of_a_running_process_s_environment_is_read() -> None:
    env = {"PATH": "/usr/bin:/bin", "TRACEPARENT": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
           "SECRET_TOKEN": "hunter2", "X": "1"}
    child = subprocess.Popen(["sleep", "30"], env=env)
    try:
        time.sleep(0.1)
        ev = next(e for e in observed_execs(HostIdentity.current(), env_names=("TRACEPARENT", "TRACESTATE"))
                  if e.host_pid == child.pid)
    finally:
        child.kill()
        child.wait()
    assert list(ev.env) == ["TRACEPARENT=" + env["TRACEPARENT"]]
    assert ev.envc == 4
