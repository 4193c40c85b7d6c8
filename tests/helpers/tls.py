"""TLS test kit: a throwaway PKI (mTLS certificates), an OTLP receiver over
TLS for gRPC and HTTP, and the agent environment that points at it."""
from __future__ import annotations

import dataclasses
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from testkit.environment import variable
from testkit.otlp_services import GRPC_SERVICES, REQUESTS, RESPONSES, OtlpHttpHandler
from testkit.poll import wait_until

TOKEN = "Bearer t0k3n"
CLIENT_CN = "otel-exec-test-client"
TRUE = shutil.which("true") or "/bin/true"
PROTOCOLS = ("grpc", "http/protobuf")
# The SDK exporters' deadline for one export, retries included: short, so
# that a failing export is reported within seconds (default 10 s).
EXPORT_TIMEOUT_S = "3"
# What the SDK's exporters log (logger.error) when an export fails, gRPC
# ("Failed to export logs to 127.0.0.1:P, error code: ...") and HTTP
# ("Failed to export logs batch code: ...") alike.
EXPORT_FAILED = "Failed to export"
LOOPBACK = "127.0.0.1"


# --- certificates --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server and a client certificate it signed, and a
    rogue CA with a client certificate (same CN) that the server must refuse."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def _pki_cryptography(d: Path) -> Pki:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def write_key(path: Path, key: Any) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    def issue(cn: str, issuer: tuple[Any, Any] | None, kind: str) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        issuer_cert, issuer_key = issuer if issuer else (None, key)
        b = (x509.CertificateBuilder()
             .subject_name(name)
             .issuer_name(issuer_cert.subject if issuer_cert else name)
             .public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=kind == "ca", path_length=None), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        if kind == "ca":
            b = b.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
        else:
            b = (b.add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False), critical=True)
                 .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                critical=False)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if kind == "server"
                                                       else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
            if kind == "server":
                b = b.add_extension(x509.SubjectAlternativeName([
                    x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]), critical=False)
        return b.sign(issuer_key, hashes.SHA256()), key

    def save(stem: str, pair: tuple[Any, Any]) -> tuple[Path, Path]:
        cert, key = pair
        cert_path, key_path = d / f"{stem}.pem", d / f"{stem}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key_path, key)
        return cert_path, key_path

    ca = issue("otel-exec test CA", None, "ca")
    rogue = issue("otel-exec rogue CA", None, "ca")
    ca_path, _ = save("ca", ca)
    rogue_path, _ = save("rogue-ca", rogue)
    server = save("server", issue("localhost", ca, "server"))
    client = save("client", issue(CLIENT_CN, ca, "client"))
    rogue_client = save("rogue-client", issue(CLIENT_CN, rogue, "client"))
    return Pki(ca_path, *server, *client, rogue_path, *rogue_client)


_OPENSSL_CNF = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _pki_openssl(d: Path) -> Pki:
    cnf = d / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    def key(stem: str) -> Path:
        path = d / f"{stem}-key.pem"
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
        return path

    def ca(stem: str, cn: str) -> tuple[Path, Path]:
        k, cert = key(stem), d / f"{stem}.pem"
        openssl("req", "-x509", "-new", "-key", str(k), "-subj", f"/CN={cn}", "-days", "1", "-sha256",
                "-config", str(cnf), "-extensions", "ca", "-out", str(cert))
        return cert, k

    def leaf(stem: str, cn: str, kind: str, issuer: tuple[Path, Path]) -> tuple[Path, Path]:
        k, csr, cert = key(stem), d / f"{stem}.csr", d / f"{stem}.pem"
        openssl("req", "-new", "-key", str(k), "-subj", f"/CN={cn}", "-config", str(cnf), "-out", str(csr))
        openssl("x509", "-req", "-in", str(csr), "-CA", str(issuer[0]), "-CAkey", str(issuer[1]),
                "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "1", "-sha256",
                "-extfile", str(cnf), "-extensions", kind, "-out", str(cert))
        return cert, k

    the_ca, rogue = ca("ca", "otel-exec test CA"), ca("rogue-ca", "otel-exec rogue CA")
    server = leaf("server", "localhost", "server", the_ca)
    client = leaf("client", CLIENT_CN, "client", the_ca)
    rogue_client = leaf("rogue-client", CLIENT_CN, "client", rogue)
    return Pki(the_ca[0], *server, *client, rogue[0], *rogue_client)


