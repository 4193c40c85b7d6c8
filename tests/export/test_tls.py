"""OTLP over TLS with a custom CA and client certificates (mTLS), plus a
bearer-token header: the agent, run for real, against a TLS receiver on
loopback with a CA made at test time.

Why the receiver here is not rotel
----------------------------------
rotel 0.0.1a15 (tests/helpers/collector.py; the newest rotel on PyPI) cannot take
part: its OTLP receivers are plain-text gRPC and HTTP only. Every TLS option
of ``rotel-agent start`` (``--otlp-exporter-tls-cert-file`` etc.) belongs to
its OTLP *exporter*, the client side towards another collector; there is no
option for a server certificate, a key or a client CA on the receivers, and
none to require or expose request headers (its Python processors see the
decoded payload only). test_rotel_receivers_have_no_tls checks exactly that,
so that a rotel upgrade that brings receiver TLS is noticed and these tests
can move onto the real collector. Putting a TLS-terminating proxy in front of
rotel would only test the proxy.

So the agent exports to :class:`TlsReceiver`: the gRPC library's own server
(grpcio; TLS by gRPC core, client certificates required and verified against
the test CA) and CPython's http.server behind ``ssl`` (OpenSSL,
``CERT_REQUIRED``), both serving the OTLP Export methods / paths and decoding
each request with the opentelemetry-proto messages. It requires
``authorization: Bearer t0k3n`` (gRPC: UNAUTHENTICATED, HTTP: 401 otherwise)
and records, per request, the client certificate's CN and the header it got.
What this proves is the agent's side: the TLS handshake with a CA from
OTEL_EXPORTER_OTLP_CERTIFICATE, the client certificate from
OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE / _CLIENT_KEY, the ``--header`` value on
the wire, for both exporters (logs and traces) and both protocols; and that
each way of getting it wrong fails loudly (the SDK's export error on stderr)
without stopping the agent, which still exits 0 on SIGTERM.

Certificates: an EC P-256 CA, a server certificate for IP:127.0.0.1 and
DNS:localhost, a client certificate, and a second ("rogue") CA with a client
certificate of the same CN; made with the ``cryptography`` package when it is
installed, else with the ``openssl`` command (test_pki_makes_working_mtls_certificates
checks every backend available with an in-process handshake).
"""
from __future__ import annotations

import os
import re
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from testkit.rotel import rotel_binary
from tests.helpers.agent_run import AgentRun, kernel_available, marked, marked_env, new_mark

from tests.helpers.tls import (CLIENT_CN, EXPORT_FAILED, LOOPBACK, PROTOCOLS, TOKEN, TRUE, Pki, TlsReceiver,
                                attributes_of, pki_backends, tls_env)


# requests takes these over the CA file the OTLP/HTTP exporter is given
# (test_http_otlp_certificate_wins_over_requests_ca_bundle): kept out of the
# agent's environment but in that test.
def start_agent(tmp_path: Path, receiver: TlsReceiver, protocol: str, env: dict[str, str],
                token: str = TOKEN) -> AgentRun:
    reason = kernel_available()
    if reason:
        pytest.skip(reason)
    return AgentRun(tmp_path, "--exporter", "otlp,console", "--endpoint", receiver.endpoint(protocol),
                    "--protocol", protocol, "--header", f"authorization={token}", env=env)


