"""Least privilege: after attaching, the agent holds no capability, and can
run as an unprivileged user (issue 5)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from agent_run import AgentRun, kernel_available, marked, marked_env, new_mark

pytestmark = pytest.mark.kernel


def status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if ":\t" in line)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's tmp is 0700)."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    d = Path(tempfile.mkdtemp(prefix="oe-priv-", dir="/tmp"))
    d.chmod(0o1777)  # sticky, as /tmp: a spool below a directory anyone may rename in is refused
    yield d
    shutil.rmtree(d, ignore_errors=True)


def check_unprivileged(run: AgentRun) -> dict[str, str]:
    st = status(run.proc.pid)
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[key].strip(), 16) == 0, (key, st[key])
    assert st["NoNewPrivs"].strip() == "1"
    mark = new_mark()
    subprocess.run(["/bin/true"], env=marked_env(mark), check=True)
    assert run.one(marked(mark))["comm"] == "true"  # still reading the kernel
    rc, err = run.stop()
    assert rc == 0, err
    assert "exec_seen=" in err  # the kernel's counters, read without bpf()
    return st


def test_root_agent_drops_every_capability(public_dir: Path) -> None:
    st = check_unprivileged(AgentRun(public_dir / "root"))
    assert st["Uid"].split()[0] == "0"


def _nice(pid: int, tid: int) -> int:
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[16])  # field 19: nice


def test_only_the_ring_buffer_reader_runs_at_raised_priority(public_dir: Path) -> None:
    """The reader (the main thread) at READER_NICE, so a burst of execs
    cannot starve it; the export threads at the agent's own nice value."""
    from otel_exec.privileges import READER_NICE

    run = AgentRun(public_dir / "nice", "--exporter", "otlp,console", "--endpoint", "http://127.0.0.1:9")
    try:
        pid = run.proc.pid
        others = {_nice(pid, int(t)) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid}
        assert _nice(pid, pid) == READER_NICE
        assert others == {os.nice(0)}
    finally:
        run.stop()


def test_user_switches_to_an_unprivileged_user(public_dir: Path) -> None:
    (public_dir / "nobody").mkdir()
    (public_dir / "nobody").chmod(0o1777)  # the ready file is written after the switch
    run = AgentRun(public_dir / "nobody", "--user", "nobody", "--exporter", "otlp,console",
                   "--endpoint", "http://127.0.0.1:9")  # nothing listens: records stay in the spool
    time.sleep(0.2)
    st = check_unprivileged(run)
    assert set(st["Uid"].split()) == {"65534"} and set(st["Gid"].split()) == {"65534"}
    spool = public_dir / "nobody" / "spool"
    assert spool.stat().st_uid == 65534
    assert any(f.name.startswith("logs-") and f.stat().st_size > 0 for f in spool.iterdir())


def test_unknown_user_is_a_usage_error(public_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="no such user"):
        AgentRun(public_dir / "x", "--user", "no-such-user-oe")
