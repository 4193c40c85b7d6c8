"""The redaction corpus (tests/helpers/redaction_corpus.py) against the redactor,
the live kernel path (console JSONL and OTLP at rotel) and the /proc seed
path; hostile input; output that cannot spoof a terminal or a JSONL reader;
trace-context trust on real execs."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.agent_run import AgentRun, kernel_available, marked_env, new_mark
from tests.helpers.collector import Collector
from otel_exec.export.console import json_line
from otel_exec.policy.redact import REDACTED, RedactionPolicy
from tests.helpers.redaction_corpus import LOOKALIKES, SECRET_CASES
from testkit.environment import PACKED, PER_VARIABLE, environment, variable

TRUE = "/bin/true"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def _env_list(env: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in env.items()]


def test_corpus_size() -> None:
    assert len(SECRET_CASES) >= 80 and len(LOOKALIKES) >= 40


@pytest.mark.parametrize("argv,env,secrets", SECRET_CASES)
def test_corpus_secrets_never_show(argv: list[str], env: dict[str, str], secrets: list[str]) -> None:
    p = RedactionPolicy()
    out = "\n".join(p.argv(argv) + p.env(_env_list(env)))
    for secret in secrets:
        assert secret not in out
    assert len(p.argv(argv)) == len(argv)


@pytest.mark.parametrize("argv,env", LOOKALIKES)
def test_corpus_lookalikes_stay_intact(argv: list[str], env: dict[str, str]) -> None:
    p = RedactionPolicy()
    assert p.argv(argv) == argv
    assert p.env(_env_list(env)) == _env_list(env)


def test_user_rules_capture_groups_and_allow_list() -> None:
    p = RedactionPolicy(extra_patterns=[r"--db=\w+:(\w+)", r"corp-(\d+)-(\d+)"], allow_patterns=[r"ghp_0{36}"])
    assert p.argv(["app", "--db=user:hunter2", "id corp-12-34"]) == \
        ["app", f"--db=user:{REDACTED}", f"id corp-{REDACTED}-{REDACTED}"]
    fake = "ghp_" + "0" * 36
    assert p.argv(["echo", fake, "ghp_" + "1" * 36]) == ["echo", fake, REDACTED]
    assert p.argv(["gh", "--token", fake]) == ["gh", "--token", fake]
    assert p.env([f"GH_TOKEN={fake}", "GH_PAT=x"]) == [f"GH_TOKEN={fake}", f"GH_PAT={REDACTED}"]


def _secret_texts() -> list[str]:
    return [s for _, _, secrets in SECRET_CASES for s in secrets]


def _assert_clean(where: str, text: str) -> None:
    for secret in _secret_texts():
        assert secret not in text, f"{secret!r} arrived in {where}"


# -- hostile input ------------------------------------------------------------

HOSTILE_PIECES = ["a://", "b:", "@", "eyJ", "eyJa.", "Bearer%20", "Token ", '"a":"', '\\"', "\\", "-----BEGIN A-----",
                  "=", ";", "password=", "&", "?", "#", "/", " ", " -p", "mysql", "-----END ", "x", "AKIA", "ghp_",
                  "Pwd=", "{", ":", "\u202e", "\udcff"]


def _cost(fn, arg) -> float:
    """CPU seconds of this thread, best of five: other processes on the
    machine slow the wall clock, not this count."""
    best = float("inf")
    for _ in range(5):
        t = time.thread_time()
        fn(arg)
        best = min(best, time.thread_time() - t)
    return best


@settings(max_examples=20, deadline=None)
@given(st.lists(st.sampled_from(HOSTILE_PIECES), min_size=1, max_size=8))
def test_hostile_input_never_raises_and_stays_linear(pieces: list[str]) -> None:
    """A unit of hostile fragments repeated to n and 16n characters: linear
    scans take ~16 times as long, a quadratic one 256 times. The bound is
    generous (64) and the cost is CPU time, the best of five runs, so a
    loaded machine does not fail it; what it catches is a rule that re-reads
    its input."""
    unit = "".join(pieces)
    n = max(1, 2000 // len(unit))
    small, large = unit * n, unit * (16 * n)
    # A fresh policy each run, and no string twice: its memo of unchanged
    # strings (short ones only) must not turn the small runs into lookups.
    for fn in (lambda s: RedactionPolicy().argv(["x", s, "-" + s]), lambda s: RedactionPolicy().env([f"V={s}"]),
               lambda s: RedactionPolicy().argv(s.split(" "))):
        fn(small)  # errors surface here
        t_small = max(_cost(fn, small), 1e-4)
        assert _cost(fn, large) < 64 * t_small


# -- the live kernel path -----------------------------------------------------

# The environment's two forms (docs/attributes.md#the-environment): packed
# into otel_exec.env.rest (the default) and one attribute per variable.
ENV_FORMS = {"packed": [], "per_variable": ["--env-attributes", "48"]}


@pytest.fixture(params=sorted(ENV_FORMS))
def otlp_console_agent(request: pytest.FixtureRequest, collector: Collector, tmp_path: Path) -> Iterator[AgentRun]:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, OTEL_BLRP_SCHEDULE_DELAY="200", OTEL_BSP_SCHEDULE_DELAY="200")
    run = AgentRun(tmp_path, "--exporter", "otlp,console", "--endpoint", collector.grpc_endpoint,
                   *ENV_FORMS[request.param], env=env)
    yield run
    rc, err = run.stop()
    assert rc == 0, err


def _console_env(event: dict) -> dict[str, str]:
    """A console event's KEY=VALUE entries as a record's environment holds
    them: the first value of a key."""
    env: dict[str, str] = {}
    for entry in event["env"]:
        key, sep, value = entry.partition("=")
        if sep:
            env.setdefault(key, value)
    return env


def _record_text(rec: object) -> str:
    return json.dumps({"body": getattr(rec, "body", None), "attributes": rec.attributes}, default=repr)


@pytest.mark.kernel
def test_corpus_on_the_kernel_path(otlp_console_agent: AgentRun, collector: Collector,
                                   request: pytest.FixtureRequest) -> None:
    """Every case of the corpus through the kernel, to the console and over
    OTLP, with the environment in each of its forms."""
    packed = request.node.callspec.params["otlp_console_agent"] == "packed"
    mark = new_mark()
    cases = [(argv, env) for argv, env, _ in SECRET_CASES] + LOOKALIKES
    for i, (argv, env) in enumerate(cases):
        subprocess.run(argv or ["true"], executable=TRUE, env={**marked_env(mark, OE_CASE=str(i)), **env},
                       check=True)
    events = otlp_console_agent.find(lambda e: f"OE_TEST_MARK={mark}" in e["env"], count=len(cases), timeout=30)
    logs = collector.wait_for_logs(lambda r: variable(r.attributes, "OE_TEST_MARK") == mark, count=len(cases),
                                   timeout=30)
    assert len(events) == len(logs) == len(cases)
    ids = {r.span_id for r in logs}
    otlp_console_agent.stop()
    spans = collector.wait_for_spans(lambda s: s.span_id in ids, count=len(cases), timeout=30)
    console = {int(next(e for e in ev["env"] if e.startswith("OE_CASE="))[8:]): ev for ev in events}
    by_case = {int(variable(r.attributes, "OE_CASE") or -1): r for r in logs}
    for i, ev in console.items():
        _assert_clean(f"console record of case {i}", json.dumps(ev))
    for i, rec in by_case.items():
        _assert_clean(f"OTLP log record of case {i}", _record_text(rec))
        # Redacted as the console's, value for value, in the form asked for.
        assert environment(rec.attributes) == _console_env(console[i]), i
        per_variable = [k for k in rec.attributes if k.startswith(PER_VARIABLE)]
        if packed:
            assert not per_variable and PACKED in rec.attributes
        else:
            assert per_variable and PACKED not in rec.attributes
    for s in spans:
        _assert_clean("OTLP span", _record_text(s))
    for j, (argv, env) in enumerate(LOOKALIKES):
        i = len(SECRET_CASES) + j
        expected_argv = argv or ["true"]
        assert console[i]["argv"] == expected_argv
        assert by_case[i].attributes["process.command_args"] == expected_argv
        for k, v in env.items():
            assert f"{k}={v}" in console[i]["env"]
            assert variable(by_case[i].attributes, k) == v
    for i, (argv, env, _) in enumerate(SECRET_CASES):
        assert len(console[i]["argv"]) == len(argv or ["true"])  # redacted element for element
        assert REDACTED in json.dumps(console[i])


@pytest.mark.kernel
def test_corpus_on_the_proc_seed_path(collector: Collector, tmp_path: Path) -> None:
    """Processes running before the agent starts: their argv, read from
    /proc, goes through the same policy (observed records and spans)."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    mark = new_mark()
    cases = [argv for argv, _, _ in SECRET_CASES if argv] + [argv for argv, _ in LOOKALIKES if argv]
    # The shell blocks in `read` itself: its own argv is the case's.
    procs = [subprocess.Popen(["/bin/sh", "-c", "read x", *argv], stdin=subprocess.PIPE, env=marked_env(mark))
             for argv in cases]
    try:
        time.sleep(0.2)
        started = time.time_ns()
        run = AgentRun(tmp_path, "--endpoint", collector.grpc_endpoint,
                       env=dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="100", OTEL_BLRP_SCHEDULE_DELAY="100"))
        rc, err = run.stop()
        assert rc == 0, err
        pids = {p.pid: argv for p, argv in zip(procs, cases)}
        # Only this agent's, not by the pid alone: the session's collector
        # holds earlier agents' observed records, whose pids may be these
        # (pid_max can be 32768); the spans by their records' span ids.
        observed = collector.wait_for_logs(lambda r: r.event_name == "otel_exec.process.observed"
                                           and r.observed_timestamp >= started
                                           and r.attributes.get("process.pid") in pids, count=len(pids), timeout=30)
        span_ids = {r.span_id for r in observed}
        spans = collector.wait_for_spans(lambda s: s.span_id in span_ids, count=len(pids), timeout=30)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert {r.attributes["process.pid"] for r in observed} == set(pids)
    for rec in [*observed, *spans]:
        _assert_clean(f"seeded record of pid {rec.attributes['process.pid']}", _record_text(rec))
    lookalike_argvs = [argv for argv, _ in LOOKALIKES if argv]
    for rec in observed:
        argv = pids[rec.attributes["process.pid"]]
        args = rec.attributes["process.command_args"]
        assert args[:3] == ["/bin/sh", "-c", "read x"] and len(args) == 3 + len(argv)
        if argv in lookalike_argvs:
            assert args[3:] == argv


