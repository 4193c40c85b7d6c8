"""What the agent does with each kind of collector failure, run for real:
real execs, the real agent, a collector (testkit/fake_collector.py) that
refuses, throttles, stalls or accepts in part on cue, over OTLP/gRPC and
OTLP/HTTP.

Every test checks the accounting, not only that something happened: the
agent's counters in its final stderr line, in a --stats-interval line and
(where the agent exports it) in its own metrics at the collector equal what
the collector saw; every marked exec is delivered or counted as rejected;
the spool is left empty (a dropped batch is a clean cursor move).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import grpc
import pytest

from tests.helpers import agent_run
from tests.helpers.agent_run import (EXPORT_FAILED_PREFIX, LOST_PREFIX, STOPPED_PREFIX, AgentRun, kernel_available,
                                      marked, marked_env, new_mark)
from testkit.environment import variable
from testkit.fake_collector import OK, FakeCollector, Reply, attributes

pytestmark = pytest.mark.kernel

PROTOCOLS = ("grpc", "http/protobuf")
MARK = "OE_TEST_MARK"  # the variable marked_env() sets
TRUE = shutil.which("true") or "/bin/true"
FAULTS = Path(__file__).resolve().parents[1] / "helpers" / "faults"
ROOT = Path(__file__).resolve().parents[2]


def mark_of(record: Any) -> str | None:
    """The OE_TEST_MARK of a record's environment, packed or not."""
    return variable(attributes(record), MARK)


def agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    # Short batching delays; the agent's own metrics only at its stop.
    env.update(OTEL_BLRP_SCHEDULE_DELAY="100", OTEL_BSP_SCHEDULE_DELAY="100", OTEL_EXPORTER_OTLP_TIMEOUT="2",
               OTEL_METRIC_EXPORT_INTERVAL="600000")
    env.update(extra)
    return env


def start_agent(tmp_path: Path, fc: FakeCollector, protocol: str, *args: str, **env: str) -> AgentRun:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    return AgentRun(tmp_path, "--exporter", "otlp,console", "--endpoint", fc.endpoint(protocol),
                    "--protocol", protocol, "--stats-interval", "0.2", *args, env=agent_env(**env))


def final_counters(err: str) -> dict[str, int]:
    assert err.count(STOPPED_PREFIX) == 1, err
    return agent_run.stop_line(err)


def stats_lines(err: str) -> list[dict[str, int]]:
    return [{k: int(v.rstrip("B")) for k, v in line.items()} for line in agent_run.stats_lines(err)]


def run_marked(agent: AgentRun, count: int, pause: float = 0.3, exe: str = TRUE) -> list[str]:
    """count execs of `exe` (`true` or a link to it), each with its own
    mark, seen by the agent."""
    marks = []
    for _ in range(count):
        mark = new_mark()
        subprocess.run([exe], env=marked_env(mark), check=True)
        agent.one(marked(mark))
        marks.append(mark)
        subprocess.run(["sleep", str(pause)], check=True)
    return marks


def wait_for_stats(agent: AgentRun, fc: FakeCollector, key: str, want: Callable[[], set[int]]) -> dict[str, int]:
    """A --stats-interval line whose `key` is one of want(): the values the
    collector's tally went through (a stats line may lag the collector by
    a request or two on a busy machine)."""
    line = fc.wait(lambda: next((s for s in reversed(stats_lines(agent.err.read_text())[-5:])
                                 if s.get(key) in want()), None), timeout=20)
    assert line, f"no stats line with {key} in {sorted(want())}: {stats_lines(agent.err.read_text())[-3:]}"
    return line


def refused_tallies(fc: FakeCollector, signal: str) -> set[int]:
    """The collector's count of refused records after each request, from the
    first refusal on (one export thread per signal: the agent counts them
    in the same order)."""
    total, seen = 0, set()
    for r in fc.requests(signal):
        total += 0 if r.accepted else len(r.records)
        if total:
            seen.add(total)
    return seen


def check_clean_spool(counters: dict[str, int]) -> None:
    assert counters["logs_spool_bytes"] == 0 and counters["traces_spool_bytes"] == 0, counters


# --- not retryable: dropped, counted, logged once ---------------------------------------------

REFUSALS = {
    "grpc": [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED],
    "http/protobuf": [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED],  # 400, 401
}


@pytest.mark.parametrize("protocol,code", [(p, c) for p, cs in REFUSALS.items() for c in cs],
                         ids=lambda v: getattr(v, "name", v))
