"""OTLP transports and what each answer means.

Two small transports of our own, handed requests encode.export_request()
built: gRPC through our own HTTP/2 client, h2grpc.py (the OTLP service's
Export method, called with bytes) and HTTP through requests. Both take their configuration from the
standard OTEL_EXPORTER_OTLP_* variables as the OpenTelemetry SDK's
exporters do (TransportSettings, checked and with the credential files read
at start, as root). Each answer is classified as the OTLP specification
says (Outcome: retry with backoff, drop and count, split a request that is
too large, count a partial success); docs/operations.md says what each
counter means for an operator.
"""
from __future__ import annotations

import datetime
import enum
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Protocol

from otel_exec import __version__
from otel_exec.errors import UsageError
from otel_exec.export.otlp import protowire as w

if TYPE_CHECKING:
    import ssl

    import requests

PROTOCOLS = ("grpc", "http/protobuf")


@dataclass
class OtlpOptions:
    endpoint: str | None = None  # --endpoint: overrides OTEL_EXPORTER_OTLP_*ENDPOINT
    protocol: str | None = None  # --protocol: overrides OTEL_EXPORTER_OTLP_*PROTOCOL
    headers: dict[str, str] = field(default_factory=dict)  # --header: overrides *_HEADERS
    span_env: bool = False  # --span-env: environment attributes on spans too
    exit_records: bool = True  # --no-exit-records turns off the log record of each image's end
    signals: tuple[str, ...] = ("logs", "traces")  # those OTEL_<SIGNAL>_EXPORTER sends over OTLP
    span_attributes: str = "slim"  # --span-attributes: the exec's attributes on spans (encode.span_set)


def configured(opts: OtlpOptions) -> bool:
    """Whether the user pointed us at a collector at all."""
    return bool(opts.endpoint) or any(
        os.environ.get(k) for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


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
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}


def _grpc_failure(code: str, message: str, trailers: Iterable[tuple[str, bytes | str]]) -> Answer:
    """A failed call's answer from its status code's name, the server's
    message and its trailers (binary -bin values decoded)."""
    delay = None
    for key, value in trailers:
        try:
            if key == "grpc-status-details-bin" and isinstance(value, bytes):
                delay = _status_details(value)[1] if delay is None else delay
            elif key == "google.rpc.retryinfo-bin" and isinstance(value, bytes):
                # where the Python SDK's servers put it
                delay = _retry_delay(value)
        except ValueError:
            pass
    if code == "RESOURCE_EXHAUSTED":
        return Answer(Outcome.RETRY if delay is not None else Outcome.TOO_LARGE, code, message, delay)
    return Answer(Outcome.RETRY if code in _GRPC_RETRYABLE else Outcome.REJECTED, code, message, delay)


def tls_context(settings: TransportSettings) -> "ssl.SSLContext":
    """A gRPC connection's TLS: the CA (else the system's), the client
    certificate and key, read now (as root, before the privilege drop);
    ALPN h2, as gRPC asks."""
    import ssl

    context = ssl.create_default_context(cafile=settings.ca)
    if settings.client_cert and settings.client_key:
        context.load_cert_chain(settings.client_cert, settings.client_key)
    context.set_alpn_protocols(["h2"])
    return context


class GrpcTransport:
    """OTLP/gRPC: the Export method of the signal's service called with the
    request as bytes over otel-exec's own HTTP/2 client (h2grpc.Channel), in
    the exporter's thread; the connection is made at the first send and
    again after any failure."""

    def __init__(self, settings: TransportSettings) -> None:
        from otel_exec.export.otlp import h2grpc

        self.settings = settings
        self.target = settings.target
        self._path = _GRPC_METHODS[settings.signal]
        tls = None if settings.insecure else tls_context(settings)
        self._channel = h2grpc.Channel(h2grpc.endpoint(settings.target), tls, settings.headers,
                                       f"otel-exec/{__version__}", gzip=settings.compression == "gzip")

    def start(self) -> None:
        pass  # the first send connects, as a gRPC channel does

    def send(self, payload: bytes) -> Answer:
        status = self._channel.call(self._path, payload, self.settings.timeout_s)
        if status.code == "OK":
            return _sent(status.response)
        return _grpc_failure(status.code, status.message, status.trailers)

    def shutdown(self) -> None:
        self._channel.close()


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
MESSAGE_MAX = 300  # of a collector's error text, in the log


def retry_after_s(value: str | None) -> float | None:
    """Retry-After: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    # Only an HTTP collector's refusal brings a date: not imported at module
    # level, so that a gRPC agent never loads the email package. requests
    # (HttpTransport, imported as root) has loaded this module by then.
    import email.utils

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
    return body[:MESSAGE_MAX].decode("utf-8", "replace").strip()


class HttpTransport:
    """OTLP/HTTP with binary protobuf, through requests."""

    def __init__(self, settings: TransportSettings) -> None:
        import gzip

        import requests

        self._gzip = gzip.compress
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
        body = self._gzip(payload, 6) if self.settings.compression == "gzip" else payload
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
    if ca is None and cert is None:
        return
    # Imported only to parse TLS files (still as root): a plain-text
    # exporter starts without ssl's import.
    import ssl

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
    return transport_for(transport_settings(signal, opts))


def transport_for(settings: TransportSettings) -> Transport:
    """The transport of checked settings (credentials read now); connects at start()."""
    return GrpcTransport(settings) if settings.protocol == "grpc" else HttpTransport(settings)
