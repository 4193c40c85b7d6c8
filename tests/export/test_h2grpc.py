"""otel-exec's own unary gRPC client (otel_exec/export/otlp/h2grpc.py)
against servers that misbehave as an attacker's or a broken collector
would (tests/helpers/h2_server.py), against grpcio's server (status details,
RetryInfo) and rotel, the real collector; through an HTTP CONNECT proxy.
The agent's end-to-end paths over the same client run in
tests/export/test_export_failures.py, test_tls.py and tests/e2e."""
from __future__ import annotations

import base64
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from concurrent import futures
from typing import Callable, Iterator

import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)

from otel_exec import __version__
from otel_exec.export.otlp import encode, h2grpc, transport
from otel_exec.export.otlp import protowire as w
from otel_exec.export.otlp.transport import Outcome, TransportSettings
from tests.helpers.collector import Collector
from tests.helpers.h2_server import (
    CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PING, RST_STREAM, SETTINGS, WINDOW_UPDATE, ACK,
    H2Conn, H2Server,
)

LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def settings(target: str, **kw: object) -> TransportSettings:
    values: dict[str, object] = dict(signal="logs", protocol="grpc", target=target, insecure=True, headers=(),
                                     timeout_s=10.0, compression="none", ca=None, client_cert=None, client_key=None)
    values.update(kw)
    return TransportSettings(**values)  # type: ignore[arg-type]


def channel(target: str, gzip_on: bool = False) -> h2grpc.Channel:
    return h2grpc.Channel(h2grpc.endpoint(target, {}), None, [("x-tenant", "t1")], "test/1", gzip=gzip_on)


def serve_ok(conn: H2Conn) -> None:
    conn.handshake()
    while True:
        request = conn.read_request()
        conn.answer(request.stream, request.message[:3])


# -- a well-behaved server: what is sent, flow control, PING ----------------

@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_request_headers_and_message_as_grpc_asks(compression: str) -> None:
    seen = []

    def play(conn: H2Conn) -> None:
        conn.handshake()
        request = conn.read_request()
        seen.append(request)
        response = ExportLogsServiceResponse(partial_success=ExportLogsPartialSuccess(
            rejected_log_records=2, error_message="two bad")).SerializeToString()
        conn.answer(request.stream, response)
        conn.read_until_closed()

    payload = b"\x0a\x03abc" * 5000
    with H2Server(play) as server:
        t = transport.transport_for(settings(server.target, headers=(("authorization", "Bearer x"),),
                                             timeout_s=2.5, compression=compression))
        t.start()
        answer = t.send(payload)
        t.shutdown()
    assert answer == transport.Answer(Outcome.SENT, "partial success", "two bad", rejected=2)
    [request] = seen
    h = request.headers
    assert (h[":method"], h[":scheme"], h[":path"], h[":authority"]) == ("POST", "http", LOGS, server.target)
    assert (h["content-type"], h["te"], h["user-agent"]) == ("application/grpc", "trailers", f"otel-exec/{__version__}")
    assert h["authorization"] == "Bearer x" and h["grpc-timeout"] == "2500m"
    assert request.message == payload
    assert request.compressed == (compression == "gzip")
    assert (h.get("grpc-encoding") == "gzip") == (compression == "gzip")


