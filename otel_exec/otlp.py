"""OTLP export: resource, batching, and the SDK's exporters as transports.

Records are encoded by otel_exec.mapping; here they are batched (honouring
OTEL_BLRP_* / OTEL_BSP_*) and sent through the OpenTelemetry SDK's own OTLP
exporters, which keep their configuration from the standard OTEL_EXPORTER_OTLP_*
variables, their TLS, headers, compression and retry logic. Only the step
that turns SDK objects into protobuf is bypassed: the exporters are handed
bytes that are already an export request.
"""
from __future__ import annotations

import logging
import os
import platform
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

from . import __version__
from . import protowire as w
from .errors import UsageError
from . import mapping
from .events import ExecEvent
from .identity import HostIdentity
from .proctable import ProcessInfo
from .spool import Batch, Position, SignalSpool, Spool, frame

log = logging.getLogger("otel_exec.otlp")

PROTOCOLS = ("grpc", "http/protobuf")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm32", "ppc64le": "ppc64", "s390x": "s390x"}


@dataclass
class OtlpOptions:
    endpoint: str | None = None  # --endpoint: overrides OTEL_EXPORTER_OTLP_*ENDPOINT
    protocol: str | None = None  # --protocol: overrides OTEL_EXPORTER_OTLP_*PROTOCOL
    headers: dict[str, str] = field(default_factory=dict)  # --header: overrides *_HEADERS
    span_env: bool = False  # --span-env: environment attributes on spans too