# -- output that cannot spoof -------------------------------------------------

SPOOF = "a\u009b31mb\u0085c\u2028d\u2029e\u202ef\u2066g\u200fh\u061ci\x1b[2Jj"
RAW_FORBIDDEN = ["\u009b", "\u0085", "\u2028", "\u2029", "\u202e", "\u2066", "\u200f", "\u061c", "\x1b"]


def test_json_line_escapes_every_invisible_control() -> None:
    line = json_line({"argv": [SPOOF], "k": {"n": SPOOF}})
    assert not any(c in line for c in RAW_FORBIDDEN)
    assert json.loads(line) == {"argv": [SPOOF], "k": {"n": SPOOF}}
    line.encode("utf-8")
    assert json_line({"a": "x\x7f"}) == '{"a": "x\\u007f"}'  # an ASCII line has DEL escaped too


@pytest.mark.kernel
@pytest.mark.parametrize("fmt", ["jsonl", "pretty"])
def test_console_escapes_controls_from_real_execs(tmp_path: Path, fmt: str) -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    binary = tmp_path / f"bin{SPOOF[:6]}\u202eexe"
    binary.write_bytes(Path(TRUE).read_bytes())
    binary.chmod(0o755)
    # Its own output file: AgentRun reads its own as JSON Lines.
    out = tmp_path / f"out.{fmt}"
    run = AgentRun(tmp_path / "agent", "--format", fmt, "--output", str(out))
    mark = new_mark()
    try:
        subprocess.run([str(binary), SPOOF, "--x"], env=marked_env(mark, SPOOFED=SPOOF), check=True)
        deadline = time.monotonic() + 10
        while "--x" not in out.read_text(encoding="utf-8"):
            assert time.monotonic() < deadline, run.err.read_text()
            time.sleep(0.05)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    text = out.read_text(encoding="utf-8", errors="strict")
    line = next(ln for ln in text.splitlines() if "bin" in ln and ("--x" in ln))
    assert not any(c in line for c in RAW_FORBIDDEN)
    if fmt == "jsonl":
        ev = json.loads(line)
        assert ev["argv"][1] == SPOOF and f"SPOOFED={SPOOF}" in ev["env"] and ev["pathname"] == str(binary)
    else:
        assert "\\x9b" in line and "\\u202e" in line and "\\u2028" in line


