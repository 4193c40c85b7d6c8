"""A real OTLP collector for end-to-end tests: rotel, run on loopback.

Install: ``pip install rotel==0.0.1a15`` (the version this module was written
and tested against; PyPI has only pre-releases, so a bare ``pip install
rotel`` picks the newest of them). The wheel (cp311, manylinux_2_34 x86_64)
ships the Rust binary ``rotel/rotel-agent`` (it reports 0.0.1-alpha10) and no
console script; that binary links the system's ``libpython3.11.so.1.0``
(Debian package libpython3.11) to run Python processors.

Each :class:`Collector` runs, in the foreground::

    rotel-agent start --otlp-grpc-endpoint 127.0.0.1:G --otlp-http-endpoint 127.0.0.1:H
        --exporter blackhole
        --otlp-with-logs-processor tests/helpers/rotel_dump_processor.py
        --otlp-with-trace-processor tests/helpers/rotel_dump_processor.py
        --debug-log logs --debug-log traces --debug-log-verbosity detailed

Records are read from what the processor (tests/helpers/rotel_dump_processor.py,
run inside rotel on the payload rotel decoded) writes as JSON lines, because
the ``--debug-log`` text cannot be parsed exactly: it prints strings
unescaped (``Str(a, b)``: a newline, ``)`` or ``, `` inside a value, or
``: `` inside a key, is ambiguous) and the scope as "name version" split by a
space. That text still goes, with rotel's own log, to
``Collector.output_path`` for people reading a failed test. rotel 0.0.1a15 has
no file exporter (its exporters: otlp, blackhole, datadog, clickhouse,
aws-xray, kafka).

Fixtures (re-export from tests/conftest.py)::

    def test_a(collector):            # one per session: do not stop/pause it
        ...export to collector.grpc_endpoint or collector.http_endpoint...
        [rec] = collector.wait_for_logs(lambda r: r.attributes.get("k") == 1)

    def test_b(make_collector):       # a private instance, stopped after the test
        c = make_collector()
        c.pause(); ...; c.resume(); c.restart()

Both skip the test when the rotel package is not installed
(scripts/otel-exec-dev only warns when it cannot install it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import SpanKind, StatusCode

from testkit.rotel import LOOPBACK, PORT_ATTEMPTS, PORT_TAKEN, accepts, rotel_argv, rotel_binary, rotel_env
from testkit.rotel import free_port_pair as _free_port_pair  # a name test_collector_fixture replaces

_PROCESSOR = Path(__file__).with_name("rotel_dump_processor.py")
# Written by the processor into the collector's directory (names shared with it).
_LOGS_FILE = "logs.jsonl"
_SPANS_FILE = "spans.jsonl"
# Passed to the processor through rotel's environment.
_DIR_ENV = "OTEL_EXEC_TEST_COLLECTOR_DIR"

_POLL_INTERVAL = 0.02

# OTLP's SpanKind numbers (0 is SPAN_KIND_UNSPECIFIED) differ from the API's.
_SPAN_KINDS = {
    1: SpanKind.INTERNAL,
    2: SpanKind.SERVER,
    3: SpanKind.CLIENT,
    4: SpanKind.PRODUCER,
    5: SpanKind.CONSUMER,
}


class CollectorError(RuntimeError):
    """rotel could not be started, died, or its processor failed."""


@dataclasses.dataclass(frozen=True)
class LogRecord:
    """One OTLP log record as rotel received it.

    Values are typed as sent: str, int, float, bool, bytes, list (arrays),
    dict (maps), None (an empty value). Ids are lower-case hex, "" when unset.
    """

    timestamp: int  # ns since the epoch, 0 when unset
    observed_timestamp: int  # ns
    severity_number: SeverityNumber
    severity_text: str
    body: Any  # a str for a string body
    attributes: dict[str, Any]
    event_name: str  # "" when unset
    trace_id: str
    span_id: str
    flags: int  # W3C trace flags in the low 8 bits
    dropped_attributes_count: int
    resource: dict[str, Any]  # resource attributes
    scope_name: str
    scope_version: str


@dataclasses.dataclass(frozen=True)
class SpanEvent:
    name: str
    timestamp: int  # ns
    attributes: dict[str, Any]
    dropped_attributes_count: int


@dataclasses.dataclass(frozen=True)
class SpanLink:
    trace_id: str
    span_id: str
    trace_state: str
    flags: int
    attributes: dict[str, Any]
    dropped_attributes_count: int


@dataclasses.dataclass(frozen=True)
class Span:
    """One OTLP span as rotel received it (value and id conventions as LogRecord)."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    trace_state: str
    flags: int
    name: str
    kind: SpanKind | None  # None for SPAN_KIND_UNSPECIFIED
    start_time: int  # ns
    end_time: int  # ns
    status_code: StatusCode
    status_message: str
    attributes: dict[str, Any]
    dropped_attributes_count: int
    events: list[SpanEvent]
    dropped_events_count: int
    links: list[SpanLink]
    dropped_links_count: int
    resource: dict[str, Any]
    scope_name: str
    scope_version: str


