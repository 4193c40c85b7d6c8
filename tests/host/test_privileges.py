"""Least privilege, read as an attacker would: every thread's
/proc/PID/task/TID/status while the agent exports (issues 5 and 10).

Capabilities, the bounding and ambient sets and no_new_privs belong to a
thread: a drop on the main thread says nothing about the gRPC, exporter and
metrics threads, so each one is read.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.agent_run import ROOT, AgentRun, marked, marked_env, new_mark, public_dir  # noqa: F401  (fixture)
from tests.helpers.collector import Collector
from otel_exec.errors import PrivilegeLeakError
from otel_exec.host.privileges import cap_name
from otel_exec.bcc.source import BccSource
from tests.helpers.bcc_env import bcc_env  # noqa: F401  (fixture)
from testkit.environment import variable

pytestmark = pytest.mark.kernel

NOBODY = 65534
GRPC_THREADS = ("grpc_global_tim", "event_engine")  # grpcio's, were it loaded
# main (reader), otlp-logs, otlp-traces, the metrics reader, the executable
# identity worker (otel_exec.host.executables): Python threads
# carry the interpreter's name in /proc.
PYTHON_THREADS = 5


def status(pid: int, tid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def threads(pid: int) -> dict[int, dict[str, str]]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = status(pid, int(tid))
        except FileNotFoundError:
            pass  # ended meanwhile
    return out


def mask(caps: set[int]) -> int:
    return sum(1 << c for c in caps)


def assert_every_thread_clean(pid: int, keep: set[int], uid: int = 0, gid: int = 0) -> dict[int, dict[str, str]]:
    """Every thread holds exactly `keep` (effective, permitted, bounding),
    nothing inheritable or ambient, no_new_privs, and runs as uid/gid."""
    seen = threads(pid)
    for tid, st in seen.items():
        who = f"thread {tid} ({st['Name']})"
        for key, want in (("CapEff", mask(keep)), ("CapPrm", mask(keep)), ("CapBnd", mask(keep)),
                          ("CapInh", 0), ("CapAmb", 0)):
            got = int(st[key], 16)
            extra = [cap_name(c) for c in range(64) if got >> c & 1 and not want >> c & 1]
            assert got == want, f"{who}: {key} {st[key]} (extra: {extra})"
        assert st["NoNewPrivs"] == "1", who
        assert set(st["Uid"].split()) == {str(uid)}, (who, st["Uid"])
        assert set(st["Gid"].split()) == {str(gid)}, (who, st["Gid"])
        if uid:
            assert st["Groups"] == "", (who, st["Groups"])
    return seen


def workdir_for(public_dir: Path, user: str | None) -> Path:
    """The agent's files: with --user, in a directory that user owns (the
    ready file is written after the switch)."""
    d = public_dir / (user or "root")
    d.mkdir()
    if user:
        os.chown(d, NOBODY, NOBODY)
    return d


@pytest.mark.parametrize("backend", ["core", "bcc"])
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("user", [None, "nobody"])
def test_no_thread_keeps_privileges_while_exporting(request: pytest.FixtureRequest, public_dir: Path,
                                                    collector: Collector, backend: str, protocol: str,
                                                    user: str | None) -> None:
    """With logs, spans and metrics going to a real collector, every thread
    (reader, exporters, metrics reader) holds only what the
    backend documents as needed at run time, and runs as --user."""
    env = dict(os.environ, OTEL_METRIC_EXPORT_INTERVAL="200", OTEL_BLRP_SCHEDULE_DELAY="100")
    keep: set[int] = set()
    if backend == "bcc":
        env.update(request.getfixturevalue("bcc_env"))
        keep = BccSource.run_time_capabilities
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    run = AgentRun(workdir_for(public_dir, user), "--backend", backend, "--exporter", "otlp,console",
                   "--endpoint", endpoint, "--protocol", protocol, *(["--user", user] if user else []), env=env)
    try:
        mark = new_mark()
        subprocess.run(["/bin/true"], env=marked_env(mark), check=True)
        collector.wait_for_logs(lambda r: variable(r.attributes, "OE_TEST_MARK") == mark,
                                timeout=20)
        time.sleep(0.5)  # a few metric exports
        seen = assert_every_thread_clean(run.proc.pid, keep, *((NOBODY, NOBODY) if user else (0, 0)))
        names = sorted(st["Name"] for st in seen.values())
        print(backend, protocol, user, names)
        # The threads that talk to the network are among those read.
        assert sum(n.startswith("python") for n in names) >= PYTHON_THREADS, names
        # gRPC is sent by the export threads themselves (h2grpc.py): no threads of grpcio's.
        assert not any(n.startswith(g) for n in names for g in GRPC_THREADS), names
        assert run.one(marked(mark))["comm"] == "true"  # still reading the kernel
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    assert "exec_seen=" in err  # the kernel's counters, read without bpf()
    assert "logs_exported=0," not in err, err


PRE_DROP_THREAD = """
import sys, threading
from otel_exec import cli
started = threading.Event()
threading.Thread(target=lambda: (started.set(), threading.Event().wait()), daemon=True).start()
started.wait()
print(threading.enumerate()[-1].native_id, flush=True)
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("user", [None, "nobody"])
def test_a_thread_started_before_the_drop_is_refused(public_dir: Path, user: str | None) -> None:
    """A thread that exists before the drop keeps root's capabilities (they
    are per thread): the self-check names it and the agent refuses to run."""
    work = workdir_for(public_dir, user)
    proc = subprocess.run(
        [sys.executable, "-c", PRE_DROP_THREAD, "run", "--exporter", "console", "--output", str(work / "out"),
         "--ready-file", str(work / "ready"), "--duration", "30", *(["--user", user] if user else [])],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == PrivilegeLeakError.exit_code, proc.stderr
    tid = proc.stdout.strip()
    assert re.fullmatch(rf"otel-exec: error: thread {tid} \(\S+\) holds CAP_\w+ in Cap(Eff|Bnd) after the "
                        r"privilege drop; refusing to run \(.*\)\n", proc.stderr), proc.stderr
    assert not (work / "ready").exists()


def _nice(pid: int, tid: int) -> int:
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[16])  # field 19: nice


