"""otel-exec as the benchmark runs it: `python -m otel_exec run` exporting OTLP/gRPC
to rotel, and the measurements of one traced storm."""

from __future__ import annotations

import os
import shlex
import signal
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lib.losses import EXPORT_LOSS_KEYS, kernel_losses
from lib.procs import Child, Children, bpf_run_time_ns, cpu_ticks, status_kb, ticks_to_us, written_bytes
from lib.rotel_collector import Rotel
from lib.storm import MARKER_KEY, STORM_ARGS, STORM_ENV, Storm, StormResult

_READY_TIMEOUT = 60.0
# The agent flushes its queues on SIGINT (its own grace is 10 s by default).
_STOP_TIMEOUT = 60.0
# The agent's stderr lines read here (docs/operations.md#stderr).
_STOPPED_PREFIX = "otel-exec: info: stopped; "
STATS_PREFIX = "otel-exec: info: execs="
# Pause after a start before measuring: the start-up work (seeded spans, first
# export) is over, and the machine is idle again between start-up launches.
_SETTLE = 1.0
# Then, before a storm, until the agent is idle: at most _IDLE_TICKS clock
# ticks of CPU in _IDLE_STEP s (what it does at start grows with the processes
# already running, which it reports), for at most _IDLE_TIMEOUT s.
_IDLE_TICKS = 1
_IDLE_STEP = 0.5
_IDLE_TIMEOUT = 120.0
# Without a new record for this long, the collector has all it will get:
# several times the default batch delay (1 s) of the agent's exporter.
_IDLE = 8.0
# Spans wait up to the span batch delay (OTEL_BSP_SCHEDULE_DELAY, 5 s by
# default) before they are sent: the bytes on the wire are read this long
# after the storm ended.
_SPAN_DELAY = 6.0
# After the agent exited (its queues flushed), only rotel's processing lags.
_FLUSH_IDLE = 2.0
# Without a counting collector: long enough for the agent to send its last
# spans (the span batch delay, OTEL_BSP_SCHEDULE_DELAY, is 5 s by default).
_UNCOUNTED_DRAIN = 7.0


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


class AgentProcess:
    """One `otel-exec run` the benchmark started and measures (its main loop is otel_exec.agent.Agent)."""

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
            "--ready-file", str(self._ready), "--spool-dir", str(workdir / "spool"), *extra_args,
        ]
        self._env = agent_env(extra_env)
        self.child: Child | None = None
        self.ready_at = 0.0  # monotonic time start() saw the ready file

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
        self.ready_at = time.monotonic()
        return self.ready_at - t0

    @property
    def pid(self) -> int:
        return self._running().pid

    def cpu_ticks(self) -> int:
        return cpu_ticks(self._running().pid)

    def written_bytes(self) -> int:
        return written_bytes(self._running().pid)

    def bpf_run_time_ns(self) -> int:
        return bpf_run_time_ns(self._running().pid)

    def status_kb(self, key: str) -> int:
        return status_kb(self._running().pid, key)

    def _running(self) -> Child:
        # A dead agent would otherwise surface as a puzzling /proc error.
        assert self.child is not None
        if self.child.proc.poll() is not None:
            self._children.forget(self.child)
            raise RuntimeError(f"otel-exec exited with {self.child.proc.returncode}:\n{self.stderr_tail()}")
        return self.child

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

    def kill(self) -> None:
        """SIGKILL, as a crash ends it: no flush, no final counters."""
        assert self.child is not None
        self.child.signal(signal.SIGKILL)
        self.child.proc.wait()
        self._children.forget(self.child)
        self.child = None

    @property
    def stderr_path(self) -> Path:
        return self._stderr

    def stderr_tail(self, limit: int = 3000) -> str:
        data = self._stderr.read_bytes() if self._stderr.exists() else b""
        return data[-limit:].decode(errors="replace")