def _value(tagged: dict[str, Any] | None) -> Any:
    if tagged is None:
        return None
    ((tag, raw),) = tagged.items()
    if tag in ("stringValue", "intValue", "doubleValue", "boolValue"):
        return raw
    if tag == "bytesValue":
        return bytes.fromhex(raw)
    if tag == "arrayValue":
        return [_value(item) for item in raw]
    if tag == "kvlistValue":
        return _attributes(raw)
    raise CollectorError(f"unknown value tag {tag!r} from the rotel processor")


def _attributes(pairs: list[list[Any]]) -> dict[str, Any]:
    return {key: _value(value) for key, value in pairs}


def _log_record(raw: dict[str, Any]) -> LogRecord:
    return LogRecord(
        timestamp=raw["time_unix_nano"],
        observed_timestamp=raw["observed_time_unix_nano"],
        severity_number=SeverityNumber(raw["severity_number"]),
        severity_text=raw["severity_text"],
        body=_value(raw["body"]),
        attributes=_attributes(raw["attributes"]),
        event_name=raw["event_name"],
        trace_id=raw["trace_id"],
        span_id=raw["span_id"],
        flags=raw["flags"],
        dropped_attributes_count=raw["dropped_attributes_count"],
        resource=_attributes(raw["resource"]),
        scope_name=raw["scope"]["name"],
        scope_version=raw["scope"]["version"],
    )


def _span(raw: dict[str, Any]) -> Span:
    return Span(
        trace_id=raw["trace_id"],
        span_id=raw["span_id"],
        parent_span_id=raw["parent_span_id"],
        trace_state=raw["trace_state"],
        flags=raw["flags"],
        name=raw["name"],
        kind=_SPAN_KINDS.get(raw["kind"]),
        start_time=raw["start_time_unix_nano"],
        end_time=raw["end_time_unix_nano"],
        status_code=StatusCode(raw["status_code"]),
        status_message=raw["status_message"],
        attributes=_attributes(raw["attributes"]),
        dropped_attributes_count=raw["dropped_attributes_count"],
        events=[
            SpanEvent(
                name=ev["name"],
                timestamp=ev["time_unix_nano"],
                attributes=_attributes(ev["attributes"]),
                dropped_attributes_count=ev["dropped_attributes_count"],
            )
            for ev in raw["events"]
        ],
        dropped_events_count=raw["dropped_events_count"],
        links=[
            SpanLink(
                trace_id=link["trace_id"],
                span_id=link["span_id"],
                trace_state=link["trace_state"],
                flags=link["flags"],
                attributes=_attributes(link["attributes"]),
                dropped_attributes_count=link["dropped_attributes_count"],
            )
            for link in raw["links"]
        ],
        dropped_links_count=raw["dropped_links_count"],
        resource=_attributes(raw["resource"]),
        scope_name=raw["scope"]["name"],
        scope_version=raw["scope"]["version"],
    )


_T = TypeVar("_T")


class _JsonLines(Generic[_T]):
    """Records parsed so far from a JSON-lines file that another process appends to."""

    def __init__(self, path: Path, parse: Callable[[dict[str, Any]], _T]) -> None:
        self._path = path
        self._parse = parse
        self._offset = 0  # just past the last complete line parsed
        self._error: str | None = None
        self.records: list[_T] = []

    def poll(self) -> list[_T]:
        if self._error is None:
            try:
                with self._path.open("rb") as f:
                    f.seek(self._offset)
                    data = f.read()
            except FileNotFoundError:  # nothing received yet
                data = b""
            # A line without its newline yet is left for the next poll.
            complete = data[: data.rfind(b"\n") + 1]
            for line in complete.split(b"\n")[:-1]:
                raw = json.loads(line)
                self._offset += len(line) + 1
                if "processor_error" in raw:
                    self._error = raw["processor_error"]
                    break
                self.records.append(self._parse(raw))
        if self._error is not None:
            raise CollectorError(f"the rotel processor failed ({self._path.name}):\n{self._error}")
        return self.records


