"""OTLP export: resource, batching, transports, and what each failure means.

Records are encoded by otel_exec.export.otlp.encode; here they are batched (honouring
OTEL_BLRP_* / OTEL_BSP_*), wrapped into export requests by concatenation, and
sent by two small transports of our own: gRPC through grpcio (the OTLP
service's Export method, called with bytes) and HTTP through requests. Both
take their configuration from the standard OTEL_EXPORTER_OTLP_* variables as
the OpenTelemetry SDK's exporters do. Each answer is classified as the OTLP
specification says (retry with backoff, drop and count, split a request that
is too large, count a partial success); docs/operations.md says what each
counter means for an operator.
"""
from __future__ import annotations

import datetime
import email.utils
import enum
import gzip
import logging
import os
import platform
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

from otel_exec import __version__
from otel_exec.export.otlp import protowire as w
from otel_exec.errors import UsageError
from otel_exec.export.otlp import encode
from otel_exec.model.events import ExecEvent
from otel_exec.host.identity import HostIdentity
from otel_exec.lineage.proctable import ProcessInfo
from otel_exec.export.spool import Batch, Position, SignalSpool, Spool, frame

if TYPE_CHECKING:
    import grpc
    import requests

log = logging.getLogger("otel_exec.export.otlp.sink")

PROTOCOLS = ("grpc", "http/protobuf")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm32", "ppc64le": "ppc64", "s390x": "s390x"}


