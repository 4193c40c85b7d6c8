"""End to end: a process with 300 environment variables and a 100 KiB argv
-> the agent -> rotel, and the record that arrives is one Loki takes at its
default limits (tests/helpers/loki.py applies Loki's rules), the cut named
in otel_exec.record.cut."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import loki
from tests.helpers.agent_run import AgentRun, kernel_available, marked_env, new_mark
from tests.helpers.collector import Collector
from testkit.environment import PACKED, PER_VARIABLE, variable

pytestmark = pytest.mark.kernel

TRUE = shutil.which("true") or "/usr/bin/true"


# The environment packed (the default) and 48 variables as attributes of their own.
@pytest.mark.parametrize("env_attributes", [0, 48])
def test_a_huge_environment_and_argv_arrive_within_lokis_default_limits(collector: Collector, tmp_path: Path,
                                                                         env_attributes: int) -> None:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    # The kernel copies all of it (128 KiB each), so the agent's shaping is what keeps it in bounds.
    run = AgentRun(tmp_path, "--endpoint", collector.grpc_endpoint, "--argv-max-bytes", "131072",
                   "--env-max-bytes", "131072", "--env-attributes", str(env_attributes),
                   env=dict(os.environ, OTEL_BLRP_SCHEDULE_DELAY="200", OTEL_BSP_SCHEDULE_DELAY="200"))
    mark = new_mark()
    env = marked_env(mark, **{f"VAR_{i:03d}": f"value-{i}-" + "x" * 150 for i in range(300)})
    argv = [TRUE] + [f"--opt-{i:03d}=" + "a" * 1014 for i in range(100)]  # 100 KiB
    assert sum(len(a) for a in argv[1:]) == 100 * 1024
    try:
        subprocess.run(argv, env=env, check=True)
        (record,) = collector.wait_for_logs(lambda r: variable(r.attributes, "OE_TEST_MARK") == mark, timeout=20)
    finally:
        rc, err = run.stop()
    assert rc == 0, err

    assert loki.refusals(record) == []
    entries = loki.structured_metadata(record)
    assert len(entries) <= loki.MAX_METADATA_ENTRIES
    assert loki.metadata_bytes(entries) <= loki.MAX_METADATA_BYTES
    assert len(loki.line(record).encode()) <= loki.MAX_LINE_BYTES
    a = record.attributes
    # All of it reached the agent; the agent cut it, and says so.
    assert "otel_exec.argv_truncated" not in a and "otel_exec.env_truncated" not in a  # flags only when set
    assert a["process.args_count"] == 101 and a["otel_exec.env_count"] == 302
    assert set(a["otel_exec.record.cut"]) == {"body", "process.command_args", "process.environment_variable"}
    args = a["process.command_args"]
    assert args[0] == TRUE and args[:-1] == argv[:len(args) - 1] and argv[len(args) - 1].startswith(args[-1])
    per_key = [k for k in a if k.startswith(PER_VARIABLE)]
    assert len(per_key) == env_attributes
    if env_attributes:
        assert a[PER_VARIABLE + "PATH"] == env["PATH"]
        assert a[PACKED][0] == "VAR_046=" + env["VAR_046"]  # PATH, the mark, then VAR_000...
    else:
        assert a[PACKED][:3] == ["PATH=" + env["PATH"], f"OE_TEST_MARK={mark}", "VAR_000=" + env["VAR_000"]]
    assert record.body.startswith(f"{TRUE} --opt-000=aaaa")