def metric_points(dump: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(attributes, value) of every data point of metric `name` in rotel's
    detailed debug log, in the order exported."""
    points: list[tuple[dict[str, str], float]] = []
    for block in re.split(r"(?m)^(?=Metric #\d+)", dump):
        if not re.search(rf"(?m)^\s*-> Name: {re.escape(name)}\s*$", block):
            continue
        for dp in re.split(r"(?m)^(?=\w*DataPoints? #\d+)", block)[1:]:
            attrs = dict(re.findall(r"(?m)^\s*-> (\S+): Str\((.*)\)\s*$", dp))
            value = re.search(r"(?m)^Value: (\S+)\s*$", dp)
            if value:
                points.append((attrs, float(value.group(1))))
    return points


def last_value(dump: str, name: str, **attrs: str) -> float:
    values = [v for a, v in metric_points(dump, name) if all(a.get(k) == w for k, w in attrs.items())]
    assert values, f"no data point of {name} {attrs} in the collector's dump"
    return values[-1]


def _owns_listener(pid: int, port: int) -> bool:
    """Whether process pid holds a listening TCP socket on port.

    Checked instead of a bare connect, which another process that took the
    port would answer as well.
    """
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        # fields: sl, local "HEXADDR:HEXPORT", remote, state (0A = LISTEN), ..., [9] inode
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:  # exited meanwhile: the caller sees it next
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in inodes:
                return True
        except FileNotFoundError:  # closed meanwhile
            continue
    return False


def _process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (T when stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name, in parentheses, may contain spaces: split after it.
    return stat.rsplit(")", 1)[1].split()[0]


class Collector:
    """One rotel process on two loopback ports, with the records it received.

    The ports are picked once, at the first start(), and kept by restart().
    Records accumulate across restarts; logs() and spans() return them in
    the order rotel processed them.
    """

    def __init__(self, workdir: Path, *, startup_timeout: float = 10.0) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # rotel's stdout and stderr: its own log and the --debug-log dump.
        self.output_path = workdir / "rotel.out"
        self._binary = rotel_binary()
        self._startup_timeout = startup_timeout
        self._ports: tuple[int, int] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._paused = False
        # Tests may poll from several threads; the readers keep file offsets.
        self._lock = threading.Lock()
        self._logs = _JsonLines(workdir / _LOGS_FILE, _log_record)
        self._spans = _JsonLines(workdir / _SPANS_FILE, _span)

    # --- endpoints ---------------------------------------------------------

    @property
    def grpc_port(self) -> int:
        return self._started_ports()[0]

    @property
    def http_port(self) -> int:
        return self._started_ports()[1]

    @property
    def grpc_endpoint(self) -> str:
        """For OTLP/gRPC exporters (with insecure=True)."""
        return f"http://{LOOPBACK}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL for OTLP/HTTP: the signals are at /v1/logs and /v1/traces."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        """rotel's pid while it runs (paused or not), else None."""
        return None if self._proc is None else self._proc.pid

    def _started_ports(self) -> tuple[int, int]:
        if self._ports is None:
            raise CollectorError("the collector has not been started")
        return self._ports

    # --- life cycle --------------------------------------------------------

    def start(self) -> None:
        """Start rotel and wait until it listens on both ports."""
        if self._proc is not None:
            raise CollectorError("the collector is already running")
        if self._ports is None:
            for _ in range(PORT_ATTEMPTS):
                ports = _free_port_pair()
                if self._launch(ports):
                    self._ports = ports
                    return
            raise CollectorError(f"no free port pair for rotel in {PORT_ATTEMPTS} tries")
        # Same ports as before: wait for whatever holds one to let go of it.
        deadline = time.monotonic() + self._startup_timeout
        while not self._launch(self._ports):
            if time.monotonic() > deadline:
                raise CollectorError(f"ports {self._ports} stayed in use by another process")
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop rotel (SIGTERM, then SIGKILL after timeout s); a no-op if stopped."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            if self._paused:
                # A stopped process acts on the pending SIGTERM once continued.
                proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._paused = False
        self._close_output()

    def restart(self) -> None:
        """stop() then start() on the same ports, keeping the records received."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP rotel: a hung collector.

        The kernel still completes TCP handshakes into the listen backlog, so
        exporters connect but get no answer (they time out).
        """
        proc = self._running_proc()
        proc.send_signal(signal.SIGSTOP)
        self._paused = True
        # SIGSTOP takes effect asynchronously; return only once it has.
        self._wait_state(proc.pid, lambda state: state == "T")

    def resume(self) -> None:
        """SIGCONT rotel after pause()."""
        proc = self._running_proc()
        proc.send_signal(signal.SIGCONT)
        self._paused = False
        self._wait_state(proc.pid, lambda state: state != "T")

    def _describe_state(self) -> str:
        if self._proc is None:
            return "stopped"
        returncode = self._proc.poll()
        if returncode is not None:
            return f"exited with {returncode}"
        return "paused" if self._paused else "running"

    def _running_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise CollectorError(f"rotel is not running\n{self.output_tail()}")
        return self._proc

    def _wait_state(self, pid: int, done: Callable[[str], bool]) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while not done(_process_state(pid)):
            if time.monotonic() > deadline:
                raise CollectorError(f"rotel (pid {pid}) stays in state {_process_state(pid)}")
            time.sleep(_POLL_INTERVAL)

    def _launch(self, ports: tuple[int, int]) -> bool:
        """Run rotel on ports until ready: True, or False if a port was taken."""
        env = rotel_env(**{_DIR_ENV: str(self.workdir)})
        argv = rotel_argv(
            self._binary,
            ports,
            "--otlp-with-logs-processor",
            str(_PROCESSOR),
            "--otlp-with-trace-processor",
            str(_PROCESSOR),
            "--debug-log",
            "logs",
            "--debug-log",
            "traces",
            "--debug-log",  # the agent's own metrics: few, read as text by tests/export/test_telemetry.py
            "metrics",
            "--debug-log-verbosity",
            "detailed",
        )
        self._output = self.output_path.open("ab")
        start_offset = self._output.tell()
        self._output.write(f"--- collector: {' '.join(argv)}\n".encode())
        self._output.flush()
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self._startup_timeout
        while True:
            returncode = proc.poll()
            if returncode is not None:
                self._close_output()
                output = self._read_output(start_offset)
                if PORT_TAKEN in output:
                    return False
                raise CollectorError(f"rotel exited with {returncode} while starting:\n{output}")
            if all(_owns_listener(proc.pid, port) and accepts(port, timeout=1) for port in ports):
                self._proc = proc
                return True
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                self._close_output()
                raise CollectorError(
                    f"rotel did not listen on {ports} within {self._startup_timeout}s:\n"
                    + self._read_output(start_offset)
                )
            time.sleep(_POLL_INTERVAL)

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    def _read_output(self, offset: int) -> str:
        with self.output_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def output_tail(self, limit: int = 4000) -> str:
        """The last limit bytes of rotel's output, for failure messages."""
        size = self.output_path.stat().st_size if self.output_path.exists() else 0
        return self._read_output(max(0, size - limit))

    # --- received data -------------------------------------------------------

    def logs(self) -> list[LogRecord]:
        """Every log record received so far, oldest first."""
        with self._lock:
            return list(self._logs.poll())

    def spans(self) -> list[Span]:
        """Every span received so far, oldest first."""
        with self._lock:
            return list(self._spans.poll())

    def wait_for_logs(
        self,
        pred: Callable[[LogRecord], bool] | None = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[LogRecord]:
        """Wait until at least count received log records match pred (None: any).

        Returns all matching records; raises TimeoutError with what was seen.
        """
        return self._wait_for(self._logs, "log records", pred, count, timeout)

    def wait_for_spans(
        self,
        pred: Callable[[Span], bool] | None = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[Span]:
        """Wait until at least count received spans match pred (None: any)."""
        return self._wait_for(self._spans, "spans", pred, count, timeout)

    def _wait_for(
        self,
        reader: _JsonLines[_T],
        what: str,
        pred: Callable[[_T], bool] | None,
        count: int,
        timeout: float,
    ) -> list[_T]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                received = list(reader.poll())
            matched = [r for r in received if pred is None or pred(r)]
            if len(matched) >= count:
                return matched
            if time.monotonic() > deadline:
                state = self._describe_state()
                raise TimeoutError(
                    f"{len(matched)} of {count} {what} matched after {timeout}s "
                    f"({len(received)} received, rotel {state}); rotel output tail:\n"
                    + self.output_tail()
                )
            time.sleep(_POLL_INTERVAL)


def _rotel_or_skip() -> None:
    try:
        rotel_binary()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """One collector for the session. Tests must not stop, restart or pause
    it (use make_collector), and should select their records by a predicate:
    other tests' records are there too."""
    _rotel_or_skip()
    instance = Collector(tmp_path_factory.mktemp("collector"))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def make_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Collector]]:
    """Factory of started private collectors, all stopped after the test."""
    _rotel_or_skip()
    made: list[Collector] = []

    def make() -> Collector:
        instance = Collector(tmp_path_factory.mktemp("collector"))
        made.append(instance)
        instance.start()
        return instance

    yield make
    for instance in made:
        instance.stop()
