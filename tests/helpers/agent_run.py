"""A real `otel-exec run` in the background, and ways to find its events.

Kernel tests share one agent per session (``agent`` fixture): it writes JSON
Lines to a file, and each test finds its own execs by a unique marker it puts
into the environment of what it runs.
"""
from __future__ import annotations

import ast
import re
import contextlib
import ctypes
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from otel_exec.host.cgroups import cgroup2_root

ROOT = Path(__file__).resolve().parents[2]


def kernel_available() -> str | None:
    """Why kernel tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "kernel has no BTF"
    return None


# Every AgentRun started, in order: agents_stopped() kills what a test left
# running.
_started: list[AgentRun] = []


class AgentRun:
    def __init__(self, workdir: Path, *extra: str, env: dict[str, str] | None = None,
                 command: Sequence[str] = (sys.executable, "-m", "otel_exec"), cwd: Path = ROOT) -> None:
        """`command run ...` (command: this tree's otel_exec, or an installed otel-exec) in cwd."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.out = workdir / "events.jsonl"
        self.err = workdir / "agent.stderr"
        self.ready = workdir / "ready"
        self.spool = workdir / "spool"
        cmd = [*command, "run", "--format", "jsonl", "--output", str(self.out),
               "--ready-file", str(self.ready), "--poll-interval", "0.05", "--spool-dir", str(self.spool), *extra]
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.err, "w"), env=env)
        _started.append(self)
        self._pos = 0
        self._buf = b""
        self.events: list[dict] = []  # exec records
        self.exits: list[dict] = []  # exit records ("event": "exit")
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"agent did not start: {self.err.read_text()}")
            time.sleep(0.02)

    def _read_new(self) -> None:
        if not self.out.exists():
            return
        with open(self.out, "rb") as f:
            f.seek(self._pos)
            chunk = f.read()
        self._pos += len(chunk)
        lines = (self._buf + chunk).split(b"\n")
        self._buf = lines.pop()
        for record in (json.loads(line) for line in lines if line):
            (self.exits if record.get("event") == "exit" else self.events).append(record)

    def find(self, pred: Callable[[dict], bool], count: int = 1, timeout: float = 10) -> list[dict]:
        """The first `count` events matching pred, waiting up to timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self._read_new()
            hits = [e for e in self.events if pred(e)]
            if len(hits) >= count or time.monotonic() > deadline:
                return hits
            time.sleep(0.05)

    def one(self, pred: Callable[[dict], bool], timeout: float = 10) -> dict:
        hits = self.find(pred, 1, timeout)
        assert hits, f"no event matched within {timeout}s; agent stderr: {self.err.read_text()[-2000:]}"
        return hits[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30, other_thread: bool = False) -> tuple[int, str]:
        """Signal the agent (other_thread: one of its threads other than the
        main one, which the kernel would pick) and wait for it; one that has
        not stopped within timeout is killed (and TimeoutExpired raised)."""
        if self.proc.poll() is None:
            if other_thread:
                pid = self.proc.pid
                tid = next(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
                if ctypes.CDLL(None, use_errno=True).tgkill(pid, tid, sig) != 0:
                    raise OSError(ctypes.get_errno(), f"tgkill {pid} {tid}")
            else:
                self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._read_new()
        return rc, self.err.read_text()

    def kill(self) -> None:
        """SIGKILL, if it still runs, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture(autouse=True)
def agents_stopped() -> Iterator[None]:
    """Kills the agents a test started and left running, as a test that
    fails before its own stop() does: a leftover agent would keep its
    programs attached and its threads busy through the rest of the run.
    Agents of wider-scoped fixtures (the session's ``agent``) are set up
    before it and left to their fixtures."""
    first = len(_started)
    yield
    for run in _started[first:]:
        run.kill()
    del _started[first:]


# The agent's stderr lines these parsers read (docs/operations.md#stderr).
STOPPED_PREFIX = "otel-exec: info: stopped; "
LOST_PREFIX = "otel-exec: warning: events were lost: "
STATS_PREFIX = "otel-exec: info: execs="
MALFORMED_PREFIX = "otel-exec: error: dropped a malformed record: "
EXPORT_FAILED_PREFIX = "otel-exec: error: Failed to export logs"


# The longest --poll-interval the settings allow (Config.validate).
LONGEST_POLL_S = 10.0
# The stops stopped_while_waiting tries: (signal, sent to a thread other than the main one).
STOP_SIGNALS = [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True)]
STOP_SIGNAL_IDS = ["SIGINT", "SIGTERM", "SIGTERM-to-another-thread"]


