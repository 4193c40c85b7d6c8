"""A scripted HTTP/2 server on loopback, for what a real collector never
does: a test hands it a function that plays one connection (reads the
client's frames, answers with well-formed or hostile ones), so that
otel_exec/export/otlp/h2grpc.py meets huge header blocks, oversized
frames, endless data, GOAWAY, RST_STREAM, silence and garbage.

    def play(conn: H2Conn) -> None:
        request = conn.read_request()
        conn.answer(request.stream, b"")

    with H2Server(play) as server:
        channel = Channel(endpoint(server.target, {}), None, (), "test")
"""
from __future__ import annotations

import gzip
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


@dataclass
class Request:
    stream: int
    headers: dict[str, str]
    message: bytes  # the gRPC message, its 5-byte prefix removed and gunzipped
    compressed: bool
    frames: list[tuple[int, int, int, bytes]] = field(default_factory=list)  # everything read on the way


class H2Conn:
    """One accepted connection, from the server's side."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self._buffer = b""
        self.client_settings: dict[int, int] = {}

    def recv_exact(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("the client closed the connection")
            self._buffer += chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def read_frame(self) -> tuple[int, int, int, bytes]:
        head = self.recv_exact(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7fffffff
        return kind, flags, stream, self.recv_exact(length)

    def read_until_closed(self) -> None:
        """Reads (and ignores) until the client leaves: a server that
        never answers."""
        while self.sock.recv(1 << 16):
            pass

    def send_frame(self, kind: int, flags: int, stream: int, payload: bytes = b"", length: int | None = None) -> None:
        n = len(payload) if length is None else length
        self.sock.sendall(n.to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload)

    def handshake(self, settings: dict[int, int] | None = None) -> None:
        """Reads the client's preface and sends our SETTINGS."""
        assert self.recv_exact(len(PREFACE)) == PREFACE
        self.send_frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in (settings or {}).items()))

    def read_request(self) -> Request:
        """Frames until a request's END_STREAM, acknowledging SETTINGS
        (and PINGs) on the way; grants no window beyond the defaults
        unless the test sends WINDOW_UPDATEs itself."""
        frames: list[tuple[int, int, int, bytes]] = []
        block, headers, body, stream = b"", {}, b"", 0
        while True:
            kind, flags, sid, payload = frame = self.read_frame()
            frames.append(frame)
            if kind == SETTINGS and not flags & ACK:
                for off in range(0, len(payload), 6):
                    k, v = struct.unpack_from(">HI", payload, off)
                    self.client_settings[k] = v
                self.send_frame(SETTINGS, ACK, 0)
            elif kind in (HEADERS, CONTINUATION):
                stream = sid
                block += payload
                if flags & END_HEADERS:
                    headers = {k.decode(): v.decode() for k, v in self.decoder.decode(block, raw=True)}
            elif kind == DATA:
                body += payload
                # Give back what was read, as a server does.
                if payload:
                    self.send_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(payload)))
                    if not flags & END_STREAM:
                        self.send_frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", len(payload)))
                if flags & END_STREAM:
                    compressed, length = struct.unpack_from(">BI", body)
                    message = body[5:5 + length]
                    return Request(stream, headers, gzip.decompress(message) if compressed else message,
                                   bool(compressed), frames)

    def headers(self, stream: int, fields: list[tuple[str, str]], end_stream: bool = False) -> None:
        self.send_frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream, self.encoder.encode(fields))

    def answer(self, stream: int, message: bytes, status: int = 0, status_message: str = "",
               trailers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        """A whole gRPC answer: headers, one message, trailers."""
        self.headers(stream, [(":status", "200"), ("content-type", "application/grpc")])
        self.send_frame(DATA, 0, stream, struct.pack(">BI", 0, len(message)) + message)
        fields = [("grpc-status", str(status))] + ([("grpc-message", status_message)] if status_message else [])
        self.headers(stream, fields + list(trailers), end_stream=True)


class H2Server:
    """Accepts on loopback and plays each connection with play(conn) in
    its own thread; counts connections and keeps play's exceptions."""

    def __init__(self, play: Callable[[H2Conn], None]) -> None:
        self._play = play
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections = 0
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._stop = False

    def __enter__(self) -> "H2Server":
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._listener.close()
        for sock in self._socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stop:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._socks.append(sock)
            thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, sock: socket.socket) -> None:
        try:
            self._play(H2Conn(sock))
        except (EOFError, OSError):
            pass  # the client left: what several tests expect
        except BaseException as e:  # noqa: BLE001 -- kept for the test to see
            self.errors.append(e)
        finally:
            sock.close()