def test_refused_batches_are_dropped_counted_and_logged_once(protocol: str, code: grpc.StatusCode,
                                                             tmp_path: Path) -> None:
    message = "no thanks: this tenant is closed"

    def policy(signal: str, records: list[Any], nth: int) -> Reply:
        return Reply(code=code, message=message) if signal == "logs" else OK

    with FakeCollector(policy) as fc:
        agent = start_agent(tmp_path, fc, protocol)
        try:
            marks = run_marked(agent, 3)
            for mark in marks:  # each arrived, and was refused
                assert fc.wait(lambda: fc.marked("logs", MARK, mark, accepted=False)), mark
            stats = wait_for_stats(agent, fc, "rejected_logs", lambda: refused_tallies(fc, "logs"))
        finally:
            rc, err = agent.stop()
        assert rc == 0, err
        counters = final_counters(err)
        assert counters["logs_rejected"] == fc.refused_count("logs") >= len(marks) > 0
        assert stats["rejected_logs"] <= counters["logs_rejected"]
        assert counters["logs_exported"] == fc.accepted_count("logs") == 0
        assert counters["logs_export_retries"] == 0  # not retried: each request was sent once
        assert len({id(r) for r in fc.requests("logs")}) == len(fc.requests("logs"))
        assert fc.metric("otel_exec.lost", {"reason": "logs_rejected"}) == counters["logs_rejected"]
        check_clean_spool(counters)
        reason = code.name if protocol == "grpc" else f"HTTP {Reply(code=code).http_status}"
        failures = [line for line in err.splitlines() if line.startswith(EXPORT_FAILED_PREFIX)]
        assert len(failures) == 1, failures  # once per (signal, reason), however many batches
        assert reason in failures[0] and message in failures[0]
        assert len(fc.requests("logs")) > 1
        assert LOST_PREFIX in err and "logs_rejected" in err


# --- too large: split down to the one bad record -------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_too_large_batch_is_split_and_only_the_bad_record_dropped(protocol: str, tmp_path: Path) -> None:
    bad, good = new_mark(), new_mark()

    def policy(signal: str, records: list[Any], nth: int) -> Reply:
        if signal == "logs" and any(mark_of(r) == bad for r in records):
            # HTTP 413; gRPC RESOURCE_EXHAUSTED without RetryInfo.
            return Reply(code=grpc.StatusCode.RESOURCE_EXHAUSTED, http=413, message="request too large")
        return OK

    with FakeCollector(policy) as fc:
        # A long schedule delay: the burst below is one batch.
        agent = start_agent(tmp_path, fc, protocol, OTEL_BLRP_SCHEDULE_DELAY="1500")
        try:
            script = "; ".join([f"{TRUE}"] * 5 + [f"OE_TEST_MARK={bad} {TRUE}"] + [f"{TRUE}"] * 5)
            subprocess.run(["/bin/sh", "-c", script], env=marked_env(good), check=True)
            assert len(agent.find(marked(good), count=10)) >= 10
            assert fc.wait(lambda: len(fc.marked("logs", MARK, good)) >= 10), "the good records did not arrive"
            assert fc.wait(lambda: any(len(r.records) == 1 for r in fc.requests("logs")
                                       if any(mark_of(x) == bad for x in r.records)))
            wait_for_stats(agent, fc, "rejected_logs", lambda: {1})
        finally:
            rc, err = agent.stop()
        assert rc == 0, err
        with_bad = [len(r.records) for r in fc.requests("logs")
                    if any(mark_of(x) == bad for x in r.records)]
        # Halves, each smaller than the last, down to the bad record alone.
        assert with_bad[0] >= 2 and with_bad[-1] == 1, with_bad
        assert all(a > b for a, b in zip(with_bad, with_bad[1:])), with_bad
        assert not fc.marked("logs", MARK, bad)  # never accepted
        counters = final_counters(err)
        assert counters["logs_rejected"] == 1
        assert counters["logs_exported"] == fc.accepted_count("logs")
        assert len(fc.marked("logs", MARK, good)) == 11  # the shell and its ten `true`s
        check_clean_spool(counters)
        assert sum("Failed to export logs" in line for line in err.splitlines()) == 1


# --- retryable: retried, with the server's delay -------------------------------------------------

RETRYABLE = {
    # First request throttled with a delay (HTTP 429 + Retry-After; gRPC
    # RESOURCE_EXHAUSTED + RetryInfo), then accepted.
    "throttled": (lambda nth: Reply(code=grpc.StatusCode.RESOURCE_EXHAUSTED, message="slow down",
                                    retry_after_s=3) if nth == 0 else OK, 1),
    # Two requests unavailable (HTTP 503, gRPC UNAVAILABLE), then accepted.
    "unavailable": (lambda nth: Reply(code=grpc.StatusCode.UNAVAILABLE, message="restarting")
                    if nth < 2 else OK, 2),
    # HTTP 502 / gRPC ABORTED once.
    "bad_gateway": (lambda nth: Reply(code=grpc.StatusCode.ABORTED, http=502) if nth == 0 else OK, 1),
    # The first request hangs past OTEL_EXPORTER_OTLP_TIMEOUT (2 s).
    "hangs": (lambda nth: Reply(hang_s=5) if nth == 0 else OK, 1),
}