def wait_for_text(path: Path, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text(errors="replace")
        if text in content or time.monotonic() > deadline:
            return content
        time.sleep(0.05)


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.needs_rotel
def test_rotel_receivers_have_no_tls() -> None:
    """Why TlsReceiver and not rotel (see the module docstring). If this
    fails, rotel's receivers gained TLS options: run these tests against it."""
    try:
        binary = rotel_binary()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = subprocess.run([str(binary), "start", "--help"], capture_output=True, text=True, timeout=30,
                         env={"PATH": os.environ.get("PATH", ""), "NO_COLOR": "1"})
    assert out.returncode == 0, out.stderr
    options = set(re.findall(r"^\s+(--[a-z0-9-]+)", out.stdout, re.MULTILINE))
    assert {"--otlp-grpc-endpoint", "--otlp-http-endpoint", "--otlp-exporter-tls-cert-file",
            "--otlp-exporter-tls-ca-file"} <= options, sorted(options)
    receiver_side = sorted(o for o in options
                           if re.search(r"tls|cert|key-file|client-ca|auth|header", o)
                           and not o.startswith(("--otlp-exporter-", "--datadog-exporter-",
                                                 "--clickhouse-exporter-", "--kafka-exporter-",
                                                 "--xray-exporter-")))
    assert receiver_side == [], f"rotel now has receiver-side TLS/auth options: {receiver_side}"


@pytest.mark.parametrize("backend", sorted(pki_backends()))
def test_pki_makes_working_mtls_certificates(backend: str, tmp_path: Path) -> None:
    """Each certificate backend: a client with ca.pem and the client pair
    completes a handshake with 127.0.0.1 and with localhost; the rogue client
    certificate is refused by the server."""
    pki = pki_backends()[backend](tmp_path)

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    server_ctx.load_verify_locations(pki.ca)
    server_ctx.verify_mode = ssl.CERT_REQUIRED

    def handshake(client_cert: Path, client_key: Path, host: str) -> tuple[str | None, str | None]:
        """(client error, server-seen client CN or server error)."""
        import socket

        client_ctx = ssl.create_default_context(cafile=str(pki.ca))
        client_ctx.load_cert_chain(client_cert, client_key)
        a, b = socket.socketpair()
        result: dict[str, str] = {}

        def serve() -> None:
            try:
                with server_ctx.wrap_socket(b, server_side=True) as s:
                    peer = s.getpeercert() or {}
                    result["cn"] = next(v for rdn in peer["subject"] for k, v in rdn if k == "commonName")
                    s.sendall(b"ok")
            except (ssl.SSLError, OSError) as e:
                result["server_error"] = repr(e)

        t = threading.Thread(target=serve)
        t.start()
        client_error = None
        try:
            with client_ctx.wrap_socket(a, server_hostname=host) as c:
                c.recv(2)  # TLS 1.3: a refused client certificate shows here
        except (ssl.SSLError, OSError) as e:
            client_error = repr(e)
        t.join(10)
        return client_error, result.get("cn") or result.get("server_error")

    for host in (LOOPBACK, "localhost"):
        assert handshake(pki.client_cert, pki.client_key, host) == (None, CLIENT_CN)
    _, server_side = handshake(pki.rogue_client_cert, pki.rogue_client_key, LOOPBACK)
    assert server_side and "CERTIFICATE_VERIFY_FAILED" in server_side


@pytest.mark.kernel
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mtls_and_bearer_token_deliver_logs_and_spans(protocol: str, pki: Pki, receiver: TlsReceiver,
                                                      tmp_path: Path) -> None:
    env = tls_env(pki, ca=pki.ca, client=(pki.client_cert, pki.client_key))
    metrics_before = len(receiver.deliveries_of("metrics"))
    agent = start_agent(tmp_path, receiver, protocol, env)
    try:
        mark = new_mark()
        subprocess.run([TRUE], env=marked_env(mark), check=True)
        ev = agent.one(marked(mark))
        logs = receiver.wait(lambda: receiver.logs_of(mark))
        assert logs, f"no log record arrived; agent stderr:\n{agent.err.read_text()[-3000:]}"
        [(delivery, record)] = logs
        assert (delivery.protocol, delivery.signal) == (protocol, "logs")
        assert delivery.client_cn == CLIENT_CN  # the client certificate was presented and verified
        assert delivery.authorization == TOKEN and delivery.accepted
        attrs = attributes_of(record.attributes)
        assert attrs["process.executable.path"] == ev["pathname"]
        assert attrs["process.pid"] == ev["host_pid"]
        # The traces exporter has the same TLS configuration: the exec's span
        # (ended by the exit of `true`) arrives the same way.
        spans = receiver.wait(lambda: receiver.spans_with_ids({record.span_id}))
        assert spans, f"no span arrived; agent stderr:\n{agent.err.read_text()[-3000:]}"
        for span_delivery, span in spans:
            assert (span_delivery.protocol, span_delivery.signal) == (protocol, "traces")
            assert span_delivery.client_cn == CLIENT_CN
            assert span_delivery.authorization == TOKEN and span_delivery.accepted
            assert span.trace_id == record.trace_id
    finally:
        rc, err = agent.stop()
    assert rc == 0, err
    assert EXPORT_FAILED not in err, err
    # The agent's own metrics (exported at the latest when it stops) take
    # the same TLS configuration and header.
    metrics = receiver.deliveries_of("metrics")[metrics_before:]
    assert metrics, "the agent's own metrics did not arrive"
    for d in metrics:
        assert (d.protocol, d.client_cn, d.authorization, d.accepted) == (protocol, CLIENT_CN, TOKEN, True)


# How each negative case differs from the working configuration above.
_BROKEN = {
    # The server's certificate is checked against the system's CAs only.
    "no_ca": dict(ca=None, client="client", token=TOKEN),
    # The server requires a client certificate.
    "no_client_cert": dict(ca="ca", client=None, token=TOKEN),
    # A client certificate the server's CA did not sign.
    "rogue_client_cert": dict(ca="ca", client="rogue_client", token=TOKEN),
    # TLS works; the receiver refuses the token.
    "wrong_token": dict(ca="ca", client="client", token="Bearer wrong"),
}


@pytest.mark.kernel
@pytest.mark.parametrize("case", sorted(_BROKEN))
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_broken_tls_or_token_fails_loudly_and_the_agent_keeps_running(
        protocol: str, case: str, pki: Pki, receiver: TlsReceiver, tmp_path: Path) -> None:
    broken = _BROKEN[case]
    client = None
    if broken["client"] is not None:
        client = (getattr(pki, f"{broken['client']}_cert"), getattr(pki, f"{broken['client']}_key"))
    env = tls_env(pki, ca=pki.ca if broken["ca"] else None, client=client)
    handshake_failures_before = len(receiver.http_handshake_failures)
    deliveries_before = len(receiver.deliveries)
    agent = start_agent(tmp_path, receiver, protocol, env, token=broken["token"])
    try:
        mark = new_mark()
        subprocess.run([TRUE], env=marked_env(mark), check=True)
        agent.one(marked(mark))  # the agent saw the exec ...
        err = wait_for_text(agent.err, EXPORT_FAILED)
        assert EXPORT_FAILED in err, f"no export failure reported; agent stderr:\n{err[-3000:]}"
        # ... and keeps running after the failed export: a second exec is seen too.
        later = new_mark()
        subprocess.run([TRUE], env=marked_env(later), check=True)
        agent.one(marked(later))
        assert agent.proc.poll() is None
    finally:
        rc, err = agent.stop()
    assert rc == 0, err
    assert EXPORT_FAILED in err
    assert "otel-exec: info: stopped" in err

    arrived = receiver.logs_of(mark)
    got = receiver.deliveries[deliveries_before:]
    if case == "wrong_token":
        # The header reached the receiver, which refused it: nothing was
        # accepted. (The marked record itself need not have been sent: the
        # spool retries its oldest batch first.)
        assert got, "no request with the wrong token reached the receiver"
        assert all(d.authorization == "Bearer wrong" and not d.accepted for d in got)
        assert all(d.client_cn == CLIENT_CN for d in got)  # TLS itself worked
        assert all(not d.accepted for d, _ in arrived)
    else:
        # Stopped by TLS: no request got through at all.
        assert got == [] and arrived == []
        if protocol == "http/protobuf":
            # The HTTPS side can see its failed handshakes: TLS is what stopped it.
            assert len(receiver.http_handshake_failures) > handshake_failures_before


@pytest.mark.kernel
def test_http_otlp_certificate_wins_over_requests_ca_bundle(pki: Pki, receiver: TlsReceiver,
                                                            tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_CERTIFICATE is the CA for OTLP/HTTP even where the
    environment names another bundle for requests, as Debian-based images
    and corporate setups often do (REQUESTS_CA_BUNDLE=the system bundle:
    our private CA is not in it). Here it names the rogue CA."""
    env = tls_env(pki, ca=pki.ca, client=(pki.client_cert, pki.client_key))
    env["REQUESTS_CA_BUNDLE"] = str(pki.rogue_ca)
    agent = start_agent(tmp_path, receiver, "http/protobuf", env)
    try:
        mark = new_mark()
        subprocess.run([TRUE], env=marked_env(mark), check=True)
        agent.one(marked(mark))
        # Until the record arrives or the export is reported failed.
        receiver.wait(lambda: receiver.logs_of(mark) or EXPORT_FAILED in agent.err.read_text())
        logs = receiver.logs_of(mark)
    finally:
        rc, err = agent.stop()
    assert rc == 0, err
    assert logs, f"no log record arrived; agent stderr:\n{err[-3000:]}"
    assert EXPORT_FAILED not in err, err
