"""OpenTelemetry's own variables as OTel users expect them:
OTEL_{LOGS,TRACES,METRICS}_EXPORTER per signal, OTEL_SDK_DISABLED, the
per-signal export timeouts, OTEL_LOG_LEVEL; end to end through rotel,
OTEL_TRACES_EXPORTER=none sends only log records."""
from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.agent_run import marked_env, new_mark, otlp_agent_run
from tests.helpers.collector import Collector
from otel_exec import cli
from otel_exec.config import log_level, signal_exporters
from otel_exec.errors import UsageError
from otel_exec.export.otlp.transport import OtlpOptions, transport_settings
from testkit.environment import variable



@pytest.mark.parametrize("chosen, env, expected", [
    (("otlp",), {}, {"logs": ("otlp",), "traces": ("otlp",), "metrics": ("otlp",)}),
    (("console",), {}, {"logs": ("console",), "traces": (), "metrics": ()}),
    (("otlp", "console"), {"OTEL_TRACES_EXPORTER": "none"},
     {"logs": ("otlp", "console"), "traces": (), "metrics": ("otlp",)}),
    (("otlp",), {"OTEL_LOGS_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "console"},
     {"logs": (), "traces": ("otlp",), "metrics": ("console",)}),
    (("console",), {"OTEL_LOGS_EXPORTER": "otlp, console", "OTEL_TRACES_EXPORTER": "otlp"},
     {"logs": ("otlp", "console"), "traces": ("otlp",), "metrics": ()}),
    (("otlp",), {"OTEL_SDK_DISABLED": "TRUE", "OTEL_LOGS_EXPORTER": "otlp"},
     {"logs": (), "traces": (), "metrics": ()}),
    (("otlp",), {"OTEL_SDK_DISABLED": "false"}, {"logs": ("otlp",), "traces": ("otlp",), "metrics": ("otlp",)}),
])
def test_signal_exporters(chosen, env, expected):
    assert signal_exporters(chosen, env) == expected


@pytest.mark.parametrize("env, message", [
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "'zipkin' is not one of otlp, console, none"),
    ({"OTEL_LOGS_EXPORTER": "otlp,none"}, "none cannot be combined"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "the console shows exec records, not spans"),
])
def test_signal_exporters_refuse(env, message):
    with pytest.raises(UsageError, match=message):
        signal_exporters(("otlp",), env)


def test_sdk_disabled_refuses_to_start_before_attaching(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert cli.main(["run", "--config", "", "--exporter", "otlp,console", "--duration", "1"]) == 2
    assert "nothing to do" in capsys.readouterr().err


def test_per_signal_timeouts(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "7")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2.5")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "30")
    opts = OtlpOptions("http://127.0.0.1:4317")
    assert {s: transport_settings(s, opts).timeout_s for s in ("logs", "traces", "metrics")} == {
        "logs": 7.0, "traces": 2.5, "metrics": 30.0}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "-1")
    with pytest.raises(UsageError, match="OTEL_EXPORTER_OTLP_LOGS_TIMEOUT='-1' is not a positive number"):
        transport_settings("logs", opts)


@pytest.mark.parametrize("raw, level, warns", [
    ("", logging.INFO, False), ("debug", logging.DEBUG, False), ("INFO", logging.INFO, False),
    ("warn", logging.WARNING, False), ("error", logging.ERROR, False), ("loud", logging.INFO, True)])
def test_log_level(raw, level, warns):
    got, warning = log_level({"OTEL_LOG_LEVEL": raw})
    assert got == level and bool(warning) is warns


def test_log_level_reaches_the_agents_loggers(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OTEL_LOG_LEVEL", "error")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")  # stops right after the set-up
    cli.main(["run", "--config", ""])
    assert not logging.getLogger("otel_exec.export.otlp.sink").isEnabledFor(logging.WARNING)
    monkeypatch.setenv("OTEL_LOG_LEVEL", "debug")
    cli.main(["run", "--config", ""])
    assert logging.getLogger("otel_exec.export.otlp.sink").isEnabledFor(logging.DEBUG)
    logging.getLogger().setLevel(logging.WARNING)


@pytest.mark.kernel
def test_traces_exporter_none_sends_only_logs(collector: Collector, tmp_path: Path):
    run = otlp_agent_run(tmp_path, collector.grpc_endpoint, OTEL_TRACES_EXPORTER="none")
    mark = new_mark()
    subprocess.run(["/bin/sh", "-c", "/bin/true; /bin/true"], env=marked_env(mark), check=True)
    logs = collector.wait_for_logs(lambda r: variable(r.attributes, "OE_TEST_MARK") == mark, count=3, timeout=15)
    span_ids = {r.span_id for r in logs}
    # Without spans, how each process ended still arrives: as its exit record.
    exits = collector.wait_for_logs(lambda r: r.event_name == "otel_exec.process.exit" and r.span_id in span_ids,
                                    count=3, timeout=15)
    rc, err = run.stop()
    assert rc == 0, err
    assert len(logs) == 3
    assert all(span_ids)  # the records still name their process spans
    assert {r.span_id for r in exits} == span_ids and all(r.attributes["process.exit.code"] == 0 for r in exits)
    time.sleep(1)  # the spans would have been flushed by the stop; give rotel time to write them
    assert not [s for s in collector.spans() if s.span_id in span_ids]
    assert "traces_exported" not in err and "logs_exported=" in err
