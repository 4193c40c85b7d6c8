"""The real OTLP collector of the benchmark: rotel on loopback, counting storm records.

rotel (pip install rotel==0.0.1a15) exports to its blackhole; its Python logs
processor, bench/lib/rotel_count_processor.py, appends one summary line per batch
(storm records and their latency histogram) to a file that this module reads.
No --debug-log: printing every record costs rotel more CPU than the agent.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lib.procs import Child, Children, cpu_ticks, tcp_bytes_received
from testkit.rotel import LOOPBACK, PORT_ATTEMPTS, PORT_TAKEN, accepts, free_port_pair, rotel_argv, rotel_env

_PROCESSOR = Path(__file__).with_name("rotel_count_processor.py")
_START_TIMEOUT = 20.0


@dataclass
class Received:
    """What the processor has reported so far."""

    storm: int = 0
    other: int = 0
    argv_ok: int = 0  # storm records whose body is the storm's command line (Rotel's body)
    processor_us: int = 0  # time spent in rotel_count_processor
    latency_ms: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    # With detail=True only (see rotel_count_processor.py):
    # (exec id, kernel event time) of the storm records: a record received
    # twice counts once, two execs that share an exec id twice.
    ids: set[tuple[str, int]] = field(default_factory=set)
    events: dict[str, Counter[int]] = field(default_factory=dict)  # other records: name -> unix second -> count
    gaps: list[tuple[int, float]] = field(default_factory=list)  # otel_exec.agent.gap: (time ns, seconds)
    observed: set[int] = field(default_factory=set)  # pids of observed records with the marker in their body


class Rotel:
    """One rotel process counting records whose marker_key attribute equals
    marker_value, except the exec of launcher (the storm binary), and of
    those the ones whose body is body (when given).

    detail=True also collects which records arrived (Received.ids, events,
    gaps, observed), at some cost to rotel's CPU; count=False runs rotel
    without the processor (nothing is counted: poll() stays empty), as a
    user would run a collector, for the exec rate measured without the
    benchmark's own instrumentation."""

    def __init__(
        self, children: Children, binary: Path, workdir: Path, marker_key: str, marker_value: str, launcher: Path,
        detail: bool = False, count: bool = True, body: str | None = None,
    ) -> None:
        self._children = children
        self._binary = binary
        self._workdir = workdir
        self._marker_key = marker_key
        self._marker_value = marker_value
        self._launcher = launcher
        self._detail = detail
        self._count = count
        self._body = body
        self._ports: tuple[int, int] | None = None
        self._counts = workdir / "counts.jsonl"
        self._log = workdir / "rotel.log"
        self._offset = 0
        self._partial = b""
        self.received = Received()
        self.child: Child | None = None
        self.grpc_endpoint = ""

    def start(self) -> None:
        for _ in range(PORT_ATTEMPTS):
            if self._launch(*free_port_pair()):
                return
        raise RuntimeError(f"rotel: no free port pair after {PORT_ATTEMPTS} attempts")

    def restart(self, timeout: float = _START_TIMEOUT) -> None:
        """Start again after stop(), on the same ports (what its clients
        were configured with); counting goes on where it stopped."""
        assert self._ports is not None and self.child is None
        deadline = time.monotonic() + timeout
        while not self._launch(*self._ports):
            # Another process may hold a port for a moment (it was free a
            # second ago); give up only after timeout.
            if time.monotonic() > deadline:
                raise RuntimeError(f"rotel: ports {self._ports} still in use after {timeout}s")
            time.sleep(0.5)

    def _launch(self, grpc_port: int, http_port: int) -> bool:
        env = rotel_env(
            OEBENCH_COUNT_FILE=str(self._counts),
            OEBENCH_MARKER_KEY=self._marker_key,
            OEBENCH_MARKER_VALUE=self._marker_value,
            OEBENCH_LAUNCHER=str(self._launcher),
        )
        if self._detail:
            env["OEBENCH_DETAIL"] = "1"
        if self._body is not None:
            env["OEBENCH_BODY"] = self._body
        argv = rotel_argv(self._binary, (grpc_port, http_port),
                          *(["--otlp-with-logs-processor", str(_PROCESSOR)] if self._count else []))
        with self._log.open("ab") as log:
            child = self._children.start("rotel", argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _START_TIMEOUT
        while child.proc.poll() is None:
            if accepts(grpc_port, timeout=0.2) and accepts(http_port, timeout=0.2):
                self.child = child
                self._ports = (grpc_port, http_port)
                self.grpc_endpoint = f"http://{LOOPBACK}:{grpc_port}"
                return True
            if time.monotonic() > deadline:
                self._children.stop(child)
                raise RuntimeError(f"rotel did not listen within {_START_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.02)
        self._children.forget(child)
        if PORT_TAKEN in self.log_tail():
            return False
        raise RuntimeError(f"rotel exited with {child.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, limit: int = 3000) -> str:
        data = self._log.read_bytes() if self._log.exists() else b""
        return data[-limit:].decode(errors="replace")

    def poll(self) -> Received:
        """Read what the processor appended since the last call."""
        if self.child is not None and self.child.proc.poll() is not None:
            raise RuntimeError(f"rotel died ({self.child.proc.returncode}):\n{self.log_tail()}")
        if not self._counts.exists():
            return self.received
        with self._counts.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            batch = json.loads(line)
            if "error" in batch:
                self.received.errors.append(batch["error"])
                continue
            self.received.storm += batch["n"]
            self.received.other += batch["o"]
            self.received.argv_ok += batch["a"]
            self.received.processor_us += batch["us"]
            self.received.latency_ms.update({int(ms): n for ms, n in batch["h"].items()})
            if "ids" in batch:
                self.received.ids.update((i, int(t)) for i, t in batch["ids"])
                for name, seconds in batch["e"].items():
                    self.received.events.setdefault(name, Counter()).update(
                        {int(s): n for s, n in seconds.items()})
                self.received.gaps.extend((int(t), float(sec)) for t, sec in batch["gap"])
                self.received.observed.update(batch["obs"])
        if self.received.errors:
            raise RuntimeError("rotel_count_processor failed:\n" + self.received.errors[0])
        return self.received

    def cpu_ticks(self) -> int:
        assert self.child is not None
        return cpu_ticks(self.child.pid)

    def bytes_received(self) -> int:
        """What its OTLP/gRPC clients have sent it so far, over the
        connections still open (see procs.tcp_bytes_received)."""
        assert self._ports is not None
        return tcp_bytes_received(self._ports[0])

    def stop(self) -> None:
        if self.child is not None:
            self._children.stop(self.child)
            self.child = None