def configured(opts: OtlpOptions) -> bool:
    """Whether the user pointed us at a collector at all."""
    return bool(opts.endpoint) or any(
        os.environ.get(k) for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def resource_attributes(identity: HostIdentity) -> dict[str, object]:
    """Our defaults, overridden by OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    ours = Resource({
        "service.name": "otel-exec",
        "service.version": __version__,
        "service.instance.id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"otel-exec/{identity.machine_id}")),
        "host.name": socket.gethostname(),
        "host.id": identity.machine_id,
        "os.type": "linux",
        "host.arch": _ARCH.get(platform.machine(), platform.machine()),
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.language": "python",
    })
    return dict(ours.merge(OTELResourceDetector().detect()).attributes)


def _encoded_resource(attrs: dict[str, object]) -> bytes:
    kvs = [w.key_value(w.key_head(k), w.any_value(v)) for k, v in attrs.items()]  # type: ignore[arg-type]
    return w.repeated(1, kvs)


_SCOPE = w.len_field(1, b"otel-exec") + w.len_field(2, __version__.encode())


_SCOPE_FIELD = w.len_field(1, _SCOPE)


def export_request(resource: bytes, records: list[bytes]) -> bytes:
    """ExportLogsServiceRequest or ExportTraceServiceRequest from records
    framed as mapping.log_record() and mapping.span() frame them: both nest
    resource (1) and one scope block (2) holding scope (1) and the records
    (2). The records are copied once, by one join."""
    size = len(_SCOPE_FIELD) + sum(map(len, records))
    scope_head = w.tag(2, w.LEN) + w.varint(size)
    resource_field = w.len_field(1, resource)
    inner = len(resource_field) + len(scope_head) + size
    return b"".join((w.tag(1, w.LEN), w.varint(inner), resource_field, scope_head, _SCOPE_FIELD, *records))


class Transport(Protocol):
    def start(self) -> None: ...
    def send(self, payload: bytes, count: int) -> bool: ...
    def shutdown(self) -> None: ...


@dataclass
class _Prepared:
    payload: bytes
    count: int


_GRPC_METHODS = {
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
}


class _RawStub:
    """A stub whose Export takes the serialized request as bytes."""

    def __init__(self, channel: object, method: str) -> None:
        self.Export = channel.unary_unary(method)  # type: ignore[attr-defined]


class ChannelAtStart:
    """Mixed into an SDK gRPC exporter: its constructor reads the TLS files
    (as root, before the privilege drop) but makes no channel, since the
    first channel starts gRPC's threads; start_channel() makes it after."""

    _channel_allowed = False

    def _initialize_channel_and_stub(self) -> None:
        if self._channel_allowed:
            super()._initialize_channel_and_stub()  # type: ignore[misc]

    def start_channel(self) -> None:
        self._channel_allowed = True
        self._initialize_channel_and_stub()


def _grpc_transport(signal: str, opts: OtlpOptions) -> Transport:
    if signal == "logs":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as Base
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Base

    class RawGrpcExporter(ChannelAtStart, Base):  # type: ignore[misc, valid-type]
        def _initialize_channel_and_stub(self) -> None:
            super()._initialize_channel_and_stub()
            if self._channel is not None:
                self._client = _RawStub(self._channel, _GRPC_METHODS[signal])

        def _translate_data(self, data: _Prepared) -> bytes:  # type: ignore[override]
            return data.payload

        def _count_data(self, data: _Prepared) -> int:  # type: ignore[override]
            return data.count

    exporter = RawGrpcExporter(endpoint=opts.endpoint, headers=opts.headers or None)

    class GrpcTransport:
        def start(self) -> None:
            exporter.start_channel()

        def send(self, payload: bytes, count: int) -> bool:
            return exporter._export(_Prepared(payload, count)).name == "SUCCESS"

        def shutdown(self) -> None:
            exporter.shutdown()

    return GrpcTransport()


def otlp_http_session() -> "requests.Session":
    """A requests session for the SDK's OTLP/HTTP exporters in which the CA
    file they configure from OTEL_EXPORTER_OTLP_*CERTIFICATE (set as
    session.verify) wins: requests otherwise lets REQUESTS_CA_BUNDLE /
    CURL_CA_BUNDLE override a session's verify, so the OTLP CA would be
    silently ignored wherever either is set."""
    import requests

    class Session(requests.Session):
        def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[no-untyped-def]
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if verify is None and self.verify is not True:
                settings["verify"] = self.verify
            return settings

    return Session()


def _http_transport(signal: str, opts: OtlpOptions) -> Transport:
    if signal == "logs":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as Exporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Exporter
    endpoint = f"{opts.endpoint.rstrip('/')}/v1/{signal}" if opts.endpoint else None
    exporter = Exporter(endpoint=endpoint, headers=opts.headers or None, session=otlp_http_session())

    class HttpTransport:
        def start(self) -> None:
            pass  # requests connects at the first send

        def send(self, payload: bytes, count: int) -> bool:
            return bool(exporter._client.export(payload).success)

        def shutdown(self) -> None:
            exporter.shutdown()

    return HttpTransport()


def protocol_for(signal: str, opts: OtlpOptions) -> str:
    proto = (opts.protocol or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
             or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
    if proto not in PROTOCOLS:
        raise UsageError(f"OTLP protocol {proto!r} is not supported; use one of {', '.join(PROTOCOLS)}")
    return proto


def make_transport(signal: str, opts: OtlpOptions) -> Transport:
    if protocol_for(signal, opts) == "grpc":
        return _grpc_transport(signal, opts)
    return _http_transport(signal, opts)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not an integer") from None
    if value <= 0:
        raise UsageError(f"{name} must be positive")
    return value


@dataclass
class BatchSettings:
    schedule_delay_s: float
    max_queue_size: int
    max_export_batch_size: int

    @classmethod
    def from_env(cls, prefix: str, default_delay_ms: int) -> BatchSettings:
        """OTEL_BLRP_* (logs) or OTEL_BSP_* (spans), with the spec's defaults
        but for the batch size: 256 rather than 512 records per request
        halves what waits in memory (an exec's log record is a few KiB),
        at no measurable CPU cost (BENCHMARKS.md).
        *_EXPORT_TIMEOUT is not used: a request's deadline is the exporter's
        OTEL_EXPORTER_OTLP_TIMEOUT, as the SDK's exporters apply it."""
        settings = cls(
            _env_int(f"{prefix}_SCHEDULE_DELAY", default_delay_ms) / 1000,
            _env_int(f"{prefix}_MAX_QUEUE_SIZE", 2048),
            _env_int(f"{prefix}_MAX_EXPORT_BATCH_SIZE", 256),
        )
        settings.max_export_batch_size = min(settings.max_export_batch_size, settings.max_queue_size)
        return settings


# Collectors refuse gRPC messages over 4 MiB by default.
MAX_REQUEST_BYTES = 3 * 1024 * 1024


class MemoryQueue:
    """Records in memory only (--no-spool): lost if the agent dies; when
    full, or when the exporter gives up on a batch, records are dropped and
    counted."""

    retries = False

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.overflow = 0
        self._added = 0
        self._q: deque[bytes] = deque()

    def add(self, record: bytes) -> None:
        if len(self._q) >= self.max_size:
            self.overflow += 1
            return
        self._q.append(record)
        self._added += 1

    def flush(self) -> int:
        """Records are visible to the exporter as soon as they are added:
        returns how many were since the last flush."""
        added, self._added = self._added, 0
        return added

    def take(self, max_records: int, max_bytes: int) -> Batch | None:
        q = self._q
        if not q:
            return None
        batch: list[bytes] = []
        size = 0
        while q and len(batch) < max_records and size < max_bytes:
            rec = q.popleft()
            batch.append(rec)
            size += len(rec)
        return Batch(batch, Position(0, 0))

    def release(self, batch: Batch) -> None:
        """The request holds the records: a failed batch is dropped anyway."""
        batch.records = []

    def done(self, batch: Batch) -> None:
        """Taken records are gone from memory already."""

    def pending(self) -> int:
        return len(self._q)

    def stats(self) -> dict[str, int]:
        return {"queue_overflow": self.overflow, "unsent": len(self._q)}


class SpoolQueue:
    """Records written to the on-disk spool (otel_exec.spool) at the end of
    each drain of the ring buffer, and sent from there: a failed batch stays
    to be sent again."""

    retries = True

    def __init__(self, spool: SignalSpool) -> None:
        self.spool = spool
        self._buf: list[bytes] = []

    def add(self, record: bytes) -> None:
        self._buf += (frame(len(record)), record)

    def flush(self) -> int:
        """Write what was added since the last flush; returns how many."""
        buf, self._buf = self._buf, []
        self.spool.append(buf, len(buf) // 2)
        return len(buf) // 2

    def take(self, max_records: int, max_bytes: int) -> Batch | None:
        return self.spool.read(max_records, max_bytes)

    def release(self, batch: Batch) -> None:
        """The request holds the records: memory keeps none; if it fails,
        the next take() reads them back from the segment files."""
        batch.records = []
        self.spool.forget(batch.end)

    def done(self, batch: Batch) -> None:
        self.spool.ack(batch.end)

    def pending(self) -> int:
        return self.spool.pending_bytes()

    def stats(self) -> dict[str, int]:
        oldest = self.spool.oldest_pending_ns()
        return {**self.spool.stats(), "spool_bytes": self.spool.pending_bytes(),
                "spool_oldest_age_s": max(0, time.time_ns() - oldest) // 10**9 if oldest else 0}


RecordQueue = MemoryQueue | SpoolQueue
_BACKOFF_MAX_S = 30.0


class BatchExporter:
    """One signal's records and the thread that sends them in batches."""

    def __init__(self, signal: str, transport: Transport, resource: bytes, settings: BatchSettings,
                 queue: RecordQueue) -> None:
        self.signal = signal
        self.transport = transport
        self.resource = resource
        self.settings = settings
        self.queue = queue
        self.exported = 0
        self.failed = 0  # dropped after the exporter gave up (memory queue only)
        self.latency_ms = 0  # of the last request the collector answered
        # The queue's own method: one call per record on the reader's hot path.
        self.add: Callable[[bytes], None] = queue.add
        self._added = 0
        self._wake = threading.Event()
        self._stopping = False
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name=f"otlp-{signal}", daemon=True)

    def start(self) -> None:
        self.transport.start()
        self._thread.start()

    def flush(self) -> None:
        """End of a drain: make the records durable, wake the sender once a
        full batch waits."""
        self._added += self.queue.flush()
        if self._added >= self.settings.max_export_batch_size:
            self._added = 0
            self._wake.set()

    def _run(self) -> None:
        backoff = 0.0
        while not self._stopping:
            self._wake.wait(max(backoff, self.settings.schedule_delay_s))
            self._wake.clear()
            backoff = 0.0 if self._send_pending() else min(max(1.0, 2 * backoff), _BACKOFF_MAX_S)
        while time.monotonic() < self._deadline and self._send_pending() and self.queue.pending():
            pass

    def _send_pending(self) -> bool:
        """Send until nothing is pending; False when a send failed and the
        queue keeps the batch for a later try."""
        while time.monotonic() < self._deadline:
            batch = self.queue.take(self.settings.max_export_batch_size, MAX_REQUEST_BYTES)
            if batch is None:
                return True
            if batch.records:
                count = len(batch.records)
                request = export_request(self.resource, batch.records)
                # The request holds the records now: the queue lets go of
                # its copies, so that at a storm's peak a batch is in memory
                # once (plus the transport's copy), not twice.
                self.queue.release(batch)
                try:
                    started = time.monotonic()
                    ok = self.transport.send(request, count)
                    self.latency_ms = int((time.monotonic() - started) * 1000)
                except Exception:  # the SDK logs the cause; a crash here would stop all export
                    log.exception("OTLP %s export failed", self.signal)
                    ok = False
                del request
                if ok:
                    self.exported += count
                elif self.queue.retries:
                    return False
                else:
                    self.failed += count
            self.queue.done(batch)
        return False

    def begin_shutdown(self, timeout_s: float) -> None:
        """Send what is pending within timeout_s, then stop; what a spool
        still holds is sent after the next start. join() waits."""
        self.queue.flush()
        self._deadline = time.monotonic() + timeout_s
        self._stopping = True
        self._wake.set()

    def join(self) -> None:
        if self._thread.ident is not None:  # started
            self._thread.join(max(0.0, self._deadline - time.monotonic()) + 1)
        self.transport.shutdown()

    def stats(self) -> dict[str, int]:
        return {f"{self.signal}_{k}": v for k, v in
                {"exported": self.exported, "failed": self.failed, "export_latency_ms": self.latency_ms,
                 **self.queue.stats()}.items()}


class OtlpSink:
    """Exec log records and process spans, to an OTLP endpoint, through the
    spool unless it is off."""

    def __init__(self, opts: OtlpOptions, identity: HostIdentity, spool: Spool | None) -> None:
        self.span_env = opts.span_env
        self.spool = spool
        resource = _encoded_resource(resource_attributes(identity))

        def exporter(signal: str, prefix: str, delay_ms: int) -> BatchExporter:
            settings = BatchSettings.from_env(prefix, delay_ms)
            queue = SpoolQueue(spool.signal(signal)) if spool else MemoryQueue(settings.max_queue_size)
            return BatchExporter(signal, make_transport(signal, opts), resource, settings, queue)

        self.logs = exporter("logs", "OTEL_BLRP", 1000)
        self.spans = exporter("traces", "OTEL_BSP", 5000)

    def start(self) -> None:
        """After the privilege drop: the export threads and connections."""
        self.logs.start()
        self.spans.start()

    def seed(self, infos: list[ProcessInfo]) -> None:
        """Processes already running get a span, and a log record each: they
        may have started while no agent watched."""
        now = time.time_ns()
        for info in infos:
            if info.seeded_from_proc:
                attrs = mapping.Attrs.of(mapping.seeded_attributes(info))
                self.logs.add(mapping.observed_record(info, attrs, now))
                if info.owns_span:
                    info.span_attrs = (attrs.span,)
        gap = self.spool.gap() if self.spool else None
        if gap is not None:
            self.logs.add(mapping.gap_record(gap.start_ns, gap.end_ns, gap.seconds, gap.clock_step_s))
        self.flush()

    def on_exec(self, ev: ExecEvent, info: ProcessInfo, previous: ProcessInfo | None) -> None:
        enc = mapping.exec_attributes(ev, self.span_env)
        self.logs.add(mapping.log_record(ev, enc, info, time.time_ns()))
        info.span_attrs = enc.span_attrs()
        if previous is not None and previous.owns_span:
            self._end(previous, ev.timestamp, "exec")

    def on_exit(self, info: ProcessInfo, timestamp: int) -> None:
        if info.owns_span:
            self._end(info, timestamp, "exit")

    def on_unreported_exec(self, info: ProcessInfo, timestamp: int) -> None:
        if info.owns_span:
            self._end(info, timestamp, "exec")  # the next image was filtered or sampled out

    def on_drop(self, info: ProcessInfo) -> None:
        if info.owns_span:
            self._end(info, time.time_ns(), "evicted", incomplete=True)

    def _end(self, info: ProcessInfo, end_ns: int, reason: str, incomplete: bool = False) -> None:
        self.spans.add(mapping.span(info, end_ns, reason, incomplete))
        info.owns_span = False
        info.span_attrs = ()

    def flush(self) -> None:
        """The end of a drain of the ring buffer: everything read so far is
        handed over (written to the spool)."""
        self.logs.flush()
        self.spans.flush()
        if self.spool:
            self.spool.beat()

    def close(self, still_open: list[ProcessInfo], timeout_s: float) -> None:
        now = time.time_ns()
        for info in still_open:
            if info.owns_span:
                self._end(info, now, "agent_stopped", incomplete=True)
        self.flush()
        # Both signals flush at once, within the one grace period.
        for b in (self.logs, self.spans):
            b.begin_shutdown(timeout_s)
        for b in (self.logs, self.spans):
            b.join()
        if self.spool:
            self.spool.close()

    def stats(self) -> dict[str, int]:
        return {**self.logs.stats(), **self.spans.stats(), **(self.spool.stats() if self.spool else {})}
