"""The mirror writer: sends fire-and-forget HTTP/1.1 copies to shadow services.

Pure asyncio (no mitmproxy imports) so it runs on mitmproxy's event loop and is testable alone.
Each copy is one task bounded by a per-pool-key in-flight cap and an overall timeout; connections
are pooled per endpoint and reused LIFO. Responses are parsed incrementally inside the protocol
and their bodies discarded as they arrive, so a copy never buffers more than a response head.
h11 is deliberately not used on the hot path: a hand-written head serialiser and response parser
cost a fraction of its per-event overhead (see spec/mitmproxy-internals.md section 3c).

Every accepted copy ends in exactly one ``on_done(MirrorResult)``; network problems never raise.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["MirrorEndpoint", "MirrorRequest", "MirrorResult", "MirrorWriter", "FAILURE_CLASSES"]

log = logging.getLogger("meshmirror.writer")

#: Every value ``MirrorResult.failure`` can take (``None`` means the mirror answered).
FAILURE_CLASSES = ("refused", "timeout", "reset", "tls", "protocol", "dns", "other", "cancelled")


@dataclass(frozen=True, slots=True)
class MirrorEndpoint:
    host: str  # IP or DNS name to connect to
    port: int
    tls: bool = False
    sni: str | None = None  # TLS server_hostname; None -> host (no SNI for IP literals)
    ca_file: str | None = None  # PEM bundle; None -> system default trust
    insecure_skip_verify: bool = False


@dataclass(slots=True)
class MirrorRequest:
    method: str
    target: str  # origin-form: "/path?query"
    headers: list[tuple[bytes, bytes]]  # as sent, incl. Host (already the shadow host)
    body: bytes


@dataclass(frozen=True, slots=True)
class MirrorResult:
    status: int | None  # HTTP status when the mirror answered
    failure: str | None  # one of FAILURE_CLASSES when it did not
    detail: str  # short text for logs; never contains request header values
    latency: float  # seconds from submit to completion
    bytes_sent: int  # request bytes written (head + body) on the attempt reported
    bytes_received: int  # response bytes read (head + body framing), body discarded
    # Only with submit(capture=N > 0): the response's header fields and its first N body bytes
    # (raw, still content-encoded); body_truncated when the body was longer than what was kept.
    headers: tuple[tuple[bytes, bytes], ...] | None = None
    body: bytes | None = None
    body_truncated: bool = False


# --------------------------------------------------------------------------------------------
# Request serialisation

# Content-Length is dropped too: the writer always recomputes it from the body it sends.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})


class _InvalidRequest(Exception):
    """The copy cannot be framed safely (CR/LF or space where the wire format forbids it)."""


def _encode_head(request: MirrorRequest, endpoint: MirrorEndpoint) -> bytes:
    method = request.method.encode("ascii")
    # mitmproxy exposes non-UTF-8 path bytes as surrogates; this restores them byte-exact.
    target = (request.target or "/").encode("utf-8", "surrogateescape")
    if b" " in target:
        raise _InvalidRequest("target contains a space")
    headers = request.headers
    lows = [name.lower() for name, _ in headers]
    drop = _HOP_BY_HOP
    if b"connection" in lows:
        extra = {
            token.strip().lower()
            for low, (_, value) in zip(lows, headers, strict=True)
            if low == b"connection"
            for token in value.split(b",")
        }
        # Never let a Connection token strip Host: the copy would become unroutable.
        extra.discard(b"host")
        if not extra <= _HOP_BY_HOP:  # usually just "keep-alive"/"close": skip the union
            drop = drop | extra
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    has_host = False
    for low, (name, value) in zip(lows, headers, strict=True):
        if low in drop:
            continue
        if low == b"host":
            has_host = True
        out += (name, b": ", value, b"\r\n")
    if not has_host:
        # HTTP/1.1 requires Host; the caller normally supplies the shadow host already.
        host = endpoint.host
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        if ":" in host:
            host = f"[{host}]"
        if endpoint.port != (443 if endpoint.tls else 80):
            host = f"{host}:{endpoint.port}"
        out[4:4] = (b"Host", b": ", host.encode("ascii"), b"\r\n")
    body_len = len(request.body)
    if body_len or method in _BODY_METHODS:
        out += (b"Content-Length: ", str(body_len).encode("ascii"), b"\r\n")
    out.append(b"\r\n")
    head = b"".join(out)
    # One cheap pass instead of checking every value: each CRLF we emitted is the only one allowed.
    lines = len(out) // 4 + 1  # request line, one line per header (4 parts), final CRLF
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise _InvalidRequest(_find_bad_field(method, target, headers))
    return head


def _find_bad_field(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> str:
    # Names the offending field without echoing values (they may be secrets).
    if b"\r" in method or b"\n" in method:
        return "method contains CR/LF"
    if b"\r" in target or b"\n" in target:
        return "target contains CR/LF"
    for index, (name, value) in enumerate(headers):
        if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value:
            return f"header #{index} contains CR/LF"
    return "request head contains CR/LF"


# --------------------------------------------------------------------------------------------
# Response parsing (incremental, inside the protocol)


class _ProtocolViolation(Exception):
    """The mirror's response is not valid HTTP/1.x."""