def stopped_while_waiting(workdir: Path, sig: int, *extra: str, env: dict[str, str] | None = None,
                          other_thread: bool = False) -> str:
    """An agent (these flags) with the longest poll interval and a filter
    no exec passes, sent `sig` once ready (other_thread: to a thread other
    than the main one, which waits): it must exit 0 with its stop
    line while that wait would still have run, as the signal ends the wait.
    Returns its stderr. A run that waited out the poll interval is killed
    and fails (TimeoutExpired): a functional bound, half the interval, not
    a measure of the stop's speed. Its ring is large: the records of other
    processes' execs and exits (which pass no filter, but feed the lineage)
    would otherwise fill the share that wakes the reader early."""
    run = AgentRun(workdir, *extra, "--poll-interval", str(LONGEST_POLL_S), "--comm", "oe-matches-none",
                   "--ringbuf-bytes", str(64 << 20), env=env)
    rc, err = run.stop(sig, timeout=LONGEST_POLL_S / 2, other_thread=other_thread)
    assert rc == 0, err
    assert STOPPED_PREFIX in err, err
    return err


def otlp_agent_run(workdir: Path, endpoint: str, **env: str) -> AgentRun:
    """An agent exporting to `endpoint` over OTLP only, its batches sent
    every 200 ms, with these variables in its environment (skips without a
    kernel that can run it)."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    return AgentRun(workdir, "--exporter", "otlp", "--endpoint", endpoint,
                    env=dict(os.environ, OTEL_BLRP_SCHEDULE_DELAY="200", OTEL_BSP_SCHEDULE_DELAY="200", **env))


def stop_line(err: str) -> dict[str, int]:
    """The `otel-exec: info: stopped; k=v, ...` line as a dict."""
    line = next(l for l in err.splitlines() if l.startswith(STOPPED_PREFIX))
    return {k: int(v) for k, v in (kv.split("=") for kv in line.removeprefix(STOPPED_PREFIX).split(", "))}


def warning_line(err: str) -> dict[str, int]:
    line = next(l for l in err.splitlines() if l.startswith(LOST_PREFIX))
    return ast.literal_eval(line.removeprefix(LOST_PREFIX))


def stats_line_texts(err: str) -> list[str]:
    """The periodic stats lines (--stats-interval), as printed."""
    return [l for l in err.splitlines() if l.startswith(STATS_PREFIX)]


def stats_lines(err: str) -> list[dict[str, str]]:
    return [dict(kv.split("=", 1) for kv in l.removeprefix(STATS_PREFIX.removesuffix("execs=")).split())
            for l in stats_line_texts(err)]


def overflow_the_ring(prog: str, mark: str) -> tuple[list[str], int]:
    """While the agent is stopped: execs of `prog` that overflow the smallest
    ring whatever the reader does. Returns the big execs' argv and how many
    execs ran."""
    argv = [prog, *(f"{i}" * 4000 for i in range(7))]
    big = 200  # ~6 MiB of exec records
    small = 2000  # then small records, and their exits, fill what space is left
    for _ in range(big):
        subprocess.run(argv, env=marked_env(mark), check=True)
    subprocess.run(["/bin/sh", "-c", f"i=0; while [ $i -lt {small} ]; do {prog}; i=$((i+1)); done"],
                   env=marked_env(mark), check=True)
    return argv, big + small


class Live:
    """A process kept alive while a test compares its event with its /proc
    entry; killed on leaving the block."""

    def __init__(self, argv: list, mark: str, **kw) -> None:
        kw.setdefault("stdin", subprocess.DEVNULL)
        self.proc = subprocess.Popen(argv, env=kw.pop("env", marked_env(mark)), **kw)

    def __enter__(self) -> subprocess.Popen:
        return self.proc

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


@contextlib.contextmanager
def all_killed(*procs: subprocess.Popen) -> Iterator[None]:
    """Processes kept alive while the block runs, killed and reaped on leaving it."""
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


@contextlib.contextmanager
def new_cgroup(*names: str) -> Iterator[Path]:
    """A fresh cgroup v2 under the hierarchy's root (names: its path below
    the root, one level each), removed with its parents after the test; the
    test's processes in it must be gone by then (rmdir is retried while the
    kernel still counts them)."""
    root = cgroup2_root()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    made = [Path(root, *names[:i + 1]) for i in range(len(names))]
    made[-1].mkdir(parents=True)
    try:
        yield made[-1]
    finally:
        for cg in reversed(made):
            for _ in range(50):
                try:
                    cg.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def marked(mark: str) -> Callable[[dict], bool]:
    entry = f"OE_TEST_MARK={mark}"
    return lambda e: entry in e.get("env", ())  # exit records ("event": "exit") carry no environment


def new_mark() -> str:
    return uuid.uuid4().hex


def marked_env(mark: str, **extra: str) -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "OE_TEST_MARK": mark}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentRun]:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    run = AgentRun(tmp_path_factory.mktemp("agent"))
    yield run
    rc, err = run.stop()
    assert rc == 0, err


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A 1777 directory like /tmp: an unprivileged user can reach it (pytest's
    tmp is 0700) and plant names in it; the agent trusts it (sticky)."""
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    d = Path(tempfile.mkdtemp(prefix="oe-public-", dir="/tmp"))
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def counters_from(stderr: str) -> dict[str, int]:
    line = [l for l in stderr.splitlines() if "stopped;" in l][-1]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
