"""End to end: real execs -> the agent -> OTLP (gRPC and HTTP) -> rotel.

Each test runs its own agent pointed at the session's collector and finds
its own records by the OE_TEST_MARK it puts into the environment.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from tests.helpers.agent_run import AgentRun, kernel_available, marked_env, new_mark, otlp_agent_run
from tests.helpers.collector import Collector
from testkit.environment import PACKED, PER_VARIABLE, environment, variable

pytestmark = pytest.mark.kernel

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SLEEP = shutil.which("sleep") or "/usr/bin/sleep"


@pytest.fixture(params=["grpc", "http/protobuf"])
def otlp_agent(request: pytest.FixtureRequest, collector: Collector, tmp_path: Path) -> Iterator[AgentRun]:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    endpoint = collector.grpc_endpoint if request.param == "grpc" else collector.http_endpoint
    env = dict(os.environ, OTEL_BLRP_SCHEDULE_DELAY="200", OTEL_BSP_SCHEDULE_DELAY="200")
    run = AgentRun(tmp_path, "--exporter", "otlp,console", "--endpoint", endpoint, "--protocol", request.param,
                   env=env)
    yield run
    rc, err = run.stop()
    assert rc == 0, err


def logs_of(collector: Collector, mark: str, count: int, timeout: float = 15) -> list:
    """The marked exec records: the mark packed into otel_exec.env.rest (the
    default), or an attribute of its own with --env-attributes N
    (docs/attributes.md#the-environment)."""
    return collector.wait_for_logs(lambda r: variable(r.attributes, "OE_TEST_MARK") == mark,
                                   count=count, timeout=timeout)


def spans_of(collector: Collector, mark: str, count: int, timeout: float = 15) -> list:
    """The spans of the marked execs: the environment is on log records
    only (unless --span-env), and each log record names its span."""
    ids = {r.span_id for r in logs_of(collector, mark, count, timeout)}
    return collector.wait_for_spans(lambda s: s.span_id in ids, count=count, timeout=timeout)


def by_name(records: list, name: str):
    (hit,) = [r for r in records if (getattr(r, "name", None) or r.attributes["process.executable.name"]) == name]
    return hit


def test_exec_records_and_process_tree(otlp_agent: AgentRun, collector: Collector) -> None:
    mark = new_mark()
    t0 = time.time_ns()
    subprocess.run(["/bin/sh", "-c", "ls / > /dev/null; /bin/true"], env=marked_env(mark), check=True)
    logs = logs_of(collector, mark, 3)
    spans = spans_of(collector, mark, 3)
    console = {e["host_pid"]: e for e in otlp_agent.find(lambda e: f"OE_TEST_MARK={mark}" in e["env"], 3)}

    for rec in logs:
        ev = console[rec.attributes["process.pid"]]
        assert rec.event_name == "otel_exec.process.exec"
        assert rec.timestamp == ev["timestamp"] and t0 <= rec.timestamp <= rec.observed_timestamp
        assert rec.severity_number.value == 9
        assert rec.attributes["process.executable.path"] == ev["pathname"]
        assert rec.attributes["process.parent_pid"] == ev["host_ppid"]
        assert rec.attributes["process.command_args"] == ev["argv"]
        assert rec.attributes["otel_exec.exec_id"] == ev["exec_id"]
        assert rec.attributes["file.inode"] == str(os.stat(ev["pathname"]).st_ino)
        assert rec.resource["service.name"] == "otel-exec"
        assert "process.pid" not in rec.resource
        # The log line links to its process span.
        (span,) = [s for s in spans if s.span_id == rec.span_id]
        assert span.trace_id == rec.trace_id
        assert span.attributes["process.pid"] == rec.attributes["process.pid"]
    assert by_name(logs, "dash").body == "/bin/sh -c 'ls / > /dev/null; /bin/true'"

    sh, ls, true = by_name(spans, "dash"), by_name(spans, "ls"), by_name(spans, "true")
    assert ls.parent_span_id == sh.span_id and true.parent_span_id == sh.span_id
    assert ls.trace_id == sh.trace_id == true.trace_id
    assert sh.parent_span_id  # the test process, seeded from /proc
    for s in (sh, ls, true):
        assert s.kind == SpanKind.INTERNAL
        assert s.attributes["process.exit.code"] == 0 and s.status_code != StatusCode.ERROR
        assert s.start_time <= s.end_time
    assert sh.start_time <= ls.start_time and true.end_time <= sh.end_time

    rc, err = otlp_agent.stop()
    assert rc == 0, err
    # The test process's own span (seeded from /proc) ends when the agent
    # stops: incomplete, and the parent of sh.
    # (Its ids derive from its exec id: every agent run of the session
    # exports the same span once, so the latest is this run's.)
    me = max(collector.wait_for_spans(lambda s: s.span_id == sh.parent_span_id, timeout=15),
             key=lambda s: s.end_time)
    assert me.attributes["process.pid"] == os.getpid()
    assert me.attributes["otel_exec.observed_from"] == "procfs"
    assert me.attributes["otel_exec.span.incomplete"] is True


def test_traceparent_attaches_tree_to_the_application_trace(otlp_agent: AgentRun, collector: Collector) -> None:
    mark = new_mark()
    env = marked_env(mark, TRACEPARENT=f"00-{TRACE}-{PARENT}-01", TRACESTATE="vendor=1")
    subprocess.run(["/bin/sh", "-c", "ls / > /dev/null; /bin/true"], env=env, check=True)
    spans = spans_of(collector, mark, 3)
    sh, ls, true = by_name(spans, "dash"), by_name(spans, "ls"), by_name(spans, "true")
    assert sh.trace_id == ls.trace_id == true.trace_id == TRACE
    assert sh.parent_span_id == PARENT and sh.trace_state == "vendor=1"
    # ls and true inherited the same TRACEPARENT: they nest under sh.
    assert ls.parent_span_id == sh.span_id and true.parent_span_id == sh.span_id
    logs = logs_of(collector, mark, 3)
    assert {r.trace_id for r in logs} == {TRACE}


def test_tracestate_is_cut_by_whole_entries_at_512_characters(otlp_agent: AgentRun, collector: Collector) -> None:
    """policy.redact.bounded_tracestate: a TRACESTATE of 512 characters
    arrives whole on the span; one of 513 loses its whole last member
    (W3C: truncate whole entries, from the end), never a part of one."""
    first = "k0=" + "v" * 300
    states = {512: first + ",k1=" + "w" * 205, 513: first + ",k1=" + "w" * 206}
    marks = {n: new_mark() for n in states}
    for n, state in states.items():
        env = marked_env(marks[n], TRACEPARENT=f"00-{TRACE}-{PARENT}-01", TRACESTATE=state)
        subprocess.run(["/bin/true"], env=env, check=True)
    for n, state in states.items():
        (span,) = spans_of(collector, marks[n], 1)
        assert len(state) == n
        assert span.trace_state == (state if n == 512 else first)


def test_a_non_sampled_traceparent_tree_exports_its_logs_and_no_span(otlp_agent: AgentRun,
                                                                      collector: Collector) -> None:
    """As a ParentBased sampler: under a TRACEPARENT whose sampled flag is
    00, no span of the tree is exported (no orphans under a parent never
    recorded); every exec's log record is, in the remote trace, flags 00."""
    trace = new_mark()  # 32 hex digits: a trace of this test's own
    mark = new_mark()
    env = marked_env(mark, TRACEPARENT=f"00-{trace}-{PARENT}-00")
    subprocess.run(["/bin/sh", "-c", "ls / > /dev/null; /bin/true"], env=env, check=True)
    logs = logs_of(collector, mark, 3)
    assert sorted(r.attributes["process.executable.name"] for r in logs) == ["dash", "ls", "true"]
    assert {(r.trace_id, r.flags & 0xff) for r in logs} == {(trace, 0)}
    ids = {r.span_id for r in logs}
    assert len(ids) == 3
    # A sampled exec after the tree: once its span has arrived, the tree's
    # spans, ended before it started, would have arrived too.
    after = new_mark()
    subprocess.run(["/bin/true"], env=marked_env(after, TRACEPARENT=f"00-{TRACE}-{PARENT}-01"), check=True)
    (rec,) = logs_of(collector, after, 1)
    assert rec.flags & 0xff == 1
    spans_of(collector, after, 1)
    assert [s for s in collector.spans() if s.trace_id == trace or s.span_id in ids] == []


def test_exit_codes_and_signals_land_on_spans(otlp_agent: AgentRun, collector: Collector) -> None:
    mark = new_mark()
    subprocess.run(["/bin/sh", "-c", "exit 3"], env=marked_env(mark))
    victim = subprocess.Popen([SLEEP, "30"], env=marked_env(mark))
    logs_of(collector, mark, 2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    spans = spans_of(collector, mark, 2)
    sh, sleep = by_name(spans, "dash"), by_name(spans, "sleep")
    assert sh.attributes["process.exit.code"] == 3
    assert sh.attributes["error.type"] == "3" and sh.status_code == StatusCode.ERROR
    assert sleep.attributes["otel_exec.exit.signal"] == 9
    assert sleep.attributes["error.type"] == "SIGKILL" and sleep.status_code == StatusCode.ERROR
    assert sleep.attributes["process.exit.code"] == 128 + 9 == 137  # as shells report a SIGKILL death


def exit_records_of(collector: Collector, spans: list, timeout: float = 15) -> dict:
    """The exit records of these spans, by span id."""
    ids = {s.span_id for s in spans}
    records = collector.wait_for_logs(lambda r: r.event_name == "otel_exec.process.exit" and r.span_id in ids,
                                      count=len(ids), timeout=timeout)
    return {r.span_id: r for r in records}


def test_exit_records_tell_each_end_and_link_to_its_span(otlp_agent: AgentRun, collector: Collector) -> None:
    """A normal exit, a non-zero exit and a SIGKILL each arrive as an
    otel_exec.process.exit log record carrying its span's ids and the end
    the kernel saw (checked against what the parent's wait() returned)."""
    mark = new_mark()
    ok = subprocess.run(["/bin/true"], env=marked_env(mark))
    failed = subprocess.run(["/bin/sh", "-c", "exit 3"], env=marked_env(mark))
    victim = subprocess.Popen([SLEEP, "30"], env=marked_env(mark))
    logs = logs_of(collector, mark, 3)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert (ok.returncode, failed.returncode, victim.returncode) == (0, 3, -signal.SIGKILL)
    spans = spans_of(collector, mark, 3)
    exits = exit_records_of(collector, spans)
    assert len(exits) == 3
    for span in spans:
        rec = exits[span.span_id]
        assert rec.trace_id == span.trace_id and rec.flags & 1
        assert rec.timestamp == span.end_time and rec.severity_number.value == 9
        for key in ("otel_exec.exec_id", "otel_exec.span.ended_by", "process.exit.code"):
            assert rec.attributes[key] == span.attributes[key], key
        # Compact (the default): the pid and the executable's name are the
        # exec record's, which the exec id joins.
        assert not {"process.pid", "process.executable.name"} & set(rec.attributes)
        (exec_rec,) = [r for r in logs if r.attributes["otel_exec.exec_id"] == rec.attributes["otel_exec.exec_id"]]
        assert exec_rec.attributes["process.pid"] == span.attributes["process.pid"]
        assert exec_rec.attributes["process.executable.name"] == span.name
        assert rec.attributes["otel_exec.span.ended_by"] == "exit"
        assert rec.attributes["otel_exec.process.duration"] == pytest.approx((span.end_time - span.start_time) / 1e9)
    true, sh, sleep = (exits[by_name(spans, name).span_id] for name in ("true", "dash", "sleep"))
    assert true.attributes["process.exit.code"] == 0 and true.body == "exited with code 0"
    assert "error.type" not in true.attributes and "otel_exec.exit.signal" not in true.attributes
    assert sh.attributes["process.exit.code"] == 3 and sh.attributes["error.type"] == "3"
    assert sh.body == "exited with code 3"
    assert sleep.attributes["process.exit.code"] == 137 and sleep.attributes["otel_exec.exit.signal"] == 9
    assert sleep.attributes["error.type"] == "SIGKILL" and sleep.body == "killed by SIGKILL (exit code 137)"
    assert sleep.attributes["otel_exec.process.duration"] > 0


def test_no_exit_records_turns_them_off(collector: Collector, tmp_path: Path) -> None:
    """OTEL_EXEC_NO_EXIT_RECORDS (--no-exit-records): spans still end with
    the exit code, no exit record is sent."""
    run = otlp_agent_run(tmp_path, collector.grpc_endpoint, OTEL_EXEC_NO_EXIT_RECORDS="true")
    mark = new_mark()
    try:
        subprocess.run(["/bin/sh", "-c", "exit 4"], env=marked_env(mark))
        (span,) = spans_of(collector, mark, 1)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    assert span.attributes["process.exit.code"] == 4
    time.sleep(1)  # an exit record would have been flushed by the stop; give rotel time to write it
    assert not [r for r in collector.logs() if r.span_id == span.span_id and r.event_name == "otel_exec.process.exit"]


def test_stopping_the_agent_exports_open_spans_as_incomplete(otlp_agent: AgentRun,
                                                             collector: Collector) -> None:
    mark = new_mark()
    running = subprocess.Popen([SLEEP, "60"], env=marked_env(mark))
    try:
        logs_of(collector, mark, 1)
        rc, err = otlp_agent.stop()
        assert rc == 0, err
        (span,) = spans_of(collector, mark, 1)
    finally:
        running.kill()
        running.wait()
    assert span.attributes["otel_exec.span.incomplete"] is True
    assert span.attributes["otel_exec.span.ended_by"] == "agent_stopped"
    assert variable(span.attributes, "OE_TEST_MARK") is None  # the environment is on the log record
    assert span.attributes["process.pid"] == running.pid
    assert "process.exit.code" not in span.attributes


def test_traced_app_example_nests_its_commands(otlp_agent: AgentRun, collector: Collector) -> None:
    """examples/traced_app.py: the app's span and its children's process
    spans meet in one trace, as a user sees them in Jaeger."""
    mark = new_mark()
    app = Path(__file__).resolve().parents[2] / "examples" / "traced_app.py"
    env = dict(os.environ, OE_TEST_MARK=mark, OTEL_SERVICE_NAME="traced-app",
               OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    env.pop("TRACEPARENT", None)
    out = subprocess.run([sys.executable, str(app), "--cmd", "git --version", "--cmd", "ls / | head -1"],
                         env=env, check=True, capture_output=True, text=True).stdout
    trace_id = out.split("trace_id=")[1].split()[0]
    (deploy,) = collector.wait_for_spans(lambda s: s.name == "deploy" and s.trace_id == trace_id, timeout=15)
    assert deploy.resource["service.name"] == "traced-app"
    spans = spans_of(collector, mark, 6)  # the app itself, two sh, git, ls, head
    in_trace = [s for s in spans if s.trace_id == trace_id]
    shells = [s for s in in_trace if s.name == "dash"]
    assert len(shells) == 2 and all(s.parent_span_id == deploy.span_id for s in shells)
    git = by_name(in_trace, "git")
    assert git.parent_span_id in {s.span_id for s in shells}
    ls, head = by_name(in_trace, "ls"), by_name(in_trace, "head")
    assert ls.parent_span_id == head.parent_span_id != deploy.span_id


def test_standard_environment_variables_configure_export(collector: Collector, tmp_path: Path) -> None:
    """No flags: the OTEL_* variables alone choose OTLP, the endpoint, the
    protocol and the resource."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint,
               OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_SERVICE_NAME="exec-audit",
               OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=ci", OTEL_BLRP_SCHEDULE_DELAY="100",
               OTEL_EXPORTER_OTLP_HEADERS="x-tenant=acme")
    run = AgentRun(tmp_path, env=env)
    mark = new_mark()
    try:
        subprocess.run(["/bin/true"], env=marked_env(mark), check=True)
        (rec,) = logs_of(collector, mark, 1)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    assert rec.resource["service.name"] == "exec-audit"
    assert rec.resource["deployment.environment.name"] == "ci"
    assert not run.out.exists() or run.out.read_text() == ""  # OTLP chosen, not the console


def test_processes_found_at_start_are_spans_with_redacted_argv(collector: Collector, tmp_path: Path) -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    mark = new_mark()
    before = subprocess.Popen(["/bin/sh", "-c", "sleep 60", "sh", "--password=hunter2"], env=marked_env(mark))
    try:
        started = time.time_ns()
        run = AgentRun(tmp_path, "--endpoint", collector.grpc_endpoint,
                       env=dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="100", OTEL_BLRP_SCHEDULE_DELAY="100"))
        rc, err = run.stop()
        assert rc == 0, err
        # This agent's record, not any with the pid: the session's collector
        # holds earlier agents' /proc records, whose pids may be reused.
        (observed,) = collector.wait_for_logs(lambda r: r.event_name == "otel_exec.process.observed"
                                              and r.observed_timestamp >= started
                                              and r.attributes.get("process.pid") == before.pid)
        (span,) = collector.wait_for_spans(lambda s: s.span_id == observed.span_id)
    finally:
        before.kill()
        before.wait()
    assert span.attributes["process.command_args"] == ["/bin/sh", "-c", "sleep 60", "sh", "--password=[REDACTED]"]
    assert span.attributes["otel_exec.span.incomplete"] is True
    assert span.start_time <= time.time_ns()


def test_trace_context_variable_names_can_be_changed(collector: Collector, tmp_path: Path) -> None:
    """--traceparent-env (a flag) and --tracestate-env (as its OTEL_EXEC_
    variable): the renamed variables parent the spans, TRACEPARENT means
    nothing any more, and the redaction treats the renamed variable as
    trace context (scanned, not hidden for its secret-looking name)."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    run = AgentRun(tmp_path, "--endpoint", collector.grpc_endpoint, "--traceparent-env", "CI_TRACE_TOKEN",
                   env=dict(os.environ, OTEL_EXEC_TRACESTATE_ENV="CI_TRACESTATE", OTEL_BSP_SCHEDULE_DELAY="100",
                            OTEL_BLRP_SCHEDULE_DELAY="100"))
    trace, mark = new_mark(), new_mark()
    traceparent = f"00-{trace}-{PARENT}-01"
    env = marked_env(mark, CI_TRACE_TOKEN=traceparent, CI_TRACESTATE="vendor=1",
                     TRACEPARENT=f"00-{TRACE}-{PARENT}-01", TRACESTATE="other=2")
    try:
        subprocess.run(["/bin/sh", "-c", "/bin/true"], env=env, check=True)
        spans = spans_of(collector, mark, 2)
        logs = logs_of(collector, mark, 2)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    sh, true = by_name(spans, "dash"), by_name(spans, "true")
    assert (sh.trace_id, sh.parent_span_id, sh.trace_state) == (trace, PARENT, "vendor=1")
    assert (true.trace_id, true.parent_span_id) == (trace, sh.span_id)
    assert variable(logs[0].attributes, "CI_TRACE_TOKEN") == traceparent


def test_span_env_puts_the_environment_on_spans(collector: Collector, tmp_path: Path) -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    run = AgentRun(tmp_path, "--endpoint", collector.grpc_endpoint, "--span-env",
                   env=dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="100", OTEL_BLRP_SCHEDULE_DELAY="100"))
    mark = new_mark()
    try:
        subprocess.run(["/bin/true"], env=marked_env(mark), check=True)
        (span,) = collector.wait_for_spans(lambda s: variable(s.attributes, "OE_TEST_MARK") == mark)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    assert span.name == "true"


# What every exec's log record carries whatever the span's set (docs/attributes.md#exec-attributes),
# for a dynamically linked program run from a test, outside any container.
EXEC_RECORD_KEYS = {
    "process.pid", "process.parent_pid", "process.creation.time", "otel_exec.exec_id", "otel_exec.parent_exec_id",
    "process.executable.path", "process.executable.name", "process.command_args",
    "process.user.id", "process.real_user.id", "otel_exec.process.group.id",
    "otel_exec.process.real_group.id", "process.working_directory", "process.linux.cgroup",
    "file.inode", "file.mode", "file.changed", "otel_exec.cmdpath", "otel_exec.file.dev",
    "otel_exec.prev_comm", "otel_exec.stdin.type", "otel_exec.stdin.path", "otel_exec.mount_ns",
    "otel_exec.pid_ns", "otel_exec.cgroup.id", "otel_exec.uts.hostname",
    "otel_exec.interpreter.path", "otel_exec.interpreter.inode",
    "otel_exec.interpreter.changed",
}
# What a record leaves out when its other attributes say it exactly, sent too with --record-attributes full
# (docs/attributes.md#exec-attributes): here argv[0], the comm of /bin/sh, a non-interactive stdin, a
# regular file, a loader on the executable's file system, every argument and every variable in a record not cut.
DERIVED_KEYS = {"process.command", "otel_exec.comm", "process.interactive", "otel_exec.file.type",
                "otel_exec.interpreter.dev", "process.args_count", "otel_exec.env_count"}
# A slim span's (the default): the ids that join it to its records, what names the process, how it ended.
SLIM_SPAN_KEYS = {"process.pid", "otel_exec.exec_id", "process.executable.path", "process.user.id",
                  "otel_exec.span.ended_by", "process.exit.code", "error.type"}


def one_exec(collector: Collector, run: AgentRun, argv: list[str], mark: str, **env: str) -> tuple:
    """Run argv with its environment marked, then stop the agent: the
    exec's record, its span and its exit record."""
    try:
        subprocess.run(argv, env=marked_env(mark, **env))
        (rec,) = logs_of(collector, mark, 1)
        (span,) = collector.wait_for_spans(lambda s: s.span_id == rec.span_id, timeout=15)
        (ended,) = exit_records_of(collector, [span]).values()
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    return rec, span, ended


@pytest.mark.parametrize("span_attributes", ["slim", "full"])
def test_each_fact_once_the_span_slim_by_default_and_full_on_request(collector: Collector, tmp_path: Path,
                                                                      span_attributes: str) -> None:
    """The exec's log record carries every attribute, whatever the span's
    set; by default its span only the ids and what names the process, its
    exit record neither pid nor name, and its environment is packed into
    one attribute (each fact is sent once, each key once);
    OTEL_EXEC_SPAN_ATTRIBUTES=full (the --span-attributes setting) puts
    every attribute but the environment back on the span, as on the record,
    OTEL_EXEC_RECORD_ATTRIBUTES=full the derived ones on the records, and
    OTEL_EXEC_ENV_ATTRIBUTES=48 each variable in an attribute of its own."""
    env = {} if span_attributes == "slim" else {"OTEL_EXEC_SPAN_ATTRIBUTES": "full",
                                                "OTEL_EXEC_RECORD_ATTRIBUTES": "full",
                                                "OTEL_EXEC_ENV_ATTRIBUTES": "48"}
    run = otlp_agent_run(tmp_path, collector.grpc_endpoint, **env)
    mark = new_mark()
    rec, span, ended = one_exec(collector, run, ["/bin/sh", "-c", "exit 3"], mark, OE_SECOND="2")
    log = rec.attributes
    assert EXEC_RECORD_KEYS <= set(log), EXEC_RECORD_KEYS - set(log)
    derived = {"process.command": log["process.command_args"][0], "otel_exec.comm": "sh",
               "process.interactive": False, "otel_exec.file.type": "reg",
               "otel_exec.interpreter.dev": log["otel_exec.file.dev"], "process.args_count": 3,
               "otel_exec.env_count": 3}
    if span_attributes == "slim":  # the compact record, the default: each value follows from the others
        assert not DERIVED_KEYS & set(log), DERIVED_KEYS & set(log)
        assert os.path.basename(log["otel_exec.cmdpath"]) == "sh"
        assert os.stat(log["otel_exec.interpreter.path"]).st_dev == os.stat(log["process.executable.path"]).st_dev
    else:
        assert {k: log[k] for k in DERIVED_KEYS} == derived
    # The file's identity, unless still being computed (then it follows on the span, docs/attributes.md).
    assert {"process.executable.build_id.htlhash", "otel_exec.executable.size"} <= set(log) or \
        log["otel_exec.executable.identity_status"] == "pending"
    assert log["process.command_args"] == ["/bin/sh", "-c", "exit 3"] and log["process.executable.path"] == \
        os.path.realpath("/bin/sh")
    variables = {"PATH": marked_env(mark)["PATH"], "OE_TEST_MARK": mark, "OE_SECOND": "2"}
    if span_attributes == "slim":  # the defaults: packed, one KEY=VALUE per variable, in order
        assert log[PACKED] == [f"{k}={v}" for k, v in variables.items()]
        assert not [k for k in log if k.startswith(PER_VARIABLE)]
        assert not {"process.pid", "process.executable.name"} & set(ended.attributes)
    else:  # the semantic conventions' form, and the exit record with the exec record's pid and name
        assert {k: log[PER_VARIABLE + k] for k in variables} == variables and PACKED not in log
        assert (ended.attributes["process.pid"], ended.attributes["process.executable.name"]) == \
            (log["process.pid"], log["process.executable.name"])
    assert environment(log) == variables
    assert ended.attributes["otel_exec.exec_id"] == log["otel_exec.exec_id"]
    assert log["process.user.id"] == os.geteuid() and log["process.parent_pid"] == os.getpid()
    assert span.name == log["process.executable.name"] and span.trace_id == rec.trace_id
    assert (span.attributes["process.exit.code"], span.attributes["error.type"]) == (3, "3")
    if span_attributes == "slim":
        late = {k for k in span.attributes if "executable" in k and k != "process.executable.path"}
        assert set(span.attributes) - late == SLIM_SPAN_KEYS
        shared = SLIM_SPAN_KEYS - {"otel_exec.span.ended_by", "process.exit.code", "error.type"}
    else:
        shared = {k for k in log if not k.startswith(PER_VARIABLE)}
        assert not environment(span.attributes)
    assert {k: span.attributes[k] for k in shared} == {k: log[k] for k in shared}


def test_record_attributes_full_and_env_attributes_n_give_the_earlier_shapes(collector: Collector,
                                                                            tmp_path: Path) -> None:
    """--record-attributes full: the exit record carries the pid and the
    executable's name again; --env-attributes 2: the first two variables as
    process.environment_variable.KEY attributes, the others packed."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    run = AgentRun(tmp_path, "--endpoint", collector.grpc_endpoint, "--record-attributes", "full",
                   "--env-attributes", "2",
                   env=dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="100", OTEL_BLRP_SCHEDULE_DELAY="100"))
    mark = new_mark()
    rec, span, ended = one_exec(collector, run, ["/bin/true"], mark, OE_SECOND="2", OE_THIRD="3")
    log = rec.attributes
    assert (log[PER_VARIABLE + "PATH"], log[PER_VARIABLE + "OE_TEST_MARK"]) == (marked_env(mark)["PATH"], mark)
    assert log[PACKED] == ["OE_SECOND=2", "OE_THIRD=3"] and len([k for k in log if k.startswith(PER_VARIABLE)]) == 2
    assert ended.attributes["process.pid"] == log["process.pid"] == span.attributes["process.pid"]
    assert ended.attributes["process.executable.name"] == log["process.executable.name"] == "true"
    assert ended.attributes["process.exit.code"] == 0