def pki_backends() -> dict[str, Callable[[Path], Pki]]:
    backends: dict[str, Callable[[Path], Pki]] = {}
    try:
        import cryptography.x509  # noqa: F401
    except ImportError:
        pass
    else:
        backends["cryptography"] = _pki_cryptography
    if shutil.which("openssl"):
        backends["openssl"] = _pki_openssl
    return backends


def make_pki(d: Path) -> Pki:
    """Certificates in d, by the first backend available (cryptography, else openssl)."""
    backends = pki_backends()
    if not backends:
        pytest.fail("neither the cryptography package nor the openssl command is available")
    return next(iter(backends.values()))(d)


# --- the TLS receiver ---------------------------------------------------------------------------


def attributes_of(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One export request as the receiver got it."""

    protocol: str  # "grpc" or "http/protobuf"
    signal: str  # "logs", "traces" or "metrics" (the agent's own)
    client_cn: str  # CN of the verified client certificate
    authorization: str | None
    accepted: bool  # False: refused for its authorization header
    request: Any  # ExportLogsServiceRequest, ExportTraceServiceRequest or ExportMetricsServiceRequest

    def log_records(self) -> list[Any]:
        if self.signal != "logs":
            return []
        return [r for rl in self.request.resource_logs for sl in rl.scope_logs for r in sl.log_records]

    def spans(self) -> list[Any]:
        if self.signal != "traces":
            return []
        return [s for rs in self.request.resource_spans for ss in rs.scope_spans for s in ss.spans]




class TlsReceiver:
    """OTLP/gRPC and OTLP/HTTP over TLS on loopback, client certificates
    required and verified against pki.ca, requests refused unless their
    authorization header is `token`."""

    def __init__(self, pki: Pki, token: str) -> None:
        self.pki = pki
        self.token = token
        self.deliveries: list[Delivery] = []
        self.http_handshake_failures: list[str] = []
        self._lock = threading.Lock()
        self._grpc: grpc.Server | None = None
        self._http: _HttpsServer | None = None
        self._http_thread: threading.Thread | None = None
        self.grpc_port = 0
        self.http_port = 0

    def endpoint(self, protocol: str) -> str:
        port = self.grpc_port if protocol == "grpc" else self.http_port
        return f"https://{LOOPBACK}:{port}"

    def start(self) -> None:
        server_key, server_cert, ca = (p.read_bytes() for p in
                                       (self.pki.server_key, self.pki.server_cert, self.pki.ca))
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._grpc.add_generic_rpc_handlers(tuple(
            grpc.method_handlers_generic_handler(service, {"Export": grpc.unary_unary_rpc_method_handler(
                self._grpc_export(signal), response_serializer=lambda r: r.SerializeToString())})
            for signal, service in GRPC_SERVICES.items()))
        creds = grpc.ssl_server_credentials([(server_key, server_cert)], root_certificates=ca,
                                            require_client_auth=True)
        self.grpc_port = self._grpc.add_secure_port(f"{LOOPBACK}:0", creds)
        self._grpc.start()

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        ctx.load_verify_locations(self.pki.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        self._http = _HttpsServer((LOOPBACK, 0), _OtlpHttpHandler, ctx, self)
        self.http_port = self._http.server_address[1]
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="tls-receiver-http",
                                             daemon=True)
        self._http_thread.start()

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(5)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def _grpc_export(self, signal: str) -> Callable[[bytes, grpc.ServicerContext], Any]:
        def export(body: bytes, context: grpc.ServicerContext) -> Any:
            auth = context.auth_context()
            cn = b"".join(auth.get("x509_common_name", [])).decode()
            authorization = dict(context.invocation_metadata()).get("authorization")
            if not self._receive("grpc", signal, cn, authorization, body):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad or missing bearer token")
            return RESPONSES[signal]()
        return export

    def _receive(self, protocol: str, signal: str, client_cn: str, authorization: str | None,
                 body: bytes) -> bool:
        request = REQUESTS[signal].FromString(body)
        accepted = authorization == self.token
        with self._lock:
            self.deliveries.append(Delivery(protocol, signal, client_cn, authorization, accepted, request))
        return accepted

    def _handshake_failed(self, error: BaseException) -> None:
        with self._lock:
            self.http_handshake_failures.append(repr(error))

    # --- reading what arrived --------------------------------------------------------------

    def logs_of(self, mark: str) -> list[tuple[Delivery, Any]]:
        """(delivery, log record) for every record carrying mark, accepted or not."""
        with self._lock:
            deliveries = list(self.deliveries)
        return [(d, r) for d in deliveries for r in d.log_records()
                if variable(attributes_of(r.attributes), "OE_TEST_MARK") == mark]

    def deliveries_of(self, signal: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.signal == signal]

    def spans_with_ids(self, span_ids: set[bytes]) -> list[tuple[Delivery, Any]]:
        with self._lock:
            deliveries = list(self.deliveries)
        return [(d, s) for d in deliveries for s in d.spans() if s.span_id in span_ids]

    def wait(self, find: Callable[[], Any], timeout: float = 15) -> Any:
        """find()'s first true result, or its last one after timeout seconds."""
        return wait_until(find, timeout)


class _HttpsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, ctx: ssl.SSLContext,
                 receiver: TlsReceiver) -> None:
        super().__init__(address, handler)
        self.ctx = ctx
        self.receiver = receiver

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs here, in the connection's own thread, not in
        # accept() on the serving thread, which a stalled client would block.
        request.settimeout(10)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.receiver._handshake_failed(e)
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            self.shutdown_request(tls)