@dataclass
class OtlpOptions:
    endpoint: str | None = None  # --endpoint: overrides OTEL_EXPORTER_OTLP_*ENDPOINT
    protocol: str | None = None  # --protocol: overrides OTEL_EXPORTER_OTLP_*PROTOCOL
    headers: dict[str, str] = field(default_factory=dict)  # --header: overrides *_HEADERS
    span_env: bool = False  # --span-env: environment attributes on spans too
    signals: tuple[str, ...] = ("logs", "traces")  # those OTEL_<SIGNAL>_EXPORTER sends over OTLP


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
    framed as encode.log_record() and encode.span() frame them: both nest
    resource (1) and one scope block (2) holding scope (1) and the records
    (2). The records are copied once, by one join."""
    size = len(_SCOPE_FIELD) + sum(map(len, records))
    scope_head = w.tag(2, w.LEN) + w.varint(size)
    resource_field = w.len_field(1, resource)
    inner = len(resource_field) + len(scope_head) + size
    return b"".join((w.tag(1, w.LEN), w.varint(inner), resource_field, scope_head, _SCOPE_FIELD, *records))


class Outcome(enum.Enum):
    SENT = "sent"  # accepted (maybe in part: Answer.rejected)
    RETRY = "retry"  # the OTLP spec's retryable failures: send again later
    REJECTED = "rejected"  # not retryable: the batch is dropped and counted
    TOO_LARGE = "too_large"  # split the batch and send the halves


@dataclass
class Answer:
    """What became of one export request."""

    outcome: Outcome
    reason: str = ""  # "HTTP 400", "INVALID_ARGUMENT", "ConnectionError": logged once each
    message: str = ""  # the collector's own words
    retry_after_s: float | None = None  # the server's Retry-After / RetryInfo
    rejected: int = 0  # partial success: records the collector refused


class Transport(Protocol):
    target: str

    def start(self) -> None: ...
    def send(self, payload: bytes) -> Answer: ...
    def shutdown(self) -> None: ...


def _partial_success(response: bytes) -> tuple[int, str]:
    """(rejected records, error message) of an Export{Logs,Trace}ServiceResponse:
    partial_success (1) holds rejected_log_records / rejected_spans (1) and
    error_message (2)."""
    rejected, message = 0, ""
    for number, wire_type, value in w.fields(response):
        if number == 1 and wire_type == w.LEN:
            for inner, inner_type, inner_value in w.fields(value):  # type: ignore[arg-type]
                if inner == 1 and inner_type == w.VARINT:
                    rejected = max(0, w.signed64(inner_value))  # type: ignore[arg-type]
                elif inner == 2 and inner_type == w.LEN:
                    message = inner_value.decode("utf-8", "replace")  # type: ignore[union-attr]
    return rejected, message


def _sent(response: bytes) -> Answer:
    try:
        rejected, message = _partial_success(response)
    except ValueError:  # a collector answering garbage still took the request
        return Answer(Outcome.SENT)
    return Answer(Outcome.SENT, "partial success" if rejected or message else "", message, rejected=rejected)


_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def _retry_delay(retry_info: bytes) -> float:
    """RetryInfo.retry_delay (1), a Duration: seconds (1), nanos (2)."""
    delay = 0.0
    for number, _, value in w.fields(retry_info):
        if number == 1:
            for part, _, amount in w.fields(value):  # type: ignore[arg-type]
                delay += w.signed64(amount) if part == 1 else amount / 1e9  # type: ignore[operator, arg-type]
    return max(0.0, delay)


def _status_details(status: bytes) -> tuple[str, float | None]:
    """(message, RetryInfo delay or None) of a google.rpc.Status: message (2),
    details (3) as Any: type_url (1), value (2)."""
    message, delay = "", None
    for number, _, value in w.fields(status):
        if number == 2:
            message = value.decode("utf-8", "replace")  # type: ignore[union-attr]
        elif number == 3:
            parts = {n: v for n, _, v in w.fields(value)}  # type: ignore[arg-type]
            if parts.get(1) == _RETRY_INFO.encode():
                delay = _retry_delay(parts.get(2, b""))  # type: ignore[arg-type]
    return message, delay


# The OTLP specification's retryable gRPC codes; RESOURCE_EXHAUSTED only when
# the server sends RetryInfo (else: the request was too large).
_GRPC_RETRYABLE = frozenset({"CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE",
                             "DATA_LOSS"})
_GRPC_METHODS = {
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
}


def _grpc_failure(error: "grpc.RpcError") -> Answer:
    code = error.code().name  # type: ignore[attr-defined]
    message = error.details() or ""  # type: ignore[attr-defined]
    delay = None
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        try:
            if key == "grpc-status-details-bin":
                delay = _status_details(value)[1] if delay is None else delay
            elif key == "google.rpc.retryinfo-bin":  # where the Python SDK's servers put it
                delay = _retry_delay(value)
        except ValueError:
            pass
    if code == "RESOURCE_EXHAUSTED":
        return Answer(Outcome.RETRY if delay is not None else Outcome.TOO_LARGE, code, message, delay)
    return Answer(Outcome.RETRY if code in _GRPC_RETRYABLE else Outcome.REJECTED, code, message, delay)


def grpc_credentials(settings: TransportSettings) -> "grpc.ChannelCredentials | None":
    """TLS credentials of a gRPC channel, read from their files now (as
    root, before the privilege drop); None for a plain-text channel."""
    import grpc

    if settings.protocol != "grpc" or settings.insecure:
        return None
    return grpc.ssl_channel_credentials(root_certificates=_read(settings.ca), private_key=_read(settings.client_key),
                                        certificate_chain=_read(settings.client_cert))


class GrpcTransport:
    """OTLP/gRPC: the Export method of the signal's service called with the
    request as bytes (no generated stubs, no message objects)."""

    def __init__(self, settings: TransportSettings) -> None:
        import grpc

        self.settings = settings
        self.target = settings.target
        self._credentials = grpc_credentials(settings)
        self._rpc_error = grpc.RpcError
        self._channel: grpc.Channel | None = None
        self._export: Callable[..., bytes] | None = None

    def start(self) -> None:
        import grpc

        options = [("grpc.primary_user_agent", f"otel-exec/{__version__}")]
        compression = grpc.Compression.Gzip if self.settings.compression == "gzip" else grpc.Compression.NoCompression
        if self._credentials is None:
            self._channel = grpc.insecure_channel(self.target, options, compression)
        else:
            self._channel = grpc.secure_channel(self.target, self._credentials, options, compression)
        self._export = self._channel.unary_unary(_GRPC_METHODS[self.settings.signal])

    def send(self, payload: bytes) -> Answer:
        assert self._export is not None, "start() first"
        try:
            response = self._export(payload, timeout=self.settings.timeout_s, metadata=self.settings.headers)
        except self._rpc_error as e:
            answer = _grpc_failure(e)
            if answer.reason == "UNAVAILABLE":
                # A new channel connects at once: the old one would wait out
                # gRPC's own reconnect backoff (up to 2 minutes).
                self.shutdown()
                self.start()
            return answer
        return _sent(response)

    def shutdown(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def otlp_http_session() -> "requests.Session":
    """A requests session in which its own CA file (session.verify, from
    OTEL_EXPORTER_OTLP_*CERTIFICATE) wins: requests otherwise lets
    REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's verify, so the
    OTLP CA would be silently ignored wherever either is set."""
    import requests

    class Session(requests.Session):
        def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[no-untyped-def]
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if verify is None and self.verify is not True:
                settings["verify"] = self.verify
            return settings

    return Session()


_HTTP_RETRYABLE = frozenset({429, 502, 503, 504})
_MESSAGE_MAX = 300  # of a collector's error text, in the log


def retry_after_s(value: str | None) -> float | None:
    """Retry-After: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def _http_message(body: bytes, content_type: str) -> str:
    """The collector's message: a google.rpc.Status for protobuf answers, as the
    OTLP spec asks, else the text."""
    if "protobuf" in content_type:
        try:
            return _status_details(body)[0]
        except ValueError:
            pass
    return body[:_MESSAGE_MAX].decode("utf-8", "replace").strip()


