"""The exec storm: testkit/storm.c, built once, run with a fixed environment and a marker.

The storm execs /bin/true through a symlink at a path unique to this run, so
that every tracer (otel-exec by the marker, the peers by the filename they
print) can tell the storm's execs from any other exec on a shared machine.
The symlink costs one extra path lookup per exec, like /bin -> usr/bin does.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lib.procs import Children, run_checked

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

    def run(self, total: int, rate: float, marker: str, during: Callable[[], None] | None = None,
            interval: float = 1.0) -> StormResult:
        """total execs at rate execs/s (0: as fast as possible); during() is
        called about every interval seconds while the storm runs (e.g. to
        sample RSS)."""
        env = dict(STORM_ENV)
        env[MARKER_VAR] = marker  # last: see rotel_count_processor._is_storm
        argv = [str(self.binary), str(self.workers), str(total), str(rate), str(self.program)]
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