def test_small_windows_and_frames_are_respected_both_ways() -> None:
    """The server allows 1,000 bytes per stream at first and grants more as
    it reads; it answers with a message over the client's 1 MiB window,
    which the client's WINDOW_UPDATEs let through."""
    big_answer = bytes(range(256)) * 6000  # 1.5 MB
    frames = []

    def play(conn: H2Conn) -> None:
        conn.handshake({0x4: 1000})
        request = conn.read_request()
        frames.extend(request.frames)
        assert request.message == b"m" * 300_000
        conn.headers(request.stream, [(":status", "200"), ("content-type", "application/grpc")])
        body = struct.pack(">BI", 0, len(big_answer)) + big_answer
        # The client's connection-level grant came with its SETTINGS.
        granted = sum(struct.unpack(">I", f[3])[0] for f in request.frames if f[0] == WINDOW_UPDATE and f[2] == 0)
        window = {0: 65535 + granted, request.stream: conn.client_settings[0x4]}
        sent = 0
        while sent < len(body):
            if min(window.values()) <= 0:
                kind, _, sid, payload = conn.read_frame()
                if kind == WINDOW_UPDATE:
                    window[sid] = window.get(sid, 0) + struct.unpack(">I", payload)[0]
                continue
            size = min(16384, window[0], window[request.stream], len(body) - sent)
            conn.send_frame(DATA, 0, request.stream, body[sent:sent + size])
            sent += size
            window[0] -= size
            window[request.stream] -= size
        conn.headers(request.stream, [("grpc-status", "0")], end_stream=True)
        conn.read_until_closed()

    with H2Server(play) as server:
        status = channel(server.target).call(LOGS, b"m" * 300_000, 20)
    assert server.errors == []
    assert status.code == "OK" and status.response == big_answer
    data = [f for f in frames if f[0] == DATA]
    assert max(len(f[3]) for f in data) <= 16384 and data[-1][1] & END_STREAM
    assert sum(len(f[3]) for f in data) == 300_005