@pytest.mark.parametrize("case", sorted(RETRYABLE))
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retryable_failures_are_retried_until_delivered(protocol: str, case: str, tmp_path: Path) -> None:
    answer, retries = RETRYABLE[case]

    def policy(signal: str, records: list[Any], nth: int) -> Reply:
        return answer(nth) if signal == "logs" else OK

    with FakeCollector(policy) as fc:
        agent = start_agent(tmp_path, fc, protocol)
        try:
            marks = run_marked(agent, 2, pause=0.1)
            for mark in marks:
                assert fc.wait(lambda: fc.marked("logs", MARK, mark), timeout=30), mark
            stats = wait_for_stats(agent, fc, "export_retries", lambda: {retries})
        finally:
            rc, err = agent.stop()
        assert rc == 0, err
        counters = final_counters(err)
        assert counters["logs_export_retries"] == stats["export_retries"] == retries
        assert counters["logs_rejected"] == 0
        assert counters["logs_exported"] == fc.accepted_count("logs")
        assert fc.metric("otel_exec.export.retries", {"signal": "logs"}) == retries
        requests = fc.requests("logs")
        # The retry carried the refused records again.
        refused = {r.observed_time_unix_nano for q in requests[:retries] for r in q.records}
        accepted = {r.observed_time_unix_nano for q in requests[retries:] if q.accepted for r in q.records}
        assert refused <= accepted
        gap = requests[retries].at - requests[retries - 1].at
        if case == "throttled":
            assert gap >= 2.5, gap  # the server's 3 s, not the first backoff step (~1 s)
        else:
            assert gap >= 0.7, gap  # backoff: 1 s less 20 % jitter
        check_clean_spool(counters)
        assert "Failed to export logs" in err and "retrying in" in err


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_without_spool_a_failing_batch_is_held_and_retried(protocol: str, tmp_path: Path) -> None:
    """--no-spool: nothing on disk to read the batch back from, so the
    exporter keeps the request and sends it again."""
    def policy(signal: str, records: list[Any], nth: int) -> Reply:
        return Reply(code=grpc.StatusCode.UNAVAILABLE) if signal == "logs" and nth < 2 else OK

    # While the batch is refused (seconds of backoff), what else the agent
    # reports waits in the in-memory queue, and what does not fit is counted
    # as overflow: so only this test's exec, under a name of its own (comm),
    # not the execs of the rest of the machine (a storm, say) nor the
    # processes running at the start (--comm selects those too). A loaded
    # machine may take seconds to answer a request: a timeout would be a
    # third retry.
    true = tmp_path / "oe-held-true"
    true.symlink_to(TRUE)
    with FakeCollector(policy) as fc:
        agent = start_agent(tmp_path, fc, protocol, "--no-spool", "--comm", true.name,
                            OTEL_EXPORTER_OTLP_TIMEOUT="30")
        try:
            [mark] = run_marked(agent, 1, pause=0, exe=str(true))
            assert fc.wait(lambda: fc.marked("logs", MARK, mark), timeout=30)
            wait_for_stats(agent, fc, "export_retries", lambda: {2})
        finally:
            rc, err = agent.stop()
        assert rc == 0, err
        counters = final_counters(err)
        assert counters["logs_export_retries"] == 2
        assert counters["logs_failed"] == counters["logs_rejected"] == counters["logs_queue_overflow"] == 0
        assert counters["logs_exported"] == fc.accepted_count("logs")
        requests = fc.requests("logs")
        assert [len(r.records) for r in requests[:3]] == [len(requests[0].records)] * 3  # the same batch, resent


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_gzip_compression_from_the_environment(protocol: str, tmp_path: Path) -> None:
    """gRPC: the records arrive (grpcio's server decompresses without telling
    the handler); HTTP: every request came with Content-Encoding: gzip."""
    with FakeCollector() as fc:
        agent = start_agent(tmp_path, fc, protocol, OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
        try:
            [mark] = run_marked(agent, 1, pause=0)
            assert fc.wait(lambda: fc.marked("logs", MARK, mark))
        finally:
            rc, err = agent.stop()
        assert rc == 0, err
        if protocol != "grpc":
            assert fc.gzipped and all(fc.gzipped)


# --- partial success ------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_partial_success_counts_the_rejected_records(protocol: str, tmp_path: Path) -> None:
    mark = new_mark()

    def policy(signal: str, records: list[Any], nth: int) -> Reply:
        if signal in ("logs", "traces") and any(mark_of(r) == mark for r in records):
            return Reply(partial_rejected=1, message="one record had a bad attribute")
        return OK

    with FakeCollector(policy) as fc:
        agent = start_agent(tmp_path, fc, protocol)
        try:
            subprocess.run([TRUE], env=marked_env(mark), check=True)
            agent.one(marked(mark))
            assert fc.wait(lambda: fc.marked("logs", MARK, mark))
            stats = wait_for_stats(agent, fc, "rejected_logs", lambda: {1})
        finally:
            rc, err = agent.stop()
        assert rc == 0, err
        counters = final_counters(err)
        assert counters["logs_rejected"] == stats["rejected_logs"] == 1
        assert counters["logs_exported"] == fc.accepted_count("logs")
        assert fc.metric("otel_exec.lost", {"reason": "logs_rejected"}) == 1
        [line] = [x for x in err.splitlines() if x.startswith(EXPORT_FAILED_PREFIX)]
        assert "partial success" in line and "one record had a bad attribute" in line


# --- the export loop survives -----------------------------------------------------------------------

@pytest.mark.parametrize("fault,counter,metric", [
    ("send_raises", "logs_export_errors", "otel_exec.export.errors"),
    ("thread_dies", "logs_export_thread_restarts", "otel_exec.export.thread_restarts"),
])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_export_goes_on_after_an_unexpected_error_or_a_dead_thread(protocol: str, fault: str, counter: str,
                                                                    metric: str, tmp_path: Path) -> None:
    with FakeCollector() as fc:
        agent = start_agent(tmp_path, fc, protocol, PYTHONPATH=str(FAULTS), OTEL_EXEC_TEST_FAULT=fault)
        try:
            marks = run_marked(agent, 2, pause=0.1)
            for mark in marks:
                assert fc.wait(lambda: fc.marked("logs", MARK, mark), timeout=30), mark
            key = counter.removeprefix("logs_")
            stats = wait_for_stats(agent, fc, key, lambda: {1})
        finally:
            rc, err = agent.stop()
        assert rc == 0, err
        counters = final_counters(err)
        assert counters[counter] == stats[key] == 1
        assert counters["logs_exported"] == fc.accepted_count("logs")
        assert counters["logs_rejected"] == 0
        assert fc.metric(metric, {"signal": "logs"}) == 1
        assert "Traceback" in err and "injected" in err
        check_clean_spool(counters)


# --- bad configuration: exit 2 at start -------------------------------------------------------------

BAD_CONFIG = {
    "header_name": (["--header", "X Tenant=acme"], {}, "header name 'x tenant'"),
    "header_value": (["--header", "x-tenant=ac\x01me"], {}, "not printable ASCII"),
    "env_header_value": ([], {"OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=ac%0Ame"}, "OTEL_EXPORTER_OTLP_HEADERS"),
    "endpoint_scheme": (["--endpoint", "ftp://127.0.0.1:4317"], {}, "is not an http:// or https:// URL"),
    "endpoint_port": (["--endpoint", "http://127.0.0.1:99999"], {}, "invalid port"),
    "ca_missing": ([], {"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"},
                   "OTEL_EXPORTER_OTLP_CERTIFICATE=/nonexistent/ca.pem: No such file"),
    "ca_garbage": ([], {"OTEL_EXPORTER_OTLP_CERTIFICATE": "{garbage}"}, "not a PEM certificate"),
    "key_without_cert": ([], {"OTEL_EXPORTER_OTLP_CLIENT_KEY": "{garbage}"}, "without"),
    "timeout": ([], {"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
    "compression": ([], {"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "use gzip or none"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIG))
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_export_configuration_fails_at_start_with_exit_2(protocol: str, case: str, tmp_path: Path) -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    args, env, expected = BAD_CONFIG[case]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    env = {k: v.replace("{garbage}", str(garbage)) for k, v in env.items()}
    if "--endpoint" not in args:  # TLS, so that the certificate settings apply
        args = [*args, "--endpoint", "https://127.0.0.1:4317"]
    out = subprocess.run([sys.executable, "-m", "otel_exec", "run", "--exporter", "otlp", "--protocol", protocol,
                          "--spool-dir", str(tmp_path / "spool"), "--duration", "5", *args],
                         cwd=ROOT, env=agent_env(**env), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("otel-exec: error: "), out.stderr
    assert expected in lines[0], lines[0]
    assert not re.search(r"Traceback", out.stderr)