def test_only_the_ring_buffer_reader_runs_at_raised_priority(public_dir: Path) -> None:
    """The reader (the main thread) and its ring copy thread (the C
    extension's) at READER_NICE, so a burst of execs cannot starve them;
    the export threads, which it starts after the drop, at the agent's own
    nice value."""
    from otel_exec.host.privileges import READER_NICE
    from otel_exec.native import native_wanted

    run = AgentRun(public_dir / "nice", "--exporter", "otlp,console", "--endpoint", "http://127.0.0.1:9")
    try:
        pid = run.proc.pid
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
        copies = [t for t in tids if Path(f"/proc/{pid}/task/{t}/comm").read_text() == "oe-ring-copy\n"]
        assert len(copies) == (1 if native_wanted() else 0)
        assert {_nice(pid, t) for t in [pid, *copies]} == {READER_NICE}
        assert {_nice(pid, t) for t in tids if t not in copies} == {os.nice(0)}
    finally:
        run.stop()


def test_an_agent_started_at_higher_priority_keeps_it_on_every_thread(public_dir: Path) -> None:
    """Started with a nice value below READER_NICE (a unit's Nice=-15), the
    reader is not lowered to READER_NICE, and the threads started after the
    drop of CAP_SYS_NICE need no capability to be at the agent's value."""
    run = AgentRun(workdir_for(public_dir, "nobody"), "--user", "nobody", "--exporter", "otlp,console",
                   "--endpoint", "http://127.0.0.1:9",
                   command=("nice", "-n", "-15", sys.executable, "-m", "otel_exec"))
    try:
        pid = run.proc.pid
        assert {_nice(pid, int(t)) for t in os.listdir(f"/proc/{pid}/task")} == {-15}
    finally:
        rc, err = run.stop()
    assert rc == 0, err


def test_user_owns_the_spool_it_writes(public_dir: Path) -> None:
    run = AgentRun(workdir_for(public_dir, "nobody"), "--user", "nobody", "--exporter", "otlp,console",
                   "--endpoint", "http://127.0.0.1:9")  # nothing listens: records stay in the spool
    try:
        assert_every_thread_clean(run.proc.pid, set(), NOBODY, NOBODY)
        assert run.ready.stat().st_uid == NOBODY  # written after the switch
        mark = new_mark()
        subprocess.run(["/bin/true"], env=marked_env(mark), check=True)
        assert run.one(marked(mark))["comm"] == "true"
    finally:
        rc, err = run.stop()
    assert rc == 0, err
    spool = public_dir / "nobody" / "spool"
    assert spool.stat().st_uid == NOBODY
    assert any(f.name.startswith("logs-") and f.stat().st_size > 0 for f in spool.iterdir())


def test_console_only_touches_no_spool_directory(public_dir: Path) -> None:
    """Without the OTLP exporter the spool directory (here a root one with
    a file in it) is neither opened nor handed to --user."""
    work = workdir_for(public_dir, "nobody")
    spool = work / "spool"
    spool.mkdir(mode=0o700)
    (spool / "logs-1").write_bytes(b"x")
    before = [(p.name, p.stat().st_uid, p.stat().st_mode) for p in [spool, *spool.iterdir()]]
    run = AgentRun(work, "--user", "nobody", "--exporter", "console")
    assert_every_thread_clean(run.proc.pid, set(), NOBODY, NOBODY)
    rc, err = run.stop()
    assert rc == 0, err
    assert [(p.name, p.stat().st_uid, p.stat().st_mode) for p in [spool, *spool.iterdir()]] == before


def test_unknown_user_is_a_usage_error(public_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="no such user"):
        AgentRun(public_dir / "x", "--user", "no-such-user-oe")