@pytest.mark.parametrize("server_settings, size, frames", [
    # The default frame size, windows larger than the message: full frames, then the rest.
    ({0x4: 1 << 20}, 300_000, [16384] * 18 + [300_005 - 18 * 16384]),
    # A larger SETTINGS_MAX_FRAME_SIZE is used; the last frame holds 5 bytes.
    ({0x4: 1 << 20, 0x5: 20_000}, 300_000, [20_000] * 15 + [5]),
    # A stream window of 3 bytes: the gRPC prefix is split across frames too.
    ({0x4: 3}, 100, [3] * 35),
])
def test_data_frames_are_as_large_as_the_window_and_the_frame_size_allow(
        server_settings: dict[int, int], size: int, frames: list[int]) -> None:
    """The request's DATA frames on the wire, sizes and bytes: each as large
    as the frame size and the flow-control windows allow, END_STREAM on the
    last only, their payloads the gRPC prefix and the message."""
    requests = []

    def play(conn: H2Conn) -> None:
        conn.handshake(server_settings)
        conn.send_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20))
        while True:
            request = conn.read_request()
            requests.append(request)
            conn.answer(request.stream, b"")

    message = bytes(range(256)) * (size // 256) + bytes(size % 256)
    with H2Server(play) as server:
        c = channel(server.target)
        # The first call reads the server's settings and window.
        assert c.call(LOGS, b"x", 10).code == "OK"
        assert c.call(LOGS, message, 10).code == "OK"
    assert server.errors == []
    data = [f for f in requests[1].frames if f[0] == DATA]
    assert [len(f[3]) for f in data] == frames
    assert [f[1] & END_STREAM for f in data] == [0] * (len(frames) - 1) + [END_STREAM]
    assert b"".join(f[3] for f in data) == struct.pack(">BI", 0, size) + message


def test_ping_and_settings_are_acknowledged() -> None:
    acks = []

    def play(conn: H2Conn) -> None:
        conn.handshake()
        request = conn.read_request()
        conn.send_frame(PING, 0, 0, b"12345678")
        conn.send_frame(SETTINGS, 0, 0, struct.pack(">HI", 0x5, 32768))
        while len(acks) < 2:
            kind, flags, _, payload = conn.read_frame()
            if kind in (PING, SETTINGS) and flags & ACK:
                acks.append((kind, payload))
        conn.answer(request.stream, b"")
        conn.read_until_closed()

    with H2Server(play) as server:
        status = channel(server.target).call(LOGS, b"x", 10)
    assert status.code == "OK"
    assert sorted(acks) == [(SETTINGS, b""), (PING, b"12345678")]


def test_the_connection_is_kept_across_calls() -> None:
    with H2Server(serve_ok) as server:
        c = channel(server.target)
        assert [c.call(LOGS, b"abcd", 10).response for _ in range(5)] == [b"abc"] * 5
    assert server.connections == 1


def test_header_blocks_decode_right_as_the_servers_table_changes() -> None:
    """A server's HPACK encoder sends a field as a literal the first time,
    then as an index; a new value shifts the indices, so the same bytes
    then mean other fields. Each answer must still read as it was sent."""
    def play(conn: H2Conn) -> None:
        conn.handshake()
        for i in range(8):
            request = conn.read_request()
            conn.answer(request.stream, request.message, status=0 if i % 3 else 14,
                        trailers=[("x-round", str(i // 2))])

    with H2Server(play) as server:
        c = channel(server.target)
        statuses = [c.call(LOGS, bytes([i]), 10) for i in range(8)]
    assert [s.code for s in statuses] == ["UNAVAILABLE" if i % 3 == 0 else "OK" for i in range(8)]
    assert [dict(s.trailers)["x-round"] for s in statuses] == [str(i // 2) for i in range(8)]
    assert [s.response for s in statuses if s.code == "OK"] == [bytes([i]) for i in range(8) if i % 3]
    assert server.connections == 1


# -- answers that are failures ----------------------------------------------

def _retry_status(seconds: int) -> bytes:
    detail = AnyMessage()
    detail.Pack(RetryInfo(retry_delay=Duration(seconds=seconds)))
    return RpcStatus(code=8, message="slow down", details=[detail]).SerializeToString()


@pytest.mark.parametrize("details,outcome,delay", [
    (True, Outcome.RETRY, 3.0),
    (False, Outcome.TOO_LARGE, None),
])
def test_a_trailers_only_refusal_is_classified(details: bool, outcome: Outcome, delay: float | None) -> None:
    """RESOURCE_EXHAUSTED in the only header block (Trailers-Only), its
    message percent-encoded, RetryInfo (when sent) in unpadded base64."""
    def play(conn: H2Conn) -> None:
        conn.handshake()
        request = conn.read_request()
        fields = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "8"),
                  ("grpc-message", urllib.parse.quote("trop plein, 100 %"))]
        if details:
            fields.append(("grpc-status-details-bin", base64.b64encode(_retry_status(3)).decode().rstrip("=")))
        conn.headers(request.stream, fields, end_stream=True)
        conn.read_until_closed()

    with H2Server(play) as server:
        answer = transport.transport_for(settings(server.target)).send(b"x")
    assert (answer.outcome, answer.reason, answer.message, answer.retry_after_s) == \
        (outcome, "RESOURCE_EXHAUSTED", "trop plein, 100 %", delay)


@pytest.mark.parametrize("error,code", [(0x7, "UNAVAILABLE"), (0x8, "CANCELLED"), (0x2, "INTERNAL")])
def test_rst_stream_ends_the_call(error: int, code: str) -> None:
    def play(conn: H2Conn) -> None:
        conn.handshake()
        request = conn.read_request()
        conn.send_frame(RST_STREAM, 0, request.stream, struct.pack(">I", error))
        serve_more(conn)

    with H2Server(play) as server:
        c = channel(server.target)
        assert c.call(LOGS, b"x", 10).code == code
        assert c.call(LOGS, b"abcd", 10).response == b"abc"  # the connection is still good
    assert server.connections == 1


def serve_more(conn: H2Conn) -> None:
    while True:
        request = conn.read_request()
        conn.answer(request.stream, request.message[:3])


@pytest.mark.parametrize("mid_answer", [False, True])
def test_goaway_before_the_answer_is_retryable_and_the_next_call_reconnects(mid_answer: bool) -> None:
    def play(conn: H2Conn) -> None:
        conn.handshake()
        if server.connections > 1:
            return serve_more(conn)
        request = conn.read_request()
        if mid_answer:
            conn.headers(request.stream, [(":status", "200"), ("content-type", "application/grpc")])
        conn.send_frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0) + b"going")
        conn.read_until_closed()

    with H2Server(play) as server:
        c = channel(server.target)
        first = c.call(LOGS, b"x", 10)
        second = c.call(LOGS, b"abcd", 10)
    assert (first.code, "going" in first.message) == ("UNAVAILABLE", True)
    assert second.response == b"abc" and server.connections == 2


def test_a_graceful_goaway_after_the_answer_moves_the_next_call_to_a_new_connection() -> None:
    def play(conn: H2Conn) -> None:
        conn.handshake()
        if server.connections > 1:
            return serve_more(conn)
        request = conn.read_request()
        conn.send_frame(GOAWAY, 0, 0, struct.pack(">II", request.stream, 0))
        conn.answer(request.stream, b"one")
        conn.read_until_closed()

    with H2Server(play) as server:
        c = channel(server.target)
        assert c.call(LOGS, b"x", 10).response == b"one"
        assert c.call(LOGS, b"abcd", 10).response == b"abc"
    assert server.connections == 2


def test_an_early_answer_stops_the_upload() -> None:
    """A server that refuses before reading the whole request (it gives no
    window beyond the first 65,535 bytes): the call ends with its status."""
    def play(conn: H2Conn) -> None:
        conn.handshake()
        stream = 0
        while not stream:
            kind, _, sid, _ = conn.read_frame()
            if kind == HEADERS:
                stream = sid
        conn.headers(stream, [(":status", "200"), ("grpc-status", "3"), ("grpc-message", "no")], end_stream=True)
        while (frame := conn.read_frame())[0] != RST_STREAM:
            if frame[0] == DATA:  # given back on the connection, as HTTP/2 asks of a reset stream's data
                conn.send_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(frame[3])))
        serve_more(conn)

    with H2Server(play) as server:
        c = channel(server.target)
        assert (c.call(LOGS, b"x" * 500_000, 10).code, c.call(LOGS, b"abcd", 10).response) == \
            ("INVALID_ARGUMENT", b"abc")


@pytest.mark.parametrize("status,code", [("503", "UNAVAILABLE"), ("404", "UNIMPLEMENTED"), ("200", "INTERNAL")])
def test_an_answer_without_grpc_status(status: str, code: str) -> None:
    def play(conn: H2Conn) -> None:
        conn.handshake()
        request = conn.read_request()
        conn.headers(request.stream, [(":status", status), ("content-type", "text/html")], end_stream=True)
        conn.read_until_closed()

    with H2Server(play) as server:
        assert channel(server.target).call(LOGS, b"x", 10).code == code


# -- hostile servers: bounded, never a hang, never an exception -------------

def huge_header_block(conn: H2Conn) -> None:
    conn.handshake()
    request = conn.read_request()
    conn.send_frame(HEADERS, 0, request.stream, conn.encoder.encode([(":status", "200")]))
    while True:
        conn.send_frame(CONTINUATION, 0, request.stream, b"\x00\x01a\x7f" + b"b" * 16000)


def oversized_frame(conn: H2Conn) -> None:
    conn.handshake()
    request = conn.read_request()
    conn.send_frame(DATA, 0, request.stream, b"z" * 100, length=1 << 20)
    conn.read_until_closed()


def endless_data(conn: H2Conn) -> None:
    conn.handshake()
    request = conn.read_request()
    conn.headers(request.stream, [(":status", "200"), ("content-type", "application/grpc")])
    conn.send_frame(DATA, 0, request.stream, struct.pack(">BI", 0, 2**32 - 1))
    chunk = b"\x00" * 16384
    while True:
        conn.send_frame(DATA, 0, request.stream, chunk)


def garbage(conn: H2Conn) -> None:
    conn.sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" + bytes(range(256)) * 8)
    conn.read_until_closed()


def silence(conn: H2Conn) -> None:
    conn.handshake()
    conn.read_request()
    conn.read_until_closed()


def closes_at_once(conn: H2Conn) -> None:
    conn.sock.close()


def push_promise(conn: H2Conn) -> None:
    conn.handshake()
    request = conn.read_request()
    conn.send_frame(5, END_HEADERS, request.stream, b"\x00\x00\x00\x02" + conn.encoder.encode([(":path", "/")]))
    conn.read_until_closed()


@pytest.mark.parametrize("play,code,words", [
    (huge_header_block, "UNAVAILABLE", "header block over"),
    (oversized_frame, "UNAVAILABLE", "a frame of 1048576 bytes"),
    (endless_data, "INTERNAL", "over 4194304 bytes"),
    (garbage, "UNAVAILABLE", ""),
    (silence, "DEADLINE_EXCEEDED", "no answer within 1 s"),
    (closes_at_once, "UNAVAILABLE", ""),
    (push_promise, "UNAVAILABLE", "PUSH_PROMISE"),
], ids=lambda v: getattr(v, "__name__", None))
def test_a_hostile_server_gets_a_clear_status_and_the_next_call_a_new_connection(
        play: Callable[[H2Conn], None], code: str, words: str) -> None:
    def first_hostile_then_good(conn: H2Conn) -> None:
        if server.connections == 1:
            return play(conn)
        conn.handshake()
        serve_more(conn)

    with H2Server(first_hostile_then_good) as server:
        t = transport.transport_for(settings(server.target, timeout_s=1.0))
        answer = t.send(b"x" * 1000)
        if code != "INTERNAL":  # a refused answer leaves the connection usable: no reconnect needed
            assert t.send(b"abcd") == transport.Answer(Outcome.SENT)
    assert (answer.reason, words in answer.message) == (code, True)
    assert answer.outcome is (Outcome.REJECTED if code == "INTERNAL" else Outcome.RETRY)
    assert server.errors == []


def test_a_refused_connection_is_unavailable_and_the_next_send_connects_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = transport.transport_for(settings(f"127.0.0.1:{port}"))
    answer = t.send(b"x")
    assert (answer.outcome, answer.reason) == (Outcome.RETRY, "UNAVAILABLE")
    with H2Server(serve_ok) as server:
        t2 = transport.transport_for(settings(server.target))
        assert t2.send(b"x").outcome is Outcome.SENT


def test_shutdown_wakes_a_call_blocked_in_another_thread() -> None:
    answers = []
    with H2Server(silence) as server:
        t = transport.transport_for(settings(server.target, timeout_s=600.0))
        caller = threading.Thread(target=lambda: answers.append(t.send(b"x")))
        caller.start()
        while server.connections == 0:
            caller.join(0.05)
        caller.join(0.5)
        t.shutdown()
        caller.join(30)
    assert not caller.is_alive()
    assert answers[0].reason == "UNAVAILABLE"


# -- targets and proxies ----------------------------------------------------

def test_targets_as_grpcio_reads_them() -> None:
    assert h2grpc.endpoint("c.example:4317", {}) == h2grpc.Endpoint("c.example", 4317, "c.example:4317")
    assert h2grpc.endpoint("[::1]:4317", {}) == h2grpc.Endpoint("::1", 4317, "[::1]:4317")
    assert h2grpc.endpoint("c.example", {}) == h2grpc.Endpoint("c.example", 443, "c.example:443")


def test_proxy_variables_as_grpcio_reads_them() -> None:
    env = {"https_proxy": "http://u%40x:p@proxy:3128", "http_proxy": "http://other:1"}
    auth = "Basic " + base64.b64encode(b"u@x:p").decode()
    assert h2grpc.endpoint("c:1", env).proxy == ("proxy", 3128, auth)
    assert h2grpc.endpoint("c:1", {**env, "grpc_proxy": "p2:8080"}).proxy == ("p2", 8080, None)
    for no_proxy in ("c", ".example", "*", "10.0.0.0/8"):
        host = "10.1.2.3" if "/" in no_proxy else "c.example" if no_proxy == ".example" else "c"
        assert h2grpc.endpoint(f"{host}:1", {**env, "no_proxy": no_proxy}).proxy is None
    assert h2grpc.endpoint("c:1", {**env, "no_grpc_proxy": "other", "no_proxy": "c"}).proxy is not None


class ConnectProxy:
    """An HTTP CONNECT proxy on loopback that relays bytes both ways."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://user:pw@127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            head = b""
            while b"\r\n\r\n" not in head:
                head += client.recv(1024)
            self.requests.append(head)
            host, port = head.split(b" ")[1].decode().rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while chunk := a.recv(1 << 16):
                b.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def test_through_an_http_connect_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = ConnectProxy()
    monkeypatch.setenv("grpc_proxy", proxy.url)
    try:
        with H2Server(serve_ok) as server:
            t = transport.transport_for(settings(server.target))
            assert t.send(b"x").outcome is Outcome.SENT
    finally:
        proxy.close()
    [request] = proxy.requests
    assert request.startswith(f"CONNECT {server.target} HTTP/1.1\r\n".encode())
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'user:pw').decode()}".encode() in request


# -- interop: grpcio's server and rotel -------------------------------------

@pytest.fixture
def grpcio_server() -> Iterator[tuple[str, list[tuple[bytes, dict[str, str]]]]]:
    received: list[tuple[bytes, dict[str, str]]] = []

    def export(body: bytes, context: grpc.ServicerContext) -> bytes:
        received.append((body, dict(context.invocation_metadata())))
        if body == b"busy":
            context.abort_with_status(_rpc_status(_retry_status(2)))
        return ExportLogsServiceResponse(partial_success=ExportLogsPartialSuccess(
            rejected_log_records=1)).SerializeToString()

    handler = grpc.method_handlers_generic_handler("opentelemetry.proto.collector.logs.v1.LogsService", {
        "Export": grpc.unary_unary_rpc_method_handler(export)})
    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", received
    server.stop(None)


def _rpc_status(status: bytes) -> grpc.Status:
    class _Status(grpc.Status):
        code = grpc.StatusCode.RESOURCE_EXHAUSTED
        details = "slow down"
        trailing_metadata = (("grpc-status-details-bin", status),)
    return _Status()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_grpcio_server_interop(grpcio_server: tuple[str, list], compression: str) -> None:
    target, received = grpcio_server
    t = transport.transport_for(settings(target, compression=compression, headers=(("x-k", "v"),)))
    payload = b"\x0a" + b"y" * 200_000
    assert t.send(payload) == transport.Answer(Outcome.SENT, "partial success", rejected=1)
    busy = t.send(b"busy")
    assert (busy.outcome, busy.reason, busy.message, busy.retry_after_s) == \
        (Outcome.RETRY, "RESOURCE_EXHAUSTED", "slow down", 2.0)
    assert received[0][0] == payload and received[0][1]["x-k"] == "v"
    assert received[0][1]["user-agent"].startswith(f"otel-exec/{__version__}")


def test_rotel_takes_logs_over_the_client(collector: Collector) -> None:
    """The real collector decodes and keeps what the client sends, gzip too."""
    target = collector.grpc_endpoint.split("://", 1)[1]
    for compression in ("none", "gzip"):
        body = f"h2grpc-{compression}-{uuid.uuid4()}"
        record = w.len_field(2, w.fixed64_field(1, time.time_ns()) + w.len_field(5, w.any_string(body)))
        request = encode.export_request(encode.encoded_resource({"service.name": "h2grpc-test"}), [record])
        t = transport.transport_for(settings(target, compression=compression))
        assert t.send(request) == transport.Answer(Outcome.SENT)
        assert collector.wait_for_logs(lambda r: r.body == body, timeout=30)
        t.shutdown()