class HttpTransport:
    """OTLP/HTTP with binary protobuf, through requests."""

    def __init__(self, settings: TransportSettings) -> None:
        import requests

        self.settings = settings
        self.target = settings.target
        self._no_answer = requests.RequestException
        self._session: requests.Session | None = None

    def start(self) -> None:
        session = otlp_http_session()
        session.verify = self.settings.ca or True
        if self.settings.client_cert:
            session.cert = (self.settings.client_cert, self.settings.client_key)  # type: ignore[assignment]
        session.headers.update({"Content-Type": "application/x-protobuf", "User-Agent": f"otel-exec/{__version__}",
                                **dict(self.settings.headers)})
        if self.settings.compression == "gzip":
            session.headers["Content-Encoding"] = "gzip"
        self._session = session

    def send(self, payload: bytes) -> Answer:
        assert self._session is not None, "start() first"
        # Level 6: most of level 9's ratio on exec records at a fraction of its CPU.
        body = gzip.compress(payload, 6) if self.settings.compression == "gzip" else payload
        try:
            r = self._session.post(self.target, data=body, timeout=self.settings.timeout_s)
        except self._no_answer as e:  # no answer: connection, TLS, timeout
            return Answer(Outcome.RETRY, type(e).__name__, str(e))
        if 200 <= r.status_code < 300:
            # Only a protobuf answer is an ExportServiceResponse (a proxy's
            # JSON or HTML could decode as one by chance).
            return _sent(r.content) if "protobuf" in r.headers.get("Content-Type", "protobuf") else Answer(Outcome.SENT)
        reason = f"HTTP {r.status_code}"
        message = _http_message(r.content, r.headers.get("Content-Type", ""))
        if r.status_code in _HTTP_RETRYABLE:
            return Answer(Outcome.RETRY, reason, message, retry_after_s(r.headers.get("Retry-After")))
        return Answer(Outcome.TOO_LARGE if r.status_code == 413 else Outcome.REJECTED, reason, message)

    def shutdown(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


@dataclass(frozen=True)
class TransportSettings:
    """Where and how one signal is sent, from the flags and the standard
    OTEL_EXPORTER_OTLP_[LOGS_|TRACES_]* variables, checked at start."""

    signal: str
    protocol: str
    target: str  # gRPC: host:port; HTTP: the URL requests go to
    insecure: bool  # gRPC: a plain-text channel
    headers: tuple[tuple[str, str], ...]
    timeout_s: float
    compression: str  # "gzip" or "none"
    ca: str | None
    client_cert: str | None
    client_key: str | None


def _env(signal: str, name: str) -> tuple[str, str] | None:
    """(variable, value) of OTEL_EXPORTER_OTLP_<SIGNAL>_<name>, else of
    OTEL_EXPORTER_OTLP_<name>; None when neither is set."""
    for var in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        if os.environ.get(var):
            return var, os.environ[var]
    return None


_METADATA_KEY = re.compile(r"[0-9a-z_.-]+")


def parse_headers(raw: str) -> dict[str, str]:
    """OTEL_EXPORTER_OTLP_*HEADERS: comma-separated key=value pairs, each
    URL-decoded (as the SDK reads them); keys lower-cased."""
    headers = {}
    for pair in raw.split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            headers[urllib.parse.unquote(key).strip().lower()] = urllib.parse.unquote(value).strip()
    return headers


def check_header(key: str, value: str, source: str) -> None:
    """gRPC metadata rules (the stricter of the two protocols): lower-case
    ASCII keys of [0-9a-z_.-], not reserved (grpc-*), printable ASCII values."""
    if not _METADATA_KEY.fullmatch(key) or key.startswith("grpc-") or key.endswith("-bin"):
        raise UsageError(f"{source}: header name {key!r} is not allowed (lower-case letters, digits, '-', '_', "
                         "'.'; not grpc-*, not *-bin: binary metadata)")
    if not all(" " <= c <= "~" for c in value):
        raise UsageError(f"{source}: the value of header {key!r} has a character that is not printable ASCII")


def _check_url(url: str, source: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number in range
    except ValueError:
        raise UsageError(f"{source}: {url!r} has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{source}: {url!r} is not an http:// or https:// URL with a host")
    return parts


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def _check_tls_files(ca: tuple[str, str] | None, cert: tuple[str, str] | None,
                     key: tuple[str, str] | None) -> None:
    """Read and parse the CA, client certificate and key now (as root, before
    the privilege drop): a typo fails the start, not every export."""
    if (cert is None) != (key is None):
        have, missing = ("CLIENT_CERTIFICATE", "CLIENT_KEY") if cert else ("CLIENT_KEY", "CLIENT_CERTIFICATE")
        raise UsageError(f"OTEL_EXPORTER_OTLP_*{have} is set without OTEL_EXPORTER_OTLP_*{missing}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for var, path in filter(None, (ca, cert, key)):
        try:
            _read(path)
        except OSError as e:
            raise UsageError(f"{var}={path}: {e.strerror}") from None
    try:
        if ca:
            ctx.load_verify_locations(cafile=ca[1])
    except ssl.SSLError as e:
        raise UsageError(f"{ca[0]}={ca[1]}: not a PEM certificate ({e.reason or e})") from None
    try:
        if cert and key:
            ctx.load_cert_chain(cert[1], key[1])
    except ssl.SSLError as e:
        raise UsageError(f"{cert[0]}={cert[1]} with {key[0]}={key[1]}: not a matching PEM certificate and key "
                         f"({e.reason or e})") from None


def _grpc_target(signal: str, opts: OtlpOptions) -> tuple[str, bool]:
    """(host:port, TLS or not): the scheme decides, as in the SDK: https is
    TLS whatever *_INSECURE says, http plain text unless *_INSECURE=false;
    without a scheme, TLS unless *_INSECURE=true."""
    found = ("--endpoint", opts.endpoint) if opts.endpoint else _env(signal, "ENDPOINT")
    source, endpoint = found or ("the default endpoint", "http://localhost:4317")
    insecure = _env(signal, "INSECURE")
    if "://" in endpoint:
        parts = _check_url(endpoint, source)
        return parts.netloc, parts.scheme == "https" or (insecure is not None and insecure[1].lower() != "true")
    if not re.fullmatch(r"[^\s/]+:\d+", endpoint):
        raise UsageError(f"{source}: {endpoint!r} is neither a URL nor host:port")
    return endpoint, insecure is None or insecure[1].lower() != "true"


def _http_target(signal: str, opts: OtlpOptions) -> tuple[str, bool]:
    """(URL, TLS or not): a per-signal endpoint is used as it is; the generic
    one and --endpoint get /v1/<signal>."""
    if opts.endpoint:
        source, url = "--endpoint", f"{opts.endpoint.rstrip('/')}/v1/{signal}"
    elif found := _env(signal, "ENDPOINT"):
        source, url = found
        if source == "OTEL_EXPORTER_OTLP_ENDPOINT":
            url = f"{url.rstrip('/')}/v1/{signal}"
    else:
        source, url = "the default endpoint", f"http://localhost:4318/v1/{signal}"
    return url, _check_url(url, source).scheme == "https"


def transport_settings(signal: str, opts: OtlpOptions) -> TransportSettings:
    protocol = protocol_for(signal, opts)
    target, tls = (_grpc_target if protocol == "grpc" else _http_target)(signal, opts)
    env_headers = _env(signal, "HEADERS")
    headers = parse_headers(env_headers[1]) if env_headers else {}
    headers.update(opts.headers)  # --header wins, key by key
    for key, value in headers.items():
        check_header(key, value, "--header" if key in opts.headers or not env_headers else env_headers[0])
    timeout_s = 10.0
    if found := _env(signal, "TIMEOUT"):
        try:
            timeout_s = float(found[1])
        except ValueError:
            timeout_s = 0.0
        if not 0 < timeout_s < float("inf"):
            raise UsageError(f"{found[0]}={found[1]!r} is not a positive number of seconds")
    compression = "none"
    if found := _env(signal, "COMPRESSION"):
        compression = found[1].strip().lower()
        if compression not in ("gzip", "none"):
            raise UsageError(f"{found[0]}={found[1]!r}: use gzip or none")
    ca, cert, key = (_env(signal, name) if tls else None for name in ("CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"))
    _check_tls_files(ca, cert, key)
    return TransportSettings(signal, protocol, target, not tls, tuple(headers.items()), timeout_s, compression,
                             ca and ca[1], cert and cert[1], key and key[1])


def protocol_for(signal: str, opts: OtlpOptions) -> str:
    proto = (opts.protocol or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
             or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
    if proto not in PROTOCOLS:
        raise UsageError(f"OTLP protocol {proto!r} is not supported; use one of {', '.join(PROTOCOLS)}")
    return proto


def make_transport(signal: str, opts: OtlpOptions) -> Transport:
    """Checks the configuration and reads the credentials; connects at start()."""
    settings = transport_settings(signal, opts)
    return GrpcTransport(settings) if settings.protocol == "grpc" else HttpTransport(settings)


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
    full, records are dropped and counted; a batch that fails retryably is
    held by the exporter and tried again."""

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
        """The request holds the records (and the exporter holds the request
        while it is retried)."""
        batch.records = []

    def done(self, batch: Batch) -> None:
        """Taken records are gone from memory already."""

    def pending(self) -> int:
        return len(self._q)

    def stats(self) -> dict[str, int]:
        return {"queue_overflow": self.overflow, "unsent": len(self._q)}


class SpoolQueue:
    """Records written to the on-disk spool (otel_exec.export.spool) at the end of
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
_BACKOFF_FIRST_S = 1.0
_BACKOFF_MAX_S = 30.0
# A server's Retry-After / RetryInfo is followed up to this long: a broken
# or hostile value must not park export for a day.
_SERVER_DELAY_MAX_S = 300.0


def request_records(request: bytes) -> list[bytes]:
    """The records of a request export_request() built, framed again as
    mapping frames them (field 2 of the scope block): to split it."""
    for number, _, resource_block in w.fields(request):
        if number == 1:
            for inner, _, scope_block in w.fields(resource_block):  # type: ignore[arg-type]
                if inner == 2:
                    return [w.len_field(2, rec) for n, _, rec in w.fields(scope_block)  # type: ignore[arg-type]
                            if n == 2]  # type: ignore[arg-type]
    return []


@dataclass
class _Held:
    """A batch's request kept for another try (memory queue: nowhere else
    holds its records)."""

    request: bytes
    count: int
    batch: Batch


class BatchExporter:
    """One signal's records and the thread that sends them in batches.

    The thread starts at start(), not before (the agent drops privileges in
    between). Every step of its loop runs inside one error handler: an
    unexpected exception is logged with its traceback, counted
    (export_errors) and the loop goes on; if the thread dies anyway,
    check() (the reader loop calls it every poll) starts a new one
    (export_thread_restarts)."""

    def __init__(self, signal: str, transport: Transport, resource: bytes, settings: BatchSettings,
                 queue: RecordQueue) -> None:
        self.signal = signal
        self.transport = transport
        self.resource = resource
        self.settings = settings
        self.queue = queue
        self.exported = 0
        self.failed = 0  # memory queue: retryable batches still failing at stop
        self.rejected = 0  # refused by the collector for good (whole batches, or partial success)
        self.retries = 0  # retryable failures (each is tried again later)
        self.errors = 0  # unexpected exceptions in the export loop
        self.thread_restarts = 0
        self.latency_ms = 0  # of the last request the collector answered
        # The queue's own method: one call per record on the reader's hot path.
        self.add: Callable[[bytes], None] = queue.add
        self._added = 0
        self._wake = threading.Event()
        self._stopping = False
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._held: _Held | None = None
        self._attempt = 0  # retryable failures in a row
        self._retry_at = 0.0  # monotonic: no request before this
        self._failing = ""  # the retryable reason last logged, until a success
        self._logged: set[str] = set()  # reasons of rejections already logged

    def start(self) -> None:
        self.transport.start()
        self._spawn()

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"otlp-{self.signal}", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """From the reader loop: a dead export thread is replaced at once."""
        thread = self._thread
        if thread is not None and not self._stopping and not thread.is_alive():
            self.thread_restarts += 1
            log.error("OTLP %s export thread died (its traceback is above); starting a new one", self.signal)
            self._spawn()

    def flush(self) -> None:
        """End of a drain: make the records durable, wake the sender once a
        full batch waits."""
        self._added += self.queue.flush()
        if self._added >= self.settings.max_export_batch_size:
            self._added = 0
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            if self._retry_at:
                left = self._retry_at - time.monotonic()
                if left > 0:  # a backoff: only a stop cuts it short, not a full batch
                    self._wake.wait(left)
                    self._wake.clear()
                    continue
            else:
                self._wake.wait(self.settings.schedule_delay_s)
                self._wake.clear()
                if self._stopping:
                    break
            self._step()
        while time.monotonic() < self._deadline and self._step() and self.queue.pending():
            pass
        if self._held is not None:  # memory queue: nowhere to keep it
            self.failed += self._held.count
            self._held = None

    def _step(self) -> bool:
        """Send what is pending; True when all of it was."""
        try:
            if self._send_pending():
                self._retry_at = 0.0
                return True
            return False
        except Exception:
            self.errors += 1
            log.exception("OTLP %s export: unexpected error; export goes on after a backoff", self.signal)
            self._back_off(None)
            return False

    def _send_pending(self) -> bool:
        """Send until nothing is pending; False when a send is to be tried
        again later (the queue, or _held, keeps the batch)."""
        while time.monotonic() < self._deadline:
            held = self._held
            if held is None:
                batch = self.queue.take(self.settings.max_export_batch_size, MAX_REQUEST_BYTES)
                if batch is None:
                    return True
                if not batch.records:
                    self.queue.done(batch)
                    continue
                # Held from here: an exception while sending does not lose it.
                held = self._held = _Held(export_request(self.resource, batch.records), len(batch.records), batch)
                # The request holds the records now: the queue lets go of
                # its copies, so that at a storm's peak a batch is in memory
                # once (plus the transport's copy), not twice.
                self.queue.release(batch)
            if not self._deliver(held.request, held.count):
                if self.queue.retries:  # the spool reads the batch back from its files next time
                    self._held = None
                return False
            self._held = None
            self.queue.done(held.batch)
        return False

    def _deliver(self, request: bytes, count: int) -> bool:
        """Send one request; True when it is settled (accepted, or dropped
        and counted), False when it is to be tried again."""
        started = time.monotonic()
        answer = self.transport.send(request)
        if answer.outcome is not Outcome.RETRY:
            self.latency_ms = int((time.monotonic() - started) * 1000)
        if answer.outcome is Outcome.SENT:
            rejected = min(answer.rejected, count)
            self.exported += count - rejected
            self.rejected += rejected
            if answer.reason:
                self._log_once(answer, f"partial success: {rejected} of {count} records rejected")
            if self._failing:
                log.warning("OTLP %s export to %s works again", self.signal, self.transport.target)
            self._failing, self._attempt, self._retry_at = "", 0, 0.0
            return True
        if answer.outcome is Outcome.TOO_LARGE and count > 1:
            records = request_records(request)
            half = len(records) // 2
            # A retryable failure of a half retries the whole batch: the
            # other half may be sent twice (delivery is at least once).
            return all(self._deliver(export_request(self.resource, part), len(part))
                       for part in (records[:half], records[half:]))
        if answer.outcome is not Outcome.RETRY:
            self.rejected += count
            self._log_once(answer, f"{count} records dropped (the collector will not take them: not retried)")
            return True
        self.retries += 1
        self._back_off(answer.retry_after_s)
        if answer.reason != self._failing:
            self._failing = answer.reason
            log.warning("Failed to export %s to %s: %s%s; retrying in %.1f s (logged again only if the cause "
                        "changes)", self.signal, self.transport.target, answer.reason,
                        f": {answer.message[:_MESSAGE_MAX]}" if answer.message else "",
                        self._retry_at - time.monotonic())
        return False

    def _back_off(self, server_delay_s: float | None) -> None:
        """Exponential, with jitter so that agents restarted together do not
        retry together; a server's delay is followed (bounded)."""
        if server_delay_s is not None:
            delay = min(server_delay_s, _SERVER_DELAY_MAX_S)
        else:
            delay = min(_BACKOFF_FIRST_S * 2 ** self._attempt, _BACKOFF_MAX_S) * random.uniform(0.8, 1.2)
        self._attempt = min(self._attempt + 1, 16)
        self._retry_at = time.monotonic() + delay

    def _log_once(self, answer: Answer, what: str) -> None:
        if answer.reason not in self._logged:
            self._logged.add(answer.reason)
            log.error("Failed to export %s to %s: %s%s; %s (logged once per cause; counted in %s_rejected)",
                      self.signal, self.transport.target, answer.reason,
                      f": {answer.message[:_MESSAGE_MAX]}" if answer.message else "", what, self.signal)

    def begin_shutdown(self, timeout_s: float) -> None:
        """Send what is pending within timeout_s, then stop; what a spool
        still holds is sent after the next start. join() waits."""
        self.queue.flush()
        self._deadline = time.monotonic() + timeout_s
        self._stopping = True
        self._retry_at = 0.0
        self._wake.set()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(max(0.0, self._deadline - time.monotonic()) + 1)
        self.transport.shutdown()

    def stats(self) -> dict[str, int]:
        return {f"{self.signal}_{k}": v for k, v in
                {"exported": self.exported, "failed": self.failed, "rejected": self.rejected,
                 "export_retries": self.retries, "export_errors": self.errors,
                 "export_thread_restarts": self.thread_restarts, "export_latency_ms": self.latency_ms,
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

        # A signal turned off (OTEL_<SIGNAL>_EXPORTER=none) has no exporter
        # and costs no encoding.
        self.logs = exporter("logs", "OTEL_BLRP", 1000) if "logs" in opts.signals else None
        self.spans = exporter("traces", "OTEL_BSP", 5000) if "traces" in opts.signals else None
        self.exporters = [b for b in (self.logs, self.spans) if b is not None]

    def start(self) -> None:
        """Connect and start the export threads: after the privilege drop
        (the constructor, run before it, only reads and checks the
        configuration and the credential files)."""
        for b in self.exporters:
            b.start()

    def seed(self, infos: list[ProcessInfo]) -> None:
        """Processes already running get a span, and a log record each: they
        may have started while no agent watched."""
        now = time.time_ns()
        for info in infos:
            if info.seeded_from_proc:
                attrs = encode.Attrs.of(encode.seeded_attributes(info))
                if self.logs is not None:
                    self.logs.add(encode.observed_record(info, attrs, now))
                if info.owns_span:
                    info.span_attrs = (attrs.span,)
        gap = self.spool.gap() if self.spool else None
        if gap is not None and self.logs is not None:
            self.logs.add(encode.gap_record(gap.start_ns, gap.end_ns, gap.seconds, gap.clock_step_s))
        self.flush()

    def on_exec(self, ev: ExecEvent, info: ProcessInfo, previous: ProcessInfo | None) -> None:
        enc = encode.exec_attributes(ev, self.span_env)
        if self.logs is not None:
            self.logs.add(encode.log_record(ev, enc, info, time.time_ns()))
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
        if self.spans is not None:
            self.spans.add(encode.span(info, end_ns, reason, incomplete))
        info.owns_span = False
        info.span_attrs = ()

    def flush(self) -> None:
        """The end of a drain of the ring buffer: everything read so far is
        handed over (written to the spool)."""
        for b in self.exporters:
            b.flush()
        if self.spool:
            self.spool.beat()
        for b in self.exporters:
            b.check()

    def close(self, still_open: list[ProcessInfo], timeout_s: float) -> None:
        now = time.time_ns()
        for info in still_open:
            if info.owns_span:
                self._end(info, now, "agent_stopped", incomplete=True)
        self.flush()
        # Both signals flush at once, within the one grace period.
        for b in self.exporters:
            b.begin_shutdown(timeout_s)
        for b in self.exporters:
            b.join()
        if self.spool:
            self.spool.close()

    def stats(self) -> dict[str, int]:
        stats = {k: v for b in self.exporters for k, v in b.stats().items()}
        return {**stats, **(self.spool.stats() if self.spool else {})}
