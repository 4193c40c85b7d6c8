"""The exec storm: testkit/storm.c, built once, run with a fixed command line,
a fixed environment and a marker.

The storm execs /bin/true through a symlink at a path unique to this run, so
that every tracer (otel-exec by the marker, the peers by the filename they
print) can tell the storm's execs from any other exec on a shared machine.
The symlink costs one extra path lookup per exec, like /bin -> usr/bin does.
Its command line (STORM_ARGS) is the ground truth each tracer's argv is
checked against.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lib.procs import Children, PidMax, live_processes, run_checked

_SOURCE = Path(__file__).resolve().parents[2] / "testkit" / "storm.c"
MARKER_VAR = "OEBENCH_MARKER"
MARKER_KEY = f"process.environment_variable.{MARKER_VAR}"
# A fixed environment, the size of a typical login or CI shell's (16
# variables, ~600 bytes), so runs are comparable whatever shell started the
# benchmark: the agent's cost grows with the environment it captures.
STORM_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/home/builder",
    "USER": "builder",
    "LOGNAME": "builder",
    "SHELL": "/bin/bash",
    "LANG": "C.UTF-8",
    "TERM": "xterm-256color",
    "PWD": "/home/builder/src/project",
    "OLDPWD": "/home/builder",
    "SHLVL": "2",
    "HOSTNAME": "build-runner-07",
    "TMPDIR": "/tmp",
    "EDITOR": "vi",
    "CI": "true",
    "CI_JOB_ID": "1234567890",
    "CI_COMMIT_SHA": "4bf92f3577b34da6a3ce929d0e0e4736aabbccdd",
}
# The storm's arguments after the program: a compiler-like command line, each
# argument shorter than bpftrace's default string size (64 bytes) and free of
# characters a tracer would quote, so that any tracer which reads argv at the
# exec can report it exactly. /bin/true ignores them.
STORM_ARGS = ("-c", "-O2", "-Wall", "-Iinclude", "-DNDEBUG", "-o", "build/obj/module_17.o", "src/module_17.c")
# Room left in pid_max beside the held processes, for the rest of the machine.
_PID_HEADROOM = 65536
# Held processes are reaped (by init) some seconds after they were killed: the
# next measurement waits until no more than _REAP_SLACK remain above the count
# before, for at most _REAP_TIMEOUT s.
_REAP_SLACK = 500
_REAP_TIMEOUT = 60.0
# Generous: a storm normally runs at well over this many execs/s.
_MIN_RATE = 200.0


@dataclass(frozen=True)
class StormResult:
    execs: int
    seconds: float
    rate: float  # execs/s, as storm measured it


class Storm:
    def __init__(self, children: Children, workdir: Path, workers: int) -> None:
        self._children = children
        self._workdir = workdir
        self.workers = workers
        self.binary = workdir / "storm"
        run_checked(["gcc", "-O2", "-o", str(self.binary), str(_SOURCE)])
        self.program = workdir / "true"
        self.program.symlink_to("/bin/true")
        # Exec'd to check that a tracer is already recording (see peers.py).
        self.sentinel = workdir / "oebench-ready"
        self.sentinel.symlink_to("/bin/true")

    def argv(self, args: Sequence[str] = STORM_ARGS) -> list[str]:
        """The command line of each exec of a storm run with args."""
        return [str(self.program), *args]

    def run(self, total: int, rate: float, marker: str, during: Callable[[], None] | None = None,
            interval: float = 1.0, args: Sequence[str] = STORM_ARGS,
            env: Mapping[str, str] = STORM_ENV) -> StormResult:
        """total execs of argv(args) at rate execs/s (0: as fast as possible)
        with the environment env and the marker; during() is called about
        every interval seconds while the storm runs (e.g. to sample RSS)."""
        env = dict(env)
        env[MARKER_VAR] = marker  # last: see rotel_count_processor._is_storm
        argv = [str(self.binary), str(self.workers), str(total), str(rate), *self.argv(args)]
        child = self._children.start(
            "storm", argv, group=True, env=env, cwd=self._workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        expected = total / (rate if rate > 0 else _MIN_RATE)
        deadline = time.monotonic() + 5 * expected + 60
        while True:
            try:
                child.proc.wait(timeout=interval)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    self._children.stop(child, timeout=2.0)
                    raise RuntimeError(f"storm of {total} execs still running after {5 * expected + 60:.0f}s")
                if during is not None:
                    during()
        self._children.forget(child)
        assert child.proc.stdout is not None and child.proc.stderr is not None
        out, err = child.proc.stdout.read().decode(), child.proc.stderr.read().decode()
        if child.proc.returncode != 0:
            raise RuntimeError(f"storm exited with {child.proc.returncode}: {err.strip()}")
        execs, seconds, measured_rate = out.split()
        return StormResult(int(execs), float(seconds), float(measured_rate))

    def exec_sentinel(self) -> None:
        subprocess.run([str(self.sentinel)], check=True, env=dict(STORM_ENV))

    @contextlib.contextmanager
    def held(self, live: int) -> Iterator[None]:
        """About live processes on the machine for the block: sleeping ones
        (`storm hold`) added to those running, kernel.pid_max raised for
        them. After the block they are stopped and the block waits until
        they are reaped (up to _REAP_TIMEOUT s)."""
        before = live_processes()
        with PidMax(live + _PID_HEADROOM):
            child = self._children.start("holders", [str(self.binary), "hold", str(max(0, live - before))],
                                         group=True, stdout=subprocess.PIPE)
            try:
                assert child.proc.stdout is not None
                if child.proc.stdout.readline().strip() != b"ready":
                    raise RuntimeError(f"storm hold exited with {child.proc.wait()} before all were started")
                yield
            finally:
                self._children.stop(child, timeout=10.0)
                deadline = time.monotonic() + _REAP_TIMEOUT
                while live_processes() > before + _REAP_SLACK and time.monotonic() < deadline:
                    time.sleep(0.2)


def synthetic_env(count: int) -> dict[str, str]:
    """count - 1 variables (the marker makes count): the storm's own first,
    then made-up ones of about 55 bytes each."""
    names = list(STORM_ENV)[: count - 1]
    env = {name: STORM_ENV[name] for name in names}
    for i in range(count - 1 - len(env)):
        env[f"BUILD_SETTING_{i:03d}"] = f"/opt/toolchain/{i:03d}/lib:/usr/lib/x86_64"
    return env


def argv_of_bytes(size: int) -> tuple[str, ...]:
    """Arguments of about size bytes in all (NULs included), 64 bytes each
    (a long compiler or linker command line)."""
    count = max(1, round(size / 64))
    return tuple(f"obj/unit_{i:06d}/" + "x" * 45 + ".o" for i in range(count))
