"""A unary gRPC client over one HTTP/2 connection of its own, in the calling
thread: what the OTLP exporters need of gRPC (one request at a time, bytes
in, bytes and the status out) without grpcio, whose threads, wake-ups and
import cost more CPU, start-up time and memory than the request itself.

The connection is h2c (prior knowledge) or TLS with ALPN "h2", reached
directly or through an HTTP CONNECT proxy, kept across calls and made again
after any failure. Headers are sent as HPACK literals (no Huffman, no
dynamic table: nothing to keep in step); the server's are decoded by the
hpack package. Every read is bounded (frame size, header block, response
message) and every call has a deadline: a hostile or broken server yields a
Status, never a hang or an exception out of call().
"""
from __future__ import annotations

import base64
import os
import select
import socket
import struct
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    import ssl

    import hpack

# gRPC status codes by number (grpc/doc/statuscodes.md).
CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
         "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
         "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME = struct.Struct(">I B I")  # length (24 bits) << 8 | type, flags, stream id: packed by _frame()
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, \
    _CONTINUATION = range(10)
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
_NO_ERROR, _PROTOCOL_ERROR, _FLOW_CONTROL_ERROR, _FRAME_SIZE_ERROR, _REFUSED_STREAM, _CANCEL, \
    _ENHANCE_YOUR_CALM = 0x0, 0x1, 0x3, 0x6, 0x7, 0x8, 0xb
_SETTINGS_HEADER_TABLE_SIZE, _SETTINGS_ENABLE_PUSH, _SETTINGS_INITIAL_WINDOW_SIZE, _SETTINGS_MAX_FRAME_SIZE, \
    _SETTINGS_MAX_HEADER_LIST_SIZE = 0x1, 0x2, 0x4, 0x5, 0x6

_DEFAULT_WINDOW = 65535
_DEFAULT_FRAME = 16384  # both ways: the peer's until it says otherwise, ours always (we never raise it)
_MAX_WINDOW = 2**31 - 1
# What we let the server send at once, per stream and on the connection.
_RECEIVE_WINDOW = 1 << 20
# Bounds against a hostile server: a header block (compressed, with its
# CONTINUATIONs; decoded, the list hpack checks), a response message (an
# Export answer is a few bytes; grpcio's default limit).
HEADER_BLOCK_MAX = 1 << 16
RESPONSE_MAX = 4 << 20
_IOV_MAX = 512  # buffers in one sendmsg, below every Linux's IOV_MAX (1024)
_READ_SIZE = 1 << 16
_CONNECT_REPLY_MAX = 1 << 13  # a proxy's answer to CONNECT


@dataclass
class Status:
    """How one call ended: the gRPC code's name, the server's message, the
    trailers (binary -bin values base64-decoded) and the response message."""

    code: str
    message: str = ""
    trailers: list[tuple[str, bytes | str]] = field(default_factory=list)
    response: bytes = b""


class _Failed(Exception):
    """Ends a call with status (code, message); the connection is dropped
    when lost is set (its state can no longer be trusted)."""

    def __init__(self, code: str, message: str, lost: bool = True) -> None:
        super().__init__(message)
        self.code, self.message, self.lost = code, message, lost