@dataclass
class Setup:
    """What every otel-exec run needs."""

    children: Children
    python: Path  # the interpreter that runs the agent
    repo: Path
    rotel: Path  # rotel's binary
    storm: Storm
    workdir: Path
    run_id: str  # makes each storm's marker unique to this benchmark run
    agent_args: tuple[str, ...] = ()  # given to every agent this setup starts, before a run's own


@dataclass
class TracedRun:
    label: str
    storm: StormResult
    recorded: int | None  # storm records at the collector, once the agent stopped (None: not counted)
    argv_ok: int | None  # of those, the ones whose body is the storm's command line
    counters: dict[str, int]  # the agent's final stderr line
    agent_ticks: int  # storm start .. the collector had all it would get
    settle_seconds: float  # storm end .. the collector had all it would get
    hwm_kb: int
    rss_kb: list[int]  # VmRSS about every second during the storm, and at its end
    latency_ms: Counter[int]
    collector_ticks: int  # rotel, same span as agent_ticks
    processor_us: int  # of collector_ticks, in rotel_count_processor (wall time)
    written_bytes: int  # by the agent (its spool), same span as agent_ticks
    wire_bytes: int  # received by the collector from the agent (OTLP/gRPC, TCP payload), storm start .. _SPAN_DELAY after its end
    bpf_ns: int  # in the agent's BPF programs, same span; 0 without kernel.bpf_stats_enabled
    busy_after_start_s: float | None  # ready file .. the agent idle before the storm (None: never within the timeout)

    @property
    def kernel_lost(self) -> int:
        return sum(kernel_losses(self.counters).values())

    @property
    def export_lost(self) -> int:
        return sum(self.counters.get(k, 0) for k in EXPORT_LOSS_KEYS)

    @property
    def agent_us_per_exec(self) -> float:
        return ticks_to_us(self.agent_ticks) / self.storm.execs

    @property
    def collector_us_per_exec(self) -> float:
        return ticks_to_us(self.collector_ticks) / self.storm.execs

    @property
    def processor_us_per_exec(self) -> float:
        return self.processor_us / self.storm.execs

    @property
    def wire_bytes_per_exec(self) -> float:
        return self.wire_bytes / self.storm.execs


def traced_run(
    setup: Setup,
    label: str,
    total: int,
    rate: float,
    extra_args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
    storm_key: tuple[str, str] | None = None,
    count: bool = True,
    args: Sequence[str] = STORM_ARGS,
    env: Mapping[str, str] = STORM_ENV,
) -> TracedRun:
    """One storm (Storm.run's args and env) with the agent exporting to a
    fresh collector, which tells storm records by storm_key (attribute,
    value); by default the storm's marker variable, which needs the
    environment collected (and, on the record, kept last). With
    count=False the collector runs without the counting processor (nothing
    recorded, no latency) and the agent's CPU is taken _UNCOUNTED_DRAIN s
    after the storm.

    Processes left running by an exception are stopped by the caller's
    Children.stop_all().
    """
    workdir = setup.workdir / f"run-{label}"
    workdir.mkdir()
    marker = f"{setup.run_id}-{label}"
    key, value = storm_key or (MARKER_KEY, marker)
    rotel = Rotel(setup.children, setup.rotel, workdir, key, value, setup.storm.binary, count=count,
                  body=shlex.join(setup.storm.argv(args)))
    rotel.start()
    agent = AgentProcess(setup.children, setup.python, setup.repo, workdir, rotel.grpc_endpoint,
                  [*setup.agent_args, *(extra_args or [])], extra_env or {})
    agent.start()
    # Let the start-up work (seeded spans, first export) finish first.
    time.sleep(_SETTLE)
    busy_after_start_s = wait_idle(agent)
    rss: list[int] = []
    rotel.poll()  # processor time so far (start-up records) is not the storm's
    # Read once at each end (`ss` is an exec too: the agent reports it).
    wire_start = rotel.bytes_received()
    start = _sample(rotel, agent)
    result = setup.storm.run(total, rate, marker, during=lambda: rss.append(agent.status_kb("VmRSS")),
                             args=args, env=env)
    rss.append(agent.status_kb("VmRSS"))
    storm_end = time.monotonic()
    if count:
        done = wait_for_collector(rotel, agent, total)
    else:
        time.sleep(_UNCOUNTED_DRAIN)
        done = _sample(rotel, agent)
    time.sleep(max(0.0, storm_end + _SPAN_DELAY - time.monotonic()))
    wire_bytes = rotel.bytes_received() - wire_start
    hwm_kb = agent.status_kb("VmHWM")
    counters = agent.stop()
    if count:  # whatever the agent flushed while stopping still counts as recorded
        wait_for_collector(rotel, None, total, idle=_FLUSH_IDLE)
    rotel.stop()
    return TracedRun(
        label=label,
        storm=result,
        recorded=rotel.received.storm if count else None,
        argv_ok=rotel.received.argv_ok if count else None,
        counters=counters,
        agent_ticks=done.agent_ticks - start.agent_ticks,
        settle_seconds=done.when - storm_end,
        hwm_kb=hwm_kb,
        rss_kb=rss,
        latency_ms=rotel.received.latency_ms,
        collector_ticks=done.collector_ticks - start.collector_ticks,
        processor_us=done.processor_us - start.processor_us,
        written_bytes=done.agent_written - start.agent_written,
        wire_bytes=wire_bytes,
        bpf_ns=done.agent_bpf_ns - start.agent_bpf_ns,
        busy_after_start_s=busy_after_start_s,
    )