class _ConnectTimeout(TimeoutError):
    """connect_timeout expired (as opposed to the overall timeout)."""


class _TLSConfigError(Exception):
    """The endpoint's TLS settings cannot be loaded (e.g. an unreadable ca_file)."""


class _ClosedEarly(Exception):
    """The connection ended before the response was complete."""


_MAX_HEAD = 64 * 1024
_MAX_LINE = 8 * 1024
_NO_BODY_STATUS = frozenset({204, 304})

# Parser states.
_IDLE, _HEAD, _BODY_LEN, _BODY_EOF, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _DONE = range(
    9
)


class _Connection(asyncio.Protocol):
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
        "_loop",
        "error_phase",
        "capture",
        "captured",
        "head_raw",
    )

    def __init__(self, pool: _Pool, limit: int) -> None:
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
        self.capture = 0  # body bytes to keep for the current exchange (0: discard, fast path)
        self.captured = bytearray()
        self.head_raw: tuple[bytes, bytes] | None = None  # (head, line separator) when capturing

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
        try:
            self._feed(data)
        except _ProtocolViolation as exc:
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
            self._finish(exc if exc is not None else _ClosedEarly(self._describe_state()))

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
        self._buf.clear()
        self._head_request = head_request
        if self.capture:
            self.captured = bytearray()
            self.head_raw = None
        self._state = _HEAD
        waiter = self.waiter = self._loop.create_future()
        if self.closed or transport.is_closing():
            # Lost between connect and first use (the server hung up at once).
            self._finish(_ClosedEarly("waiting for response head"))
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

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def phase(self) -> str:
        return self._describe_state()

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
                        raise _ProtocolViolation("response head too large")
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
                    raise _ProtocolViolation("malformed chunk size")
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
                    raise _ProtocolViolation("missing CRLF after chunk data")
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                line, pos = self._take_line(data, pos, end)
                if line is None:
                    return
                if not line:
                    self._complete(end - pos)
                    return
            else:  # pragma: no cover - _IDLE/_DONE never reach the parser
                return

    def _take_line(self, data: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
        idx = data.find(b"\n", pos)
        if idx < 0:
            self._buf += data[pos:]
            if len(self._buf) > _MAX_LINE:
                raise _ProtocolViolation("chunk framing line too long")
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
            raise _ProtocolViolation("malformed status line")
        status = int(code)
        keep_alive = version == b"HTTP/1.1"
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
                raise _ProtocolViolation("malformed header line")
            n = len(name)
            # Length first: only three names matter, and most headers are rejected on length.
            if n == 14 and name.lower() == b"content-length":
                value = value.strip()
                for item in value.split(b","):
                    item = item.strip()
                    if not item.isdigit():
                        raise _ProtocolViolation("malformed Content-Length")
                    if length is not None and int(item) != length:
                        raise _ProtocolViolation("conflicting Content-Length")
                    length = int(item)
            elif n == 17 and name.lower() == b"transfer-encoding":
                has_te = True
                chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            elif n == 10 and name.lower() == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")}
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens and version == b"HTTP/1.0":
                    keep_alive = True
        if 100 <= status < 200:
            if status == 101:
                raise _ProtocolViolation("unexpected 101 Switching Protocols")
            # Interim response: the real one follows on the same stream.
            self._state = _HEAD
            return
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


# --------------------------------------------------------------------------------------------
# Pools


class _Pool:
    """Idle keep-alive connections to one endpoint, reused last-in first-out."""

    __slots__ = ("endpoint", "idle", "max_idle", "ssl_context", "server_hostname")

    def __init__(
        self, endpoint: MirrorEndpoint, max_idle: int, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.endpoint = endpoint
        self.idle: list[_Connection] = []
        self.max_idle = max_idle
        self.ssl_context = ssl_context
        self.server_hostname = (endpoint.sni or endpoint.host) if endpoint.tls else None

    def take(self) -> _Connection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            conn.idle = False
            if conn.usable():
                conn.reused = True
                return conn
        return None

    def release(self, conn: _Connection) -> None:
        if conn.reusable() and len(self.idle) < self.max_idle:
            conn.idle = True
            self.idle.append(conn)
        elif conn.truncated or conn.leftover:
            conn.abort()
        else:
            conn.close()

    def forget(self, conn: _Connection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.abort()


# --------------------------------------------------------------------------------------------
# Failure classification

_ERRNO_CLASS = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timeout",
    errno.ECONNRESET: "reset",
    errno.EPIPE: "reset",
    errno.ECONNABORTED: "reset",
}


def _short(exc: BaseException) -> str:
    text = str(exc)
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _classify(exc: BaseException) -> tuple[str, str]:
    """Map an exception to (failure class, detail). Order matters: subclasses first."""
    if isinstance(exc, BaseExceptionGroup):
        # create_connection(all_errors=True): one error per address tried.
        leaves = [_classify(e) for e in exc.exceptions]
        for leaf in leaves:
            if leaf[0] == "refused":
                return "refused", leaf[1]
        return leaves[0] if leaves else ("other", _short(exc))
    if isinstance(exc, _ProtocolViolation):
        return "protocol", str(exc)
    if isinstance(exc, _ClosedEarly):
        return "reset", f"connection closed while {exc}"
    if isinstance(exc, _TLSConfigError):
        return "tls", str(exc)
    if isinstance(exc, _InvalidRequest):
        return "other", f"invalid request: {exc}"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return "reset", _short(exc)
        return "tls", _short(exc)
    if isinstance(exc, socket.gaierror):
        return "dns", _short(exc)
    if isinstance(exc, TimeoutError):
        return "timeout", _short(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "refused", _short(exc)
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset", _short(exc)
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return "reset", _short(exc)
    if isinstance(exc, OSError) and exc.errno in _ERRNO_CLASS:
        return _ERRNO_CLASS[exc.errno], _short(exc)
    if type(exc).__name__ == "RemoteProtocolError":  # h11, should a caller's hook raise one
        return "protocol", _short(exc)
    return "other", _short(exc)


# --------------------------------------------------------------------------------------------
# The writer


class _Copy:
    """Book-keeping for one accepted submit."""

    __slots__ = (
        "pool_key",
        "on_done",
        "started",
        "finished",
        "task",
        "conn",
        "phase",
        "sent",
        "capture",
    )

    def __init__(
        self,
        pool_key: str,
        on_done: Callable[[MirrorResult], None],
        started: float,
        capture: int = 0,
    ) -> None:
        self.pool_key = pool_key
        self.on_done = on_done
        self.started = started
        self.finished = False
        self.task: asyncio.Task[None] | None = None
        self.conn: _Connection | None = None
        self.phase = "starting"
        self.sent = 0
        self.capture = capture


_Captured = tuple[tuple[tuple[bytes, bytes], ...], bytes, bool]


def _take_capture(conn: _Connection) -> _Captured:
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


# create_connection(all_errors=...) appeared in 3.12; without it, several failed addresses
# collapse into a bare OSError("Multiple exceptions: ...") that cannot be classified.
_CONNECT_KWARGS: dict[str, Any] = {"all_errors": True} if sys.version_info >= (3, 12) else {}


class MirrorWriter:
    """Sends mirror copies: pooled per endpoint, bounded per pool key, timed, fire-and-forget."""

    def __init__(
        self,
        *,
        timeout: float,
        max_inflight: int,
        connect_timeout: float | None = None,
        max_idle_per_endpoint: int = 16,
        max_response_body: int = 8 * 1024 * 1024,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")
        self._timeout = timeout
        self._max_inflight = max_inflight
        self._connect_timeout = connect_timeout
        self._max_idle = max(0, max_idle_per_endpoint)
        self._max_body = max(0, max_response_body)
        self._inflight: dict[str, int] = {}
        self._live: set[_Copy] = set()
        self._pools: dict[MirrorEndpoint, _Pool] = {}
        self._ssl_contexts: dict[tuple[str | None, bool], ssl.SSLContext | _TLSConfigError] = {}
        #: How many on_done callbacks raised (only the first is logged, with its traceback).
        self.callback_errors = 0

    # -- public API -------------------------------------------------------------------------

    def submit(
        self,
        pool_key: str,
        endpoint: MirrorEndpoint,
        request: MirrorRequest,
        on_done: Callable[[MirrorResult], None],
        capture: int = 0,
    ) -> bool:
        """Never blocks, never raises for network reasons. False (on_done NOT called) when
        pool_key already has max_inflight copies in flight; True otherwise, and then on_done is
        called exactly once (possibly before submit returns: mitmproxy 12 on py3.12+ installs an
        eager task factory, so create_task may run the coroutine inline up to its first await).
        capture > 0 keeps the response's headers and up to that many body bytes in the result."""
        count = self._inflight.get(pool_key, 0)
        if count >= self._max_inflight:
            return False
        self._inflight[pool_key] = count + 1
        loop = asyncio.get_running_loop()
        copy = _Copy(pool_key, on_done, time.monotonic(), capture)
        # Registered before the task exists: an eagerly-run copy may finish inside create_task.
        self._live.add(copy)
        try:
            copy.task = loop.create_task(self._run(copy, endpoint, request))
        except BaseException:
            # Only a closed or broken loop gets here; undo so the caller sees just the raise.
            self._live.discard(copy)
            copy.finished = True
            self._inflight[pool_key] -= 1
            if not self._inflight[pool_key]:
                del self._inflight[pool_key]
            raise
        return True

    def inflight(self, pool_key: str | None = None) -> int:
        if pool_key is None:
            return sum(self._inflight.values())
        return self._inflight.get(pool_key, 0)

    async def drain(self, timeout: float) -> int:
        """Wait up to timeout for in-flight copies; cancel the rest (on_done gets "cancelled").
        Returns how many were cancelled. Idle connections stay pooled (close() drops them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while self._live:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            tasks = [c.task for c in self._live if c.task is not None]
            if not tasks:
                break
            await asyncio.wait(tasks, timeout=remaining)
        leftovers = self._cancel_all("cancelled by drain()")
        if leftovers:
            # Let cancelled copies unwind (they abort their sockets) before returning.
            await asyncio.wait(leftovers, timeout=1.0)
        return len(leftovers)

    def close(self) -> None:
        """Cancel every copy in flight (on_done gets "cancelled") and drop idle connections.
        Synchronous so mitmproxy's done() can call it; the writer stays usable afterwards."""
        self._cancel_all("cancelled by close()")
        pools, self._pools = self._pools, {}
        self._ssl_contexts.clear()
        for pool in pools.values():
            pool.close()

    # -- internals --------------------------------------------------------------------------

    def _cancel_all(self, detail: str) -> list[asyncio.Task[None]]:
        copies = list(self._live)
        self._live.clear()
        tasks: list[asyncio.Task[None]] = []
        for copy in copies:
            received = copy.conn.wire if copy.conn is not None else 0
            self._finish(copy, None, "cancelled", detail, received)
            if copy.task is not None and not copy.task.done():
                # Cancel first: it cancels the awaited response future before the abort below
                # could complete it.
                copy.task.cancel()
                tasks.append(copy.task)
            if copy.conn is not None:
                copy.conn.abort()
                copy.conn = None
        return tasks

    def _finish(
        self,
        copy: _Copy,
        status: int | None,
        failure: str | None,
        detail: str,
        received: int,
        captured: _Captured | None = None,
    ) -> None:
        if copy.finished:
            return
        copy.finished = True
        key = copy.pool_key
        count = self._inflight.get(key, 0) - 1
        if count > 0:
            self._inflight[key] = count
        else:
            self._inflight.pop(key, None)
        latency = time.monotonic() - copy.started
        if captured is None:
            result = MirrorResult(status, failure, detail, latency, copy.sent, received)
        else:
            result = MirrorResult(status, failure, detail, latency, copy.sent, received, *captured)
        try:
            copy.on_done(result)
        except Exception:
            self.callback_errors += 1
            if self.callback_errors == 1:
                log.exception(
                    "mirror on_done callback raised; further callback errors are only counted"
                )

    async def _run(self, copy: _Copy, endpoint: MirrorEndpoint, request: MirrorRequest) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                conn, detail = await self._exchange(copy, endpoint, request)
            copy.conn = None
            captured = _take_capture(conn) if copy.capture else None
            conn.pool.release(conn)
        except asyncio.CancelledError:
            received = self._abort_conn(copy)
            self._finish(copy, None, "cancelled", "cancelled", received)
            raise
        except _ConnectTimeout as exc:
            self._finish(copy, None, "timeout", str(exc), 0)
        except TimeoutError as exc:
            received = self._abort_conn(copy)
            if str(exc):  # the OS's ETIMEDOUT, not our deadline
                text = f"{_short(exc)} ({copy.phase})"
            else:
                text = f"no answer within {self._timeout:g}s ({copy.phase})"
            self._finish(copy, None, "timeout", text, received)
        except Exception as exc:
            received = self._abort_conn(copy)
            failure, text = _classify(exc)
            if (
                failure in ("reset", "protocol", "other")
                and copy.phase != "starting"
                and not isinstance(exc, _ClosedEarly)
            ):
                text = f"{text} ({copy.phase})"
            self._finish(copy, None, failure, text, received)
        else:
            self._finish(copy, conn.status, None, detail, conn.wire, captured)
        finally:
            self._live.discard(copy)

    def _abort_conn(self, copy: _Copy) -> int:
        """Abort the connection a failed copy was using; returns its response bytes."""
        conn = copy.conn
        if conn is None:
            return 0
        copy.conn = None
        if conn.error is None:
            phase = conn.phase()
            if phase != "idle":
                copy.phase = phase
        conn.abort()
        return conn.wire

    async def _exchange(
        self, copy: _Copy, endpoint: MirrorEndpoint, request: MirrorRequest
    ) -> tuple[_Connection, str]:
        head = _encode_head(request, endpoint)
        body = request.body
        pool = self._pools.get(endpoint)
        if pool is None:
            pool = self._new_pool(endpoint)
        head_request = request.method == "HEAD"
        conn = pool.take()
        retried = False
        while True:
            if conn is None:
                copy.phase = "connect"
                conn = await self._connect(pool)
            copy.conn = conn
            conn.capture = copy.capture
            copy.phase = "waiting for response head"
            copy.sent = len(head) + len(body)
            await conn.send(head, body, head_request)
            error = conn.error
            if error is None:
                break
            if conn.reused and conn.wire == 0 and not retried:
                # Stale keep-alive: the server closed an idle connection as we reused it. No
                # response byte arrived, so one retry on a fresh connection is safe to try.
                conn.abort()
                copy.conn = None
                conn = None
                retried = True
                continue
            copy.phase = conn.error_phase
            raise error
        if conn.truncated:
            return conn, f"response body truncated at {self._max_body} bytes; connection closed"
        if retried:
            return conn, "retried on a fresh connection after a stale keep-alive"
        return conn, ""

    async def _connect(self, pool: _Pool) -> _Connection:
        loop = asyncio.get_running_loop()
        endpoint = pool.endpoint
        limit = self._max_body

        def factory() -> _Connection:
            return _Connection(pool, limit)

        coro = loop.create_connection(
            factory,
            endpoint.host,
            endpoint.port,
            ssl=pool.ssl_context,
            server_hostname=pool.server_hostname,
            **_CONNECT_KWARGS,
        )
        connect_timeout = self._connect_timeout
        if connect_timeout is None or connect_timeout >= self._timeout:
            _, conn = await coro
            return conn
        try:
            async with asyncio.timeout(connect_timeout) as deadline:
                _, conn = await coro
        except TimeoutError:
            if deadline.expired():
                raise _ConnectTimeout(f"connect not done within {connect_timeout:g}s") from None
            raise
        return conn

    def _new_pool(self, endpoint: MirrorEndpoint) -> _Pool:
        context = self._ssl_context(endpoint) if endpoint.tls else None
        pool = self._pools[endpoint] = _Pool(endpoint, self._max_idle, context)
        return pool

    def _ssl_context(self, endpoint: MirrorEndpoint) -> ssl.SSLContext:
        # Loading trust stores costs milliseconds: share one context per (ca_file, insecure).
        # A broken ca_file is remembered too, so a misconfigured mirror cannot make every copy
        # re-read it on the event loop; close() forgets both.
        key = (endpoint.ca_file, endpoint.insecure_skip_verify)
        context = self._ssl_contexts.get(key)
        if context is None:
            try:
                context = ssl.create_default_context(cafile=endpoint.ca_file)
            except (OSError, ValueError) as exc:
                context = _TLSConfigError(f"cannot load ca_file: {_short(exc)}")
            else:
                if endpoint.insecure_skip_verify:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                context.set_alpn_protocols(["http/1.1"])
            self._ssl_contexts[key] = context
        if isinstance(context, _TLSConfigError):
            raise context
        return context
