"""otel-exec as the benchmark runs it: `python -m otel_exec run` exporting OTLP/gRPC."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from procs import Child, Children, cpu_ticks, status_kb

_READY_TIMEOUT = 60.0
# The agent flushes its queues on SIGINT (its own grace is 10 s by default).
_STOP_TIMEOUT = 60.0
_STOPPED_PREFIX = "otel-exec: stopped; "


def agent_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without OTEL_* (so a user's OTEL_BLRP_* cannot
    change the default batching being measured) plus extra.

    PYTHONDONTWRITEBYTECODE is dropped too: an installed agent runs from
    compiled bytecode, and recompiling every module at each start would be
    measured as start-up time.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OTEL_") and key != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(extra)
    return env


class Agent:
    def __init__(
        self,
        children: Children,
        python: Path,
        repo: Path,
        workdir: Path,
        endpoint: str,
        extra_args: list[str],
        extra_env: dict[str, str],
    ) -> None:
        self._children = children
        self._repo = repo
        self._ready = workdir / "agent.ready"
        self._stderr = workdir / "agent.stderr"
        self.argv = [
            str(python), "-m", "otel_exec", "run",
            "--exporter", "otlp", "--endpoint", endpoint, "--protocol", "grpc",
            "--ready-file", str(self._ready), *extra_args,
        ]
        self._env = agent_env(extra_env)
        self.child: Child | None = None

    def start(self) -> float:
        """Launch and wait for the ready file: seconds from launch to ready."""
        self._ready.unlink(missing_ok=True)
        with self._stderr.open("wb") as err:
            t0 = time.monotonic()
            self.child = self._children.start(
                "otel-exec", self.argv, stop_signal=signal.SIGINT, env=self._env, cwd=self._repo, stderr=err
            )
        while not self._ready.exists():
            if self.child.proc.poll() is not None:
                self._children.forget(self.child)
                raise RuntimeError(f"otel-exec exited with {self.child.proc.returncode}:\n{self.stderr_tail()}")
            if time.monotonic() - t0 > _READY_TIMEOUT:
                raise RuntimeError(f"otel-exec not ready after {_READY_TIMEOUT}s:\n{self.stderr_tail()}")
            # 2 ms steps: the start-up target is 0.5 s.
            time.sleep(0.002)
        return time.monotonic() - t0

    def cpu_ticks(self) -> int:
        assert self.child is not None
        return cpu_ticks(self.child.pid)

    def status_kb(self, key: str) -> int:
        assert self.child is not None
        return status_kb(self.child.pid, key)

    def stop(self) -> dict[str, int]:
        """SIGINT, wait, and return the counters of its final stderr line."""
        assert self.child is not None
        _, polite = self._children.stop(self.child, timeout=_STOP_TIMEOUT)
        self.child = None
        if not polite:
            raise RuntimeError(f"otel-exec did not stop within {_STOP_TIMEOUT}s of SIGINT:\n{self.stderr_tail()}")
        for line in reversed(self._stderr.read_text(errors="replace").splitlines()):
            if line.startswith(_STOPPED_PREFIX):
                pairs = (item.partition("=") for item in line[len(_STOPPED_PREFIX):].split(", "))
                return {key: int(value) for key, _, value in pairs if value.lstrip("-").isdigit()}
        raise RuntimeError(f"otel-exec printed no final counters:\n{self.stderr_tail()}")

    def stderr_tail(self, limit: int = 3000) -> str:
        data = self._stderr.read_bytes() if self._stderr.exists() else b""
        return data[-limit:].decode(errors="replace")