@dataclass(frozen=True)
class _Sample:
    agent_ticks: int  # 0 without an agent, as the two below
    agent_written: int
    agent_bpf_ns: int
    collector_ticks: int
    processor_us: int
    when: float  # monotonic


def _sample(rotel: Rotel, agent: AgentProcess | None) -> _Sample:
    return _Sample(agent.cpu_ticks() if agent else 0, agent.written_bytes() if agent else 0,
                   agent.bpf_run_time_ns() if agent else 0, rotel.cpu_ticks(), rotel.received.processor_us,
                   time.monotonic())


def wait_idle(agent: AgentProcess) -> float | None:
    """Wait until the agent is idle: seconds since it was ready (None: still
    busy after _IDLE_TIMEOUT s)."""
    deadline = time.monotonic() + _IDLE_TIMEOUT
    last = agent.cpu_ticks()
    while time.monotonic() < deadline:
        time.sleep(_IDLE_STEP)
        ticks = agent.cpu_ticks()
        if ticks - last <= _IDLE_TICKS:
            return time.monotonic() - agent.ready_at
        last = ticks
    return None


def wait_for_collector(rotel: Rotel, agent: AgentProcess | None, total: int, idle: float = _IDLE) -> _Sample:
    """Poll until the collector has total storm records or none came for idle s:
    the costs and time when the last record came in."""
    last = rotel.poll().storm
    at_last = _sample(rotel, agent)
    while last < total and time.monotonic() - at_last.when < idle:
        time.sleep(0.05)
        count = rotel.poll().storm
        if count != last:
            last, at_last = count, _sample(rotel, agent)
    return at_last


def measure_startup(setup: Setup, runs: int) -> list[float]:
    """Launch-to-ready seconds of `runs` agents started one after another,
    after one unmeasured launch that warms the page and bytecode caches."""
    workdir = setup.workdir / "startup"
    workdir.mkdir()
    rotel = Rotel(setup.children, setup.rotel, workdir, MARKER_KEY, f"{setup.run_id}-startup",
                  setup.storm.binary)
    rotel.start()
    times = []
    for i in range(runs + 1):
        agent = AgentProcess(setup.children, setup.python, setup.repo, workdir, rotel.grpc_endpoint,
                             list(setup.agent_args), {})
        seconds = agent.start()
        agent.stop()
        if i:
            times.append(seconds)
        time.sleep(_SETTLE)  # idle again before the next launch
    rotel.stop()
    return times
