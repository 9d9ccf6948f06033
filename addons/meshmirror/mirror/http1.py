"""The HTTP/1.1 client connection: an asyncio.Protocol that sends one request at a time and parses
the response incrementally (no pooling here: see pool.py). It is the one HTTP/1.1 client of
meshmirror: mirror copies and the primary's attempts (mitm/primary.py) both go through it.

The body is discarded as it arrives, unless `capture` asks to keep its first bytes (inspection)
or, with `capture` equal to the connection's body limit, all of it (the primary; `take_response`).
A body past the limit ends the exchange as truncated and aborts the connection.
A hand-written parser rather than h11: it costs a fraction of h11's per-event overhead.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Protocol

from meshmirror.mirror.failures import ClosedEarly, ProtocolViolation
from meshmirror.mirror.sockets import reset, unsent_in_kernel
from meshmirror.mirror.types import CapturedResponse

_MAX_HEAD = 64 * 1024
_MAX_LINE = 8 * 1024
_NO_BODY_STATUS = frozenset({204, 304})
# Interim (1xx) responses accepted before the final one: 100 Continue and 103 Early Hints come
# once or twice; a stream of them is a mirror keeping the exchange busy without answering.
MAX_INTERIM = 16

Captured = tuple[tuple[tuple[bytes, bytes], ...], bytes, bool]

# Parser states.
_IDLE, _HEAD, _BODY_LEN, _BODY_EOF, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _DONE = range(
    9
)


class ConnectionOwner(Protocol):
    """The pool a connection belongs to (pool.IdlePool); declared here to keep imports one-way."""

    def release(self, conn: Connection) -> None: ...

    def forget(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One pooled connection; parses one response at a time and discards its body."""

    __slots__ = (
        "pool",
        "transport",
        "closed",
        "idle",
        "reused",
        "waiter",
        "error",
        "status",
        "keep_alive",
        "truncated",
        "leftover",
        "wire",
        "_state",
        "_buf",
        "_remaining",
        "_body",
        "_limit",
        "_head_request",
        "_interim",
        "_loop",
        "error_phase",
        "capture",
        "captured",
        "head_raw",
        "first_byte",
        "grpc_status",
    )

    def __init__(self, pool: ConnectionOwner, limit: int) -> None:
        self._loop = asyncio.get_running_loop()
        self.error_phase = ""
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle = False
        self.reused = False
        self.waiter: asyncio.Future[None] | None = None
        self.error: BaseException | None = None
        self.status = 0
        self.keep_alive = False
        self.truncated = False
        self.leftover = False
        self.wire = 0  # response bytes consumed in the current exchange
        self._state = _IDLE
        self._buf = bytearray()
        self._remaining = 0
        self._body = 0
        self._limit = limit
        self._head_request = False
        self._interim = 0
        self.capture = 0  # body bytes to keep for the current exchange (0: discard, fast path)
        self.captured = bytearray()
        self.head_raw: tuple[bytes, bytes] | None = None  # (head, line separator) when capturing
        self.first_byte = 0.0  # time.time() of the current exchange's first response byte
        self.grpc_status: int | None = None  # `grpc-status` of the response head or trailers

    # -- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._state == _IDLE or self._state == _DONE:
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self.leftover = True
            self.abort()
            return
        if not self.first_byte:
            self.first_byte = time.time()
        try:
            self._feed(data)
        except ProtocolViolation as exc:
            self._finish(exc)
            self.abort()

    def eof_received(self) -> bool:
        if self._state == _BODY_EOF:
            self._finish(None)
        # False lets the transport close; connection_lost reports anything still pending.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idle:
            self.idle = False
            self.pool.forget(self)
        if self._state == _BODY_EOF and (exc is None or isinstance(exc, ssl.SSLEOFError)):
            self._finish(None)
        elif self._state not in (_IDLE, _DONE):
            self._finish(exc if exc is not None else ClosedEarly(self._describe_state()))

    # -- exchange ---------------------------------------------------------------------------

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def send(self, head: bytes, body: bytes, head_request: bool) -> asyncio.Future[None]:
        transport = self.transport
        assert transport is not None
        self.error = None
        self.status = 0
        self.keep_alive = False
        self.truncated = False
        self.wire = 0
        self._body = 0
        self._interim = 0
        self.first_byte = 0.0
        self.grpc_status = None
        self._buf.clear()
        self._head_request = head_request
        if self.capture:
            self.captured = bytearray()
            self.head_raw = None
        self._state = _HEAD
        waiter = self.waiter = self._loop.create_future()
        if self.closed or transport.is_closing():
            # Lost between connect and first use (the server hung up at once).
            self._finish(ClosedEarly("waiting for response head"))
            return waiter
        if len(body) <= 65536:
            # One segment for the common case: the mirror parses one read, we pay one syscall.
            transport.write(head + body if body else head)
        else:
            transport.write(head)
            transport.write(body)
        return waiter

    def reusable(self) -> bool:
        transport = self.transport
        return (
            self.keep_alive
            and not self.truncated
            and not self.leftover
            and not self.closed
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() == 0
        )

    def unsent(self) -> int:
        """Request bytes written but not yet sent: in the transport's buffer or the kernel's
        send queue."""
        transport = self.transport
        if transport is None or self.closed:
            return 0
        return transport.get_write_buffer_size() + unsent_in_kernel(transport)

    def abort(self) -> None:
        """Give the connection up: a TCP reset, so no unsent byte lingers in the kernel."""
        if self.transport is not None and not self.closed:
            reset(self.transport)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def phase(self) -> str:
        return self._describe_state()

    def take_capture(self) -> Captured:
        return take_capture(self)

    def take_response(self) -> CapturedResponse:
        return take_response(self)

    def _describe_state(self) -> str:
        if self._state == _HEAD:
            return "waiting for response head" if self.wire == 0 else "reading response head"
        if self._state in (_IDLE, _DONE):
            return "idle"
        return "reading response body"

    def _finish(self, error: BaseException | None) -> None:
        # Errors travel as an attribute, not set_exception, so a future nobody awaits any more
        # (timeout, cancel) never produces "exception was never retrieved" noise.
        if error is None:
            self._state = _DONE
        else:
            self.error_phase = self._describe_state()
            self._state = _IDLE
            self.error = error
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- parser -----------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self.wire += len(data)
        pos = 0
        end = len(data)
        # Every state needs input to progress, so the loop ends when the chunk is used up.
        while pos < end:
            state = self._state
            if state == _BODY_LEN or state == _CHUNK_DATA or state == _BODY_EOF:
                want = end - pos if state == _BODY_EOF else min(end - pos, self._remaining)
                got = self._accept_body(want)
                if self.capture:
                    room = self.capture - len(self.captured)
                    if room > 0:
                        self.captured += data[pos : pos + min(got, room)]
                pos += got
                if got < want:
                    self._truncate(end - pos)
                    return
                if state == _BODY_EOF:
                    return
                self._remaining -= got
                if self._remaining:
                    return
                if state == _BODY_LEN:
                    self._complete(end - pos)
                    return
                self._state = _CHUNK_END
            elif state == _HEAD:
                if self._buf:
                    self._buf += data[pos:]
                    data = bytes(self._buf)
                    pos = 0
                    end = len(data)
                    self._buf.clear()
                idx = data.find(b"\r\n\r\n", pos)
                sep, skip = b"\r\n", 4
                if idx < 0:
                    # Tolerate bare-LF heads the way h11 does.
                    idx = data.find(b"\n\n", pos)
                    sep, skip = b"\n", 2
                if idx < 0:
                    if end - pos > _MAX_HEAD:
                        raise ProtocolViolation("response head too large")
                    self._buf += data[pos:]
                    return
                self._parse_head(data[pos:idx], sep)
                pos = idx + skip
                if self._state == _DONE:
                    self._complete(end - pos)
                    return
            elif state == _CHUNK_SIZE:
                line, pos = self._take_line(data, pos, end)
                if line is None:
                    return
                size_text = line.split(b";", 1)[0].strip()
                if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                    raise ProtocolViolation("malformed chunk size")
                size = int(size_text, 16)
                if size:
                    self._remaining = size
                    self._state = _CHUNK_DATA
                else:
                    self._state = _TRAILERS
            elif state == _CHUNK_END:
                line, pos = self._take_line(data, pos, end)
                if line is None:
                    return
                if line:
                    raise ProtocolViolation("missing CRLF after chunk data")
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                line, pos = self._take_line(data, pos, end)
                if line is None:
                    return
                if not line:
                    self._complete(end - pos)
                    return
                if line[:12].lower() == b"grpc-status:":
                    self.grpc_status = _grpc_status(line[12:].strip())
            else:  # pragma: no cover - _IDLE/_DONE never reach the parser
                return

    def _take_line(self, data: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
        idx = data.find(b"\n", pos)
        if idx < 0:
            self._buf += data[pos:]
            if len(self._buf) > _MAX_LINE:
                raise ProtocolViolation("chunk framing line too long")
            return None, end
        if self._buf:
            self._buf += data[pos:idx]
            line = bytes(self._buf)
            self._buf.clear()
        else:
            line = data[pos:idx]
        if line.endswith(b"\r"):
            line = line[:-1]
        return line, idx + 1

    def _accept_body(self, n: int) -> int:
        """Count up to n discarded body bytes; fewer once max_response_body is reached."""
        room = self._limit - self._body
        if n > room:
            n = room
            self.truncated = True
        self._body += n
        return n

    def _truncate(self, unread: int) -> None:
        # Reading on would cost CPU for bytes nobody wants; the stream dies with the rest.
        self.wire -= unread
        self.truncated = True
        self._finish(None)
        self.abort()

    def _complete(self, extra: int) -> None:
        if extra:
            # More bytes than the response: not pipelined by us, so the stream is suspect.
            self.leftover = True
            self.wire -= extra
        self._finish(None)

    def _parse_head(self, head: bytes, sep: bytes) -> None:
        lines = head.split(sep)
        version, _, rest = lines[0].partition(b" ")
        if sep == b"\n":
            rest = rest.rstrip(b"\r")
        code = rest[:3]
        if (
            version not in (b"HTTP/1.1", b"HTTP/1.0")
            or len(code) != 3
            or not code.isdigit()
            or rest[3:4] not in (b"", b" ")
        ):
            raise ProtocolViolation("malformed status line")
        status = int(code)
        keep_alive = version == b"HTTP/1.1"
        close = False
        length: int | None = None
        chunked = False
        has_te = False
        for line in lines[1:]:
            if sep == b"\n":
                line = line.rstrip(b"\r")
            if line[:1] in (b" ", b"\t"):
                continue  # obsolete line folding: a continuation we have no use for
            name, colon, value = line.partition(b":")
            if not colon or not name or name[-1:] in (b" ", b"\t"):
                raise ProtocolViolation("malformed header line")
            n = len(name)
            # Length first: only three names matter, and most headers are rejected on length.
            if n == 14 and name.lower() == b"content-length":
                value = value.strip()
                for item in value.split(b","):
                    item = item.strip()
                    if not item.isdigit():
                        raise ProtocolViolation("malformed Content-Length")
                    if length is not None and int(item) != length:
                        raise ProtocolViolation("conflicting Content-Length")
                    length = int(item)
            elif n == 17 and name.lower() == b"transfer-encoding":
                has_te = True
                chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            elif n == 11 and name.lower() == b"grpc-status":
                self.grpc_status = _grpc_status(value.strip())
            elif n == 10 and name.lower() == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")}
                # Repeated Connection fields are one list (RFC 9110 5.3): a close anywhere
                # wins over a keep-alive in another field, whatever their order.
                close = close or b"close" in tokens
                if b"keep-alive" in tokens and version == b"HTTP/1.0":
                    keep_alive = True
        if close:
            keep_alive = False
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolViolation("unexpected 101 Switching Protocols")
            # Interim response: the real one follows on the same stream. Its bytes count
            # toward the read cap like a body's.
            self._interim += 1
            self._body += len(head)
            if self._interim > MAX_INTERIM:
                raise ProtocolViolation(f"more than {MAX_INTERIM} interim (1xx) responses")
            if self._body > self._limit:
                raise ProtocolViolation(f"interim (1xx) responses over {self._limit} bytes")
            self._state = _HEAD
            return
        self._body = 0
        self.status = status
        self.keep_alive = keep_alive
        if self.capture:
            self.head_raw = (head, sep)
        if self._head_request or status in _NO_BODY_STATUS:
            self._state = _DONE
        elif has_te:
            if length is not None:
                self.keep_alive = False  # RFC 9112 6.1: both present means smuggling risk
            if chunked:
                self._state = _CHUNK_SIZE
            else:
                self.keep_alive = False
                self._state = _BODY_EOF
        elif length is not None:
            if length:
                self._remaining = length
                self._state = _BODY_LEN
            else:
                self._state = _DONE
        else:
            self.keep_alive = False
            self._state = _BODY_EOF


def _grpc_status(value: bytes) -> int | None:
    return int(value) if value.isdigit() and len(value) <= 3 else None


def take_response(conn: Connection) -> CapturedResponse:
    """take_capture plus the status and reason phrase of the final (non-1xx) response."""
    reason = b""
    if conn.head_raw is not None:
        head, sep = conn.head_raw
        # _parse_head accepted "VERSION SP 3DIGIT [SP reason]".
        reason = head.split(sep, 1)[0].rstrip(b"\r").partition(b" ")[2][4:]
    fields, body, truncated = take_capture(conn)
    return CapturedResponse(conn.status, reason, fields, body, truncated)


def take_capture(conn: Connection) -> Captured:
    """The captured response of a finished exchange: header fields, body bytes, truncated?"""
    fields: list[tuple[bytes, bytes]] = []
    if conn.head_raw is not None:
        head, sep = conn.head_raw
        for line in head.split(sep)[1:]:
            line = line.rstrip(b"\r")
            if line[:1] in (b" ", b"\t"):
                continue
            name, _, value = line.partition(b":")
            fields.append((name, value.strip()))
    body = bytes(conn.captured)
    conn.capture = 0
    conn.captured = bytearray()
    conn.head_raw = None
    return tuple(fields), body, conn.truncated or conn._body > len(body)