def _frame(kind: int, flags: int, stream: int, length: int) -> bytes:
    return _FRAME.pack(length << 8 | kind, flags, stream)


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK header field: literal, never indexed, new name, no Huffman
    (RFC 7541 6.2.3): nothing the server must remember."""
    return b"\x10" + _hpack_int(len(name)) + name + _hpack_int(len(value)) + value


def _hpack_int(n: int) -> bytes:
    """A string length with a 7-bit prefix, Huffman bit clear (RFC 7541 5.1)."""
    if n < 127:
        return bytes((n,))
    out, n = bytearray((127,)), n - 127
    while n >= 128:
        out.append(n & 127 | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def _timeout_header(seconds: float) -> bytes:
    """grpc-timeout: at most 8 digits and a unit (gRPC over HTTP/2)."""
    for unit, scale in ((b"m", 1e3), (b"S", 1), (b"M", 1 / 60), (b"H", 1 / 3600)):
        value = max(1, int(seconds * scale + 0.999))
        if value < 10**8:
            return str(value).encode() + unit
    return b"99999999H"


# The status a response without grpc-status means, by its HTTP status (gRPC's
# http-grpc-status-mapping.md).
_HTTP_CODES = {400: "INTERNAL", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "UNIMPLEMENTED",
               429: "UNAVAILABLE", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "UNAVAILABLE"}
# RST_STREAM's error codes as gRPC reads them. ENHANCE_YOUR_CALM is
# RESOURCE_EXHAUSTED there, which OTLP reads as "request too large": an
# overloaded server asks for a later retry, not for a split.
_RESET_CODES = {_REFUSED_STREAM: "UNAVAILABLE", _CANCEL: "CANCELLED", _ENHANCE_YOUR_CALM: "UNAVAILABLE",
                0xc: "PERMISSION_DENIED"}


@dataclass(frozen=True)
class Endpoint:
    """Where to connect: host (no brackets), port, the :authority sent, and
    the HTTP CONNECT proxy (host, port, Proxy-Authorization or None) on the way."""

    host: str
    port: int
    authority: str
    proxy: tuple[str, int, str | None] | None = None


def endpoint(target: str, environ: Mapping[str, str] = os.environ) -> Endpoint:
    """The endpoint of a host:port target ([v6]:port, or a bare host: gRPC's
    default port 443) and the proxy grpcio would use for it: grpc_proxy,
    else https_proxy, else http_proxy, unless no_grpc_proxy (else no_proxy)
    lists the host."""
    env = environ
    parts = urllib.parse.urlsplit("//" + target)
    host = parts.hostname or ""
    port = parts.port or 443
    authority = target if parts.port else f"{target}:{port}"
    proxy_url = next((env[v] for v in ("grpc_proxy", "https_proxy", "http_proxy") if env.get(v)), "")
    if not proxy_url or _no_proxy(host, env.get("no_grpc_proxy") or env.get("no_proxy") or ""):
        return Endpoint(host, port, authority)
    proxy = urllib.parse.urlsplit(proxy_url if "://" in proxy_url else "http://" + proxy_url)
    auth = None
    if proxy.username is not None:
        credentials = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
        auth = "Basic " + base64.b64encode(credentials.encode()).decode()
    return Endpoint(host, port, authority, (proxy.hostname or "", proxy.port or 80, auth))


def _no_proxy(host: str, no_proxy: str) -> bool:
    """Whether no_proxy names host: "*", the host, a domain it ends in, or
    an IP network (CIDR) holding its address."""
    import ipaddress

    host = host.lower()
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*" or host == entry.lstrip(".") or host.endswith("." + entry.lstrip(".")):
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            pass
    return False


def _only_indexed(block: bytes) -> bool:
    """Whether an HPACK header block holds indexed fields only (RFC 7541
    6.1: a first bit of 1, the index a 7-bit prefix integer, 5.1)."""
    i, n = 0, len(block)
    while i < n:
        if not block[i] & 0x80:
            return False
        if block[i] & 0x7f == 0x7f:  # the index goes on in the next bytes
            i += 1
            while i < n and block[i] & 0x80:
                i += 1
        i += 1
    return True


def _data_frames(stream: int, prefix: bytes, body: memoryview, offset: int, end: int, frame_size: int,
                 last: bool) -> list[bytes | memoryview]:
    """DATA frames of the bytes offset to end of prefix + body, each as large
    as frame_size allows (the last one ending the stream if last), as frame
    headers and views of the body: built by list operations, not a Python
    step per frame (a request of a few hundred KB is tens of frames)."""
    pieces: list[bytes | memoryview] = []
    p = len(prefix)
    if offset < p:  # the first frame holds (the rest of) the prefix
        first_end = min(offset + frame_size, end)
        pieces += [_frame(_DATA, _END_STREAM if last and first_end == end else 0, stream, first_end - offset),
                   prefix[offset:min(first_end, p)]]
        if first_end > p:
            pieces.append(body[:first_end - p])
        offset = first_end
    if offset == end:
        return pieces
    starts = range(0, end - offset, frame_size)
    headers = [_frame(_DATA, 0, stream, frame_size)] * len(starts)
    headers[-1] = _frame(_DATA, _END_STREAM if last else 0, stream, end - offset - starts[-1])
    view = body[offset - p:end - p]
    frames: list[bytes | memoryview] = [b""] * (2 * len(starts))
    frames[0::2] = headers
    frames[1::2] = [view[start:start + frame_size] for start in starts]
    return pieces + frames


# Header blocks of indexed fields kept decoded, per connection (a server
# sends a handful: headers and trailers of its answers).
_INDEXED_BLOCKS_MAX = 16


class Channel:
    """Unary calls, one at a time, over one HTTP/2 connection. Not
    thread-safe: each exporter thread has its own."""

    def __init__(self, where: Endpoint, tls: "ssl.SSLContext | None", metadata: Iterable[tuple[str, str]],
                 user_agent: str, gzip: bool = False) -> None:
        """Made before the privilege drop: what the calls import comes now,
        while the interpreter's library is still in reach."""
        # socket's name lookups encode the host with the idna codec, which
        # is imported at its first use.
        import encodings.idna  # noqa: F401

        import hpack

        self._hpack = hpack
        self._where = where
        self._tls = tls
        self._gzip = gzip
        # The header block but :path and grpc-timeout, fixed for the channel.
        fields = [(b":method", b"POST"), (b":scheme", b"https" if tls else b"http"),
                  (b":authority", where.authority.encode()), (b"content-type", b"application/grpc"),
                  (b"te", b"trailers"), (b"user-agent", user_agent.encode())]
        if gzip:
            fields += [(b"grpc-encoding", b"gzip"), (b"grpc-accept-encoding", b"identity,gzip")]
        fields += [(k.lower().encode(), v.encode()) for k, v in metadata]
        self._fixed_headers = b"".join(_literal(k, v) for k, v in fields)
        self._sock: socket.socket | None = None
        self._decoder: hpack.Decoder | None = None
        self._buffer = bytearray()
        self._next_stream = 1
        self._deadline = 0.0
        self._draining = False  # a GOAWAY came: no new stream on this connection

    # -- the call ---------------------------------------------------------

    def call(self, path: str, message: bytes, timeout_s: float) -> Status:
        """Sends message to path, waits at most timeout_s for the status."""
        self._deadline = time.monotonic() + timeout_s
        try:
            if self._sock is not None:
                self._poll_idle()
            if self._sock is None:
                self._connect()
            return self._exchange(path, message, timeout_s)
        except _Failed as e:
            if e.lost:
                self.close()
            return Status(e.code, e.message)
        except TimeoutError:
            self.close()
            return Status("DEADLINE_EXCEEDED", f"no answer within {timeout_s:g} s")
        except (OSError, ValueError, struct.error) as e:  # refused, reset, TLS (ssl.SSLError is an OSError)
            self.close()
            return Status("UNAVAILABLE", f"{self._where.authority}: {type(e).__name__}: {e}")

    def close(self) -> None:
        """Drops the connection; a call blocked on it in another thread
        (a shutdown while an exporter waits) wakes with an error."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionAbortedError("the connection was closed")
        return self._sock

    # -- the connection ---------------------------------------------------

    def _connect(self) -> None:
        where = self._where
        host, port = (where.proxy[0], where.proxy[1]) if where.proxy else (where.host, where.port)
        sock = socket.create_connection((host, port), timeout=self._remaining())
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if where.proxy:
                self._sock = sock
                self._tunnel(where)
            if self._tls is not None:
                sock.settimeout(self._remaining())
                sock = self._tls.wrap_socket(sock, server_hostname=where.host)
                if sock.selected_alpn_protocol() not in (None, "h2"):
                    raise _Failed("UNAVAILABLE", f"{where.authority}: the server speaks "
                                  f"{sock.selected_alpn_protocol()}, not HTTP/2 (ALPN)")
        except BaseException:
            sock.close()
            self._sock = None
            raise
        self._sock = sock
        self._decoder = self._hpack.Decoder(max_header_list_size=HEADER_BLOCK_MAX)
        self._decoder.max_allowed_table_size = 4096  # SETTINGS_HEADER_TABLE_SIZE's default: we keep it
        self._indexed_blocks: dict[bytes, list[tuple[str, str]]] = {}
        self._buffer = bytearray()
        self._pending_block = None
        self._next_stream = 1
        self._draining = False
        self._send_window = _DEFAULT_WINDOW  # the server's connection window for what we send
        self._initial_window = _DEFAULT_WINDOW  # its SETTINGS_INITIAL_WINDOW_SIZE for streams
        self._max_frame = _DEFAULT_FRAME
        self._unacked_read = 0  # connection-level bytes read and not yet given back
        settings = struct.pack(">HIHIHI", _SETTINGS_ENABLE_PUSH, 0, _SETTINGS_INITIAL_WINDOW_SIZE, _RECEIVE_WINDOW,
                               _SETTINGS_MAX_HEADER_LIST_SIZE, HEADER_BLOCK_MAX)
        self._send([_PREFACE, _frame(_SETTINGS, 0, 0, len(settings)), settings,
                    self._window_update(0, _RECEIVE_WINDOW - _DEFAULT_WINDOW)])

    def _tunnel(self, where: Endpoint) -> None:
        """HTTP CONNECT through the proxy to the endpoint."""
        assert where.proxy is not None
        sock = self._socket()
        target = f"[{where.host}]:{where.port}" if ":" in where.host else f"{where.host}:{where.port}"
        request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if where.proxy[2]:
            request += f"Proxy-Authorization: {where.proxy[2]}\r\n"
        self._send([(request + "\r\n").encode()])
        reply = bytearray()
        while b"\r\n\r\n" not in reply:
            if len(reply) > _CONNECT_REPLY_MAX:
                raise _Failed("UNAVAILABLE", f"proxy {where.proxy[0]}: its answer to CONNECT is too long")
            sock.settimeout(self._remaining())
            chunk = sock.recv(_CONNECT_REPLY_MAX)
            if not chunk:
                raise _Failed("UNAVAILABLE", f"proxy {where.proxy[0]}: closed the connection on CONNECT")
            reply += chunk
        head, _, rest = bytes(reply).partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].startswith("2") or rest:
            raise _Failed("UNAVAILABLE", f"proxy {where.proxy[0]}: CONNECT {target}: {status_line[:200]!r}")

    def _poll_idle(self) -> None:
        """Reads what the server sent since the last call (a GOAWAY, a PING,
        new SETTINGS, its close) without waiting for more, so that a
        request is not written into a connection the server has left."""
        sock = self._socket()
        readable = select.poll()
        readable.register(sock, select.POLLIN)
        try:
            while readable.poll(0):
                sock.settimeout(self._remaining())  # a TLS record may come in parts
                chunk = sock.recv(_READ_SIZE)
                if not chunk:
                    self.close()
                    return
                self._buffer += chunk
            self._process(0)
        except (_Failed, OSError):  # reset, junk: a new connection instead
            self.close()
            return
        if self._draining or self._next_stream > _MAX_WINDOW - 2:
            self.close()

    def _remaining(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def _send(self, pieces: list[bytes | memoryview]) -> None:
        sock = self._socket()
        sock.settimeout(self._remaining())
        if self._tls is not None:  # an SSLSocket has no sendmsg
            sock.sendall(b"".join(pieces))
            return
        while pieces:
            batch = pieces[:_IOV_MAX]
            sent = sock.sendmsg(batch)
            if sent == sum(map(len, batch)):
                pieces = pieces[len(batch):]
            else:  # a partial write: on from the first byte not sent
                i = 0
                while sent >= len(batch[i]):
                    sent -= len(batch[i])
                    i += 1
                pieces = [memoryview(batch[i])[sent:], *pieces[i + 1:]]
            if pieces:
                sock.settimeout(self._remaining())

    @staticmethod
    def _window_update(stream: int, increment: int) -> bytes:
        return _frame(_WINDOW_UPDATE, 0, stream, 4) + struct.pack(">I", increment)

    # -- one stream -------------------------------------------------------

    def _exchange(self, path: str, message: bytes, timeout_s: float) -> Status:
        stream = self._next_stream
        self._next_stream += 2
        self._stream = stream
        self._stream_window = self._initial_window
        self._stream_unacked = 0
        self._headers: list[tuple[str, str]] | None = None
        self._trailers: list[tuple[str, str]] | None = None
        self._data = bytearray()
        self._closed = False  # the server's END_STREAM (or RST_STREAM) on our stream
        self._reset: int | None = None
        self._goaway_error: tuple[int, int, str] | None = None

        compressed = self._gzip
        if compressed:
            packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # level 6 as the HTTP transport's, gzip framing
            message = packer.compress(message) + packer.flush()
        body = memoryview(message)
        prefix = struct.pack(">BI", compressed, len(body))
        block = (_literal(b":path", path.encode()) + self._fixed_headers
                 + _literal(b"grpc-timeout", _timeout_header(timeout_s)))
        pieces: list[bytes | memoryview] = []
        first = block[:self._max_frame]
        rest = block[len(first):]
        pieces += [_frame(_HEADERS, 0 if rest else _END_HEADERS, stream, len(first)), first]
        while rest:
            part, rest = rest[:self._max_frame], rest[self._max_frame:]
            pieces += [_frame(_CONTINUATION, 0 if rest else _END_HEADERS, stream, len(part)), part]

        total = len(prefix) + len(body)
        offset = 0
        while offset < total and not self._closed:
            window = min(self._send_window, self._stream_window)
            if window <= 0:
                if pieces:
                    self._send(pieces)
                    pieces = []
                self._read(stream)
                continue
            end = min(offset + window, total)
            pieces += _data_frames(stream, prefix, body, offset, end, self._max_frame, end == total)
            self._send_window -= end - offset
            self._stream_window -= end - offset
            offset = end
            self._send(pieces)
            pieces = []
        if self._closed and offset < total:
            # The server answered before the whole request was sent (an
            # early refusal): our half of the stream is cancelled.
            self._send([_frame(_RST_STREAM, 0, stream, 4), struct.pack(">I", _CANCEL)])
        while not self._closed:
            self._read(stream)
        return self._status()

    def _status(self) -> Status:
        if self._reset is not None and self._trailers is None:
            code = _RESET_CODES.get(self._reset, "INTERNAL")
            return Status(code, f"stream reset by the server (HTTP/2 error {self._reset:#x})")
        fields = self._trailers if self._trailers is not None else []
        if self._headers is not None and self._trailers is not None and self._trailers is not self._headers:
            fields = self._headers + self._trailers
        head = dict(self._headers or ())
        values = dict(fields)
        http_status = head.get(":status", "")
        raw = values.get("grpc-status")
        if raw is None:
            if http_status != "200":
                return Status(_HTTP_CODES.get(int(http_status) if http_status.isdigit() else 0, "UNKNOWN"),
                              f"HTTP status {http_status or 'missing'} without a gRPC status")
            return Status("INTERNAL", "the server's answer has no grpc-status")
        code = CODES[int(raw)] if raw.isdigit() and int(raw) < len(CODES) else "UNKNOWN"
        message = urllib.parse.unquote(values.get("grpc-message", ""), errors="replace")
        trailers: list[tuple[str, bytes | str]] = []
        for key, value in fields:
            if key.endswith("-bin"):
                try:
                    trailers.append((key, base64.b64decode(value + "=" * (-len(value) % 4))))
                except ValueError:
                    pass
            else:
                trailers.append((key, value))
        if code != "OK":
            return Status(code, message, trailers)
        return Status("OK", message, trailers, self._response(head.get("grpc-encoding", "identity")))

    def _response(self, encoding: str) -> bytes:
        data = self._data
        if not data:
            return b""
        if len(data) < 5:
            raise _Failed("INTERNAL", "a truncated gRPC message in the answer", lost=False)
        flag, length = struct.unpack_from(">BI", data)
        if length != len(data) - 5:
            raise _Failed("INTERNAL", "not exactly one gRPC message in the answer", lost=False)
        if not flag:
            return bytes(data[5:])
        if encoding != "gzip":
            raise _Failed("INTERNAL", f"a compressed answer in {encoding!r}", lost=False)
        unpacker = zlib.decompressobj(47)
        try:
            out = unpacker.decompress(data[5:], RESPONSE_MAX)
        except zlib.error as e:
            raise _Failed("INTERNAL", f"a corrupt compressed answer: {e}", lost=False) from None
        if unpacker.unconsumed_tail:
            raise _Failed("INTERNAL", f"the answer is over {RESPONSE_MAX} bytes", lost=False)
        return out

    # -- reading frames ---------------------------------------------------

    def _read(self, stream: int) -> None:
        """Waits for bytes from the server (until the deadline) and handles
        every whole frame among them."""
        sock = self._socket()
        # The server's answer comes in several writes; a delayed ACK of the
        # first would hold the next back (Nagle's algorithm on its side).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        sock.settimeout(self._remaining())
        chunk = sock.recv(_READ_SIZE)
        if not chunk:
            raise _Failed("UNAVAILABLE", f"{self._where.authority}: the server closed the connection"
                          + (f" ({self._goaway_error[2]})" if self._goaway_error else ""))
        self._buffer += chunk
        self._process(stream)

    def _process(self, stream: int) -> None:
        buffer = self._buffer
        start = 0
        replies: list[bytes] = []
        try:
            while len(buffer) - start >= 9:
                word, flags, stream_id = _FRAME.unpack_from(buffer, start)
                length, kind = word >> 8, word & 0xff
                stream_id &= _MAX_WINDOW
                if length > _DEFAULT_FRAME:
                    raise self._protocol_error(_FRAME_SIZE_ERROR, f"a frame of {length} bytes "
                                               f"(the limit is {_DEFAULT_FRAME})")
                if len(buffer) - start < 9 + length:
                    break
                payload = bytes(buffer[start + 9:start + 9 + length])
                start += 9 + length
                self._frame_in(kind, flags, stream_id, payload, stream, replies)
        finally:
            del buffer[:start]
            if replies and self._sock is not None:
                self._send(replies)

    def _protocol_error(self, error: int, what: str) -> _Failed:
        """A connection error: GOAWAY sent (best effort), the connection dropped."""
        try:
            goaway = struct.pack(">II", self._next_stream - 2 if self._next_stream > 1 else 0, error)
            if self._sock is not None:
                self._sock.settimeout(0.1)
                self._sock.send(_frame(_GOAWAY, 0, 0, len(goaway)) + goaway)
        except OSError:
            pass
        return _Failed("UNAVAILABLE", f"{self._where.authority}: HTTP/2 protocol error: {what}")

    def _frame_in(self, kind: int, flags: int, stream_id: int, payload: bytes, stream: int,
                  replies: list[bytes]) -> None:
        if self._pending_block is not None and kind != _CONTINUATION:
            raise self._protocol_error(_PROTOCOL_ERROR, "a header block interrupted")
        if kind == _DATA:
            self._data_in(flags, stream_id, payload, stream, replies)
        elif kind in (_HEADERS, _CONTINUATION):
            self._headers_in(kind, flags, stream_id, payload, stream)
        elif kind == _SETTINGS:
            if flags & _ACK:
                return
            if len(payload) % 6:
                raise self._protocol_error(_FRAME_SIZE_ERROR, "a SETTINGS frame of a length not a multiple of 6")
            for offset in range(0, len(payload), 6):
                key, value = struct.unpack_from(">HI", payload, offset)
                if key == _SETTINGS_INITIAL_WINDOW_SIZE:
                    if value > _MAX_WINDOW:
                        raise self._protocol_error(_FLOW_CONTROL_ERROR, "an initial window over 2^31-1")
                    if getattr(self, "_stream", 0):
                        self._stream_window += value - self._initial_window
                    self._initial_window = value
                elif key == _SETTINGS_MAX_FRAME_SIZE:
                    if not _DEFAULT_FRAME <= value <= 2**24 - 1:
                        raise self._protocol_error(_PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                    self._max_frame = value
            replies.append(_frame(_SETTINGS, _ACK, 0, 0))
        elif kind == _WINDOW_UPDATE:
            if len(payload) != 4:
                raise self._protocol_error(_FRAME_SIZE_ERROR, "a WINDOW_UPDATE not of 4 bytes")
            increment = struct.unpack(">I", payload)[0] & _MAX_WINDOW
            if stream_id == 0:
                self._send_window += increment
                if self._send_window > _MAX_WINDOW:
                    raise self._protocol_error(_FLOW_CONTROL_ERROR, "a connection window over 2^31-1")
            elif stream_id == stream:
                self._stream_window += increment
        elif kind == _PING:
            if len(payload) != 8:
                raise self._protocol_error(_FRAME_SIZE_ERROR, "a PING not of 8 bytes")
            if not flags & _ACK:
                replies.append(_frame(_PING, _ACK, 0, 8) + payload)
        elif kind == _RST_STREAM:
            if len(payload) != 4:
                raise self._protocol_error(_FRAME_SIZE_ERROR, "a RST_STREAM not of 4 bytes")
            if stream_id == stream and not self._closed:
                self._reset = struct.unpack(">I", payload)[0]
                self._closed = True
        elif kind == _GOAWAY:
            if len(payload) < 8:
                raise self._protocol_error(_FRAME_SIZE_ERROR, "a GOAWAY under 8 bytes")
            last, error = struct.unpack_from(">II", payload)
            last &= _MAX_WINDOW
            self._draining = True
            debug = payload[8:200].decode("utf-8", "replace")
            self._goaway_error = (last, error, f"GOAWAY {error:#x} {debug!r}".strip())
            if stream and not self._closed and (stream > last or error != _NO_ERROR):
                # Not taken (stream > last: safe to send again) or the
                # connection is ending in error: either way no answer comes.
                raise _Failed("UNAVAILABLE", f"{self._where.authority}: the server went away "
                              f"({self._goaway_error[2]})")
        elif kind == _PUSH_PROMISE:
            raise self._protocol_error(_PROTOCOL_ERROR, "PUSH_PROMISE, though push is disabled")
        # PRIORITY and unknown frame types are ignored, as HTTP/2 asks.

    _pending_block: bytearray | None = None
    _pending_stream = 0
    _pending_end_stream = False

    def _headers_in(self, kind: int, flags: int, stream_id: int, payload: bytes, stream: int) -> None:
        if kind == _HEADERS:
            if stream_id == 0:
                raise self._protocol_error(_PROTOCOL_ERROR, "HEADERS on stream 0")
            if flags & _PADDED:
                payload = self._unpad(payload)
            if flags & _PRIORITY_FLAG:
                payload = payload[5:]
            self._pending_block = bytearray()
            self._pending_stream = stream_id
            self._pending_end_stream = bool(flags & _END_STREAM)
        elif self._pending_block is None or stream_id != self._pending_stream:
            raise self._protocol_error(_PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        assert self._pending_block is not None
        self._pending_block += payload
        if len(self._pending_block) > HEADER_BLOCK_MAX:
            raise self._protocol_error(_PROTOCOL_ERROR, f"a header block over {HEADER_BLOCK_MAX} bytes")
        if not flags & _END_HEADERS:
            return
        block, self._pending_block = bytes(self._pending_block), None
        fields = self._indexed_blocks.get(block)
        if fields is None:
            fields = self._decode(block)
        if stream_id != stream or self._closed:
            return
        if self._headers is None:
            self._headers = fields
            if self._pending_end_stream:  # Trailers-Only: the status in the only block
                self._trailers = fields
        else:
            self._trailers = fields
            if not self._pending_end_stream:
                raise _Failed("INTERNAL", "trailers without the end of the stream", lost=True)
        if self._pending_end_stream:
            self._closed = True

    def _decode(self, block: bytes) -> list[tuple[str, str]]:
        """A header block's fields. Every block is decoded, whatever its
        stream: HPACK's dynamic table must stay in step with the server's.
        A block of indexed fields only changes no table, so it decodes the
        same until one that does: kept (a server answers every call with
        the same few bytes, and the hpack package's decoding is Python)."""
        assert self._decoder is not None
        try:
            decoded = self._decoder.decode(block, raw=True)
        except self._hpack.HPACKError as e:
            raise self._protocol_error(0x9, f"a header block that does not decode ({type(e).__name__})") from None
        fields = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in decoded]
        if not _only_indexed(block):
            self._indexed_blocks = {}
        elif len(self._indexed_blocks) < _INDEXED_BLOCKS_MAX:
            self._indexed_blocks[block] = fields
        return fields

    def _unpad(self, payload: bytes) -> bytes:
        if not payload or payload[0] >= len(payload):
            raise self._protocol_error(_PROTOCOL_ERROR, "padding longer than its frame")
        return payload[1:len(payload) - payload[0]]

    def _data_in(self, flags: int, stream_id: int, payload: bytes, stream: int, replies: list[bytes]) -> None:
        if stream_id == 0:
            raise self._protocol_error(_PROTOCOL_ERROR, "DATA on stream 0")
        # Flow control counts the whole frame, padding included; what we
        # read is given back at once, so a server that keeps sending meets
        # RESPONSE_MAX, not a stalled window.
        self._unacked_read += len(payload)
        if self._unacked_read >= _RECEIVE_WINDOW // 2:
            replies.append(self._window_update(0, self._unacked_read))
            self._unacked_read = 0
        if flags & _PADDED:
            payload = self._unpad(payload)
        if stream_id != stream or self._closed:
            return
        if self._headers is None:
            raise _Failed("INTERNAL", "DATA before the answer's headers")
        self._data += payload
        if len(self._data) > RESPONSE_MAX + 5:
            self._send([_frame(_RST_STREAM, 0, stream, 4), struct.pack(">I", _CANCEL)])
            raise _Failed("INTERNAL", f"the answer is over {RESPONSE_MAX} bytes", lost=False)
        if flags & _END_STREAM:
            self._closed = True
            return
        self._stream_unacked += len(payload)
        if self._stream_unacked >= _RECEIVE_WINDOW // 2:
            replies.append(self._window_update(stream, self._stream_unacked))
            self._stream_unacked = 0
