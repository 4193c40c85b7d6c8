"""The selection filters on the processes already running at start: a
process found in /proc that the filters would not report exports no log
record and no span (its argv would leak past --comm, --uid, --cgroup), and
its children nest as under a parent whose exec the kernel filtered: they
start traces of their own."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from otel_exec.export.otlp.encode import OBSERVED_EVENT_NAME
from tests.helpers.agent_run import AgentRun, all_killed, kernel_available, marked_env, new_mark, otlp_agent_run
from tests.helpers.collector import Collector, LogRecord, Span

pytestmark = pytest.mark.kernel

SLEEP = shutil.which("sleep") or "/usr/bin/sleep"
NOBODY = 65534


def named_copy(directory: Path, name: str) -> str:
    """A copy of sleep whose comm is `name` (the file's name)."""
    path = directory / name
    shutil.copy(SLEEP, path)
    return str(path)


def observed_logs(collector: Collector, pid: int, since_ns: int) -> list[LogRecord]:
    return [r for r in collector.logs() if r.event_name == OBSERVED_EVENT_NAME
            and r.attributes.get("process.pid") == pid and r.timestamp >= since_ns]


def observed_spans(collector: Collector, pid: int, since_ns: int) -> list[Span]:
    return [s for s in collector.spans() if s.attributes.get("otel_exec.observed_from") == "procfs"
            and s.attributes.get("process.pid") == pid and s.end_time >= since_ns]


def shell_that_runs_on_a_line(child: str, mark: str) -> subprocess.Popen:
    """sh (comm "sh"), which runs `child 0` as a child of its own when a line comes on its stdin."""
    return subprocess.Popen(["/bin/sh", "-c", 'read line; "$0" 0; read line', child], stdin=subprocess.PIPE,
                            env=marked_env(mark), text=True)


def run_child(shell: subprocess.Popen) -> None:
    assert shell.stdin is not None
    shell.stdin.write("go\n")
    shell.stdin.flush()


def test_comm_keeps_processes_found_at_start_that_it_does_not_select_out_of_the_export(
        collector: Collector, tmp_path: Path) -> None:
    if reason := kernel_available():
        pytest.skip(reason)
    yes, no = named_copy(tmp_path, "oeseedyes"), named_copy(tmp_path, "oeseedno")
    mark = new_mark()
    since = time.time_ns()
    selected = subprocess.Popen([yes, "60"], env=marked_env(mark))
    other = subprocess.Popen([no, "60"], env=marked_env(mark))
    seeded_shell = shell_that_runs_on_a_line(yes, mark)
    with all_killed(selected, other, seeded_shell):
        time.sleep(0.2)  # all three have exec'd before the agent reads /proc
        run = otlp_agent_run(tmp_path / "agent", collector.grpc_endpoint, OTEL_EXEC_COMM="oeseedyes")
        try:
            # Started after the agent: the kernel filters the shell's exec.
            later_shell = shell_that_runs_on_a_line(yes, mark)
            with all_killed(later_shell):
                time.sleep(0.2)
                run_child(seeded_shell)
                run_child(later_shell)
                children = collector.wait_for_logs(
                    lambda r: r.attributes.get("process.parent_pid") in (seeded_shell.pid, later_shell.pid)
                    and r.attributes.get("process.executable.name") == "oeseedyes", count=2, timeout=15)
        finally:
            rc, err = run.stop()
        assert rc == 0, err
        (log,) = collector.wait_for_logs(lambda r: r in observed_logs(collector, selected.pid, since))
        (span,) = collector.wait_for_spans(lambda s: s in observed_spans(collector, selected.pid, since))
    assert log.span_id == span.span_id
    for pid in (other.pid, seeded_shell.pid, later_shell.pid):
        assert observed_logs(collector, pid, since) == [] and observed_spans(collector, pid, since) == []
    assert not [s for s in collector.spans() if s.attributes.get("process.pid") in (other.pid, seeded_shell.pid)
                and s.end_time >= since]
    # The child of the shell found at start nests as the child of the shell
    # whose exec the kernel filtered: each a trace of its own.
    assert len(children) == 2 and len({r.trace_id for r in children}) == 2
    child_spans = collector.wait_for_spans(lambda s: s.span_id in {r.span_id for r in children}, count=2)
    assert [s.parent_span_id for s in child_spans] == ["", ""]


def test_uid_reports_only_the_processes_of_that_user_found_at_start(collector: Collector, tmp_path: Path) -> None:
    if reason := kernel_available():
        pytest.skip(reason)
    mark = new_mark()
    since = time.time_ns()
    theirs = subprocess.Popen([SLEEP, "60"], env=marked_env(mark), user=NOBODY, group=NOBODY, extra_groups=[])
    root_s = subprocess.Popen([SLEEP, "60"], env=marked_env(mark))
    with all_killed(theirs, root_s):
        time.sleep(0.2)
        run = AgentRun(tmp_path, "--exporter", "otlp", "--endpoint", collector.grpc_endpoint, "--uid", str(NOBODY),
                       env=dict(os.environ, OTEL_BLRP_SCHEDULE_DELAY="200", OTEL_BSP_SCHEDULE_DELAY="200"))
        rc, err = run.stop()
        assert rc == 0, err
        (log,) = collector.wait_for_logs(lambda r: r in observed_logs(collector, theirs.pid, since))
        (span,) = collector.wait_for_spans(lambda s: s in observed_spans(collector, theirs.pid, since))
    assert log.body == f"{SLEEP} 60" and log.span_id == span.span_id
    assert observed_logs(collector, root_s.pid, since) == [] and observed_spans(collector, root_s.pid, since) == []