# -- trace-context trust ------------------------------------------------------

@pytest.mark.kernel
@pytest.mark.parametrize("as_root", [False, True])
def test_trust_traceparent_root(collector: Collector, tmp_path: Path, as_root: bool) -> None:
    """An unprivileged user's TRACEPARENT does not attach its process to
    that trace under --trust-traceparent root: the span nests under its
    lineage parent and the value is recorded; root's is followed."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    run = AgentRun(tmp_path, "--endpoint", collector.grpc_endpoint, "--trust-traceparent", "root",
                   env=dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="100", OTEL_BLRP_SCHEDULE_DELAY="100"))
    mark = new_mark()
    tp = f"00-{TRACE}-{PARENT}-01"
    drop = [] if as_root else ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    try:
        # env (as the user) sets TRACEPARENT and execs true: true's image
        # brings a TRACEPARENT its previous image (env) did not have.
        subprocess.run([*drop, "/usr/bin/env", f"TRACEPARENT={tp}", TRUE], env=marked_env(mark), check=True)
        logs = collector.wait_for_logs(lambda r: variable(r.attributes, "OE_TEST_MARK") == mark
                                       and r.attributes["process.executable.name"] == "true", timeout=15)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    (log,) = logs
    (span,) = collector.wait_for_spans(lambda s: s.span_id == log.span_id, timeout=15)
    assert log.attributes["process.real_user.id"] == (0 if as_root else 65534)
    if as_root:
        assert span.trace_id == TRACE and span.parent_span_id == PARENT
        assert "otel_exec.traceparent.untrusted" not in span.attributes
    else:
        (env_log,) = collector.wait_for_logs(lambda r: variable(r.attributes, "OE_TEST_MARK") == mark
                                             and r.attributes["process.executable.name"] == "env", timeout=15)
        assert span.trace_id != TRACE and span.parent_span_id == env_log.span_id
        assert span.attributes["otel_exec.traceparent.untrusted"] == tp


@pytest.mark.kernel
def test_trust_traceparent_on_the_proc_seed_path(collector: Collector, tmp_path: Path) -> None:
    """A process an unprivileged user started before the agent, with a
    TRACEPARENT of its own: its /proc span nests under its parent's, and
    the value is recorded."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    tp = f"00-{TRACE}-{PARENT}-01"
    user = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
                             "read x"], stdin=subprocess.PIPE, env=marked_env(new_mark(), TRACEPARENT=tp))
    try:
        time.sleep(0.2)
        started = time.time_ns()
        run = AgentRun(tmp_path, "--endpoint", collector.grpc_endpoint, "--trust-traceparent", "root",
                       env=dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="100", OTEL_BLRP_SCHEDULE_DELAY="100"))
        rc, err = run.stop()
        assert rc == 0, err
        # This agent's record, not any with the pid: the session's collector
        # holds earlier agents' /proc records, whose pids may be reused.
        (observed,) = collector.wait_for_logs(lambda r: r.event_name == "otel_exec.process.observed"
                                              and r.observed_timestamp >= started
                                              and r.attributes.get("process.pid") == user.pid, timeout=15)
        (span,) = collector.wait_for_spans(lambda s: s.span_id == observed.span_id, timeout=15)
        me = max(collector.wait_for_spans(lambda s: s.attributes.get("process.pid") == os.getpid()
                                          and s.attributes.get("otel_exec.observed_from") == "procfs", timeout=15),
                 key=lambda s: s.end_time)
    finally:
        user.kill()
        user.wait()
    assert span.attributes["otel_exec.traceparent.untrusted"] == tp
    assert span.trace_id != TRACE and span.parent_span_id == me.span_id
    assert re.search(r"untrusted_traceparent=[1-9]", err)  # at least this one


@pytest.mark.kernel
def test_env_capture_none_emits_no_environment_but_keeps_lineage(collector: Collector, tmp_path: Path) -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    run = AgentRun(tmp_path, "--exporter", "otlp,console", "--endpoint", collector.grpc_endpoint,
                   "--env-capture", "none",
                   env=dict(os.environ, OTEL_BSP_SCHEDULE_DELAY="100", OTEL_BLRP_SCHEDULE_DELAY="100"))
    marker = f"oe-none-{new_mark()}"
    try:
        subprocess.run([marker, "x"], executable=TRUE, check=True,
                       env={"TRACEPARENT": f"00-{TRACE}-{PARENT}-01", "API_TOKEN": "s3cr3t", "BAGGAGE": "k=v"})
        ev = run.one(lambda e: e["argv"][:1] == [marker])
        (log,) = collector.wait_for_logs(lambda r: r.body == f"{marker} x", timeout=15)
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    assert ev["env"] == []
    assert not environment(log.attributes) and PACKED not in log.attributes
    (span,) = collector.wait_for_spans(lambda s: s.span_id == log.span_id, timeout=15)
    assert span.trace_id == TRACE and span.parent_span_id == PARENT
