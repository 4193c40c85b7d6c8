"""The exec storm (testkit/storm.c) for tests that need many execs at a set
rate, and the storm's execs as they arrive at the collector."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.agent_run import kernel_available
from tests.helpers.collector import Collector
from testkit.environment import variable


STORM = Path(__file__).resolve().parents[2] / "testkit" / "storm.c"


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> str:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("storm") / "storm"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(STORM)], check=True)
    return str(out)


def agent_env(**extra: str) -> dict[str, str]:
    # Short export timeouts so retries come round quickly in a test.
    return dict(os.environ, OTEL_EXPORTER_OTLP_TIMEOUT="2", OTEL_BLRP_SCHEDULE_DELAY="200",
                OTEL_BSP_SCHEDULE_DELAY="200", **extra)


def run_storm(storm: str, mark: str, total: int, rate: float, program: str = "/bin/true") -> subprocess.Popen:
    """program: /bin/true, or a link to it whose path an agent's
    --path-prefix selects (its execs then only, not the machine's)."""
    env = {"PATH": "/usr/bin:/bin", "OE_TEST_MARK": mark}
    return subprocess.Popen([storm, "2", str(total), str(rate), program], env=env, stdout=subprocess.DEVNULL)


def storm_execs(collector: Collector, mark: str) -> set[tuple[str, int]]:
    """The storm's execs at the collector, each once: by exec id and time
    (pids repeat in a long storm, and a resent record arrives twice)."""
    return {(r.attributes["otel_exec.exec_id"], r.timestamp) for r in collector.logs()
            if r.attributes.get("process.executable.name") == "true" and variable(r.attributes, "OE_TEST_MARK") == mark}


def wait_for_execs(collector: Collector, mark: str, want: int | set[tuple[str, int]],
                   timeout: float) -> set[tuple[str, int]]:
    """Until `want` execs (a count, or these very ones) have arrived."""
    deadline = time.monotonic() + timeout
    while True:
        got = storm_execs(collector, mark)
        done = len(got) >= want if isinstance(want, int) else want <= got
        if done or time.monotonic() > deadline:
            return got
        time.sleep(0.5)