class _OtlpHttpHandler(OtlpHttpHandler):
    server: _HttpsServer

    def handle_export(self, signal: str, body: bytes, gzipped: bool) -> None:
        cert = self.connection.getpeercert() or {}  # type: ignore[attr-defined]
        cn = next((value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"), "")
        if self.server.receiver._receive("http/protobuf", signal, cn, self.headers.get("Authorization"), body):
            self.answer(200, RESPONSES[signal]().SerializeToString(), {"Content-Type": "application/x-protobuf"})
        else:
            self.answer(401, b"", {"Content-Type": "application/x-protobuf"})


# --- fixtures and helpers ------------------------------------------------------------------------


_CA_BUNDLE_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def tls_env(pki: Pki, *, ca: Path | None, client: tuple[Path, Path] | None) -> dict[str, str]:
    """The agent's environment: TLS only from the standard variables, and
    nothing OTLP-related (nor a requests CA bundle) inherited from the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k not in _CA_BUNDLE_VARS}
    env.update(OTEL_BLRP_SCHEDULE_DELAY="200", OTEL_BSP_SCHEDULE_DELAY="200",
               OTEL_EXPORTER_OTLP_TIMEOUT=EXPORT_TIMEOUT_S)
    if ca is not None:
        env["OTEL_EXPORTER_OTLP_CERTIFICATE"] = str(ca)
    if client is not None:
        env["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"] = str(client[0])
        env["OTEL_EXPORTER_OTLP_CLIENT_KEY"] = str(client[1])
    return env


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway PKI per test module (tests/conftest.py re-exports it)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def receiver(pki: Pki) -> Iterator[TlsReceiver]:
    """The TLS OTLP receiver, trusting `pki`, for one test module."""
    instance = TlsReceiver(pki, TOKEN)
    instance.start()
    yield instance
    instance.stop()
