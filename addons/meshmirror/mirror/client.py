"""The upstream client: one request and its whole response over HTTP/1.1 or HTTP/2, on
connections pooled per endpoint. Both the mirror writer's copies and the primary's own attempts
(timeout, retries) go through it, so both speak the same protocols with the same TLS settings.

- The endpoint says what may be spoken (`MirrorEndpoint.alpn`): HTTP/1.1; HTTP/2 (h2c with prior
  knowledge in plain text, ALPN `h2` over TLS, and nothing else); or over TLS either, as the
  server chooses. Each new connection is checked against the proxy's own listen addresses
  before a byte is written (`set_own_addresses`).
- HTTP/1.1 connections carry one exchange at a time and go back to the pool when it is done;
  HTTP/2 connections carry many streams, and concurrent exchanges to an endpoint wait for the
  one connection being made rather than each opening its own.
- A request the server never processed is sent once more on a fresh connection: an idempotent
  one that met a stale keep-alive (no byte of a response), or any one whose HTTP/2 stream was
  refused (REFUSED_STREAM, or above a GOAWAY's last stream).
Errors are raised as they are met; the caller times the whole exchange and classifies them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import time
from typing import Any

from meshmirror.mirror.failures import ConnectTimeout, ProtocolViolation, SelfLoop
from meshmirror.mirror.http1 import Connection
from meshmirror.mirror.http2 import Http2Connection, Http2Exchange
from meshmirror.mirror.pool import EndpointPool
from meshmirror.mirror.request_head import encode_head, request_headers
from meshmirror.mirror.sockets import tune_mirror_connection
from meshmirror.mirror.tls import ClientContexts
from meshmirror.mirror.types import HTTP2_ONLY, MirrorEndpoint, MirrorRequest

# RFC 9110 9.2.2: a request the server may receive twice with the effect of once. Only these are
# sent again after a stale keep-alive; a POST that met one fails instead of being delivered twice.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

#: A finished or failed exchange: an HTTP/1.1 connection (one exchange at a time) or a stream.
Exchange = Connection | Http2Exchange

# create_connection(all_errors=...) appeared in 3.12; without it, several failed addresses
# collapse into a bare OSError("Multiple exceptions: ...") that cannot be classified.
_CONNECT_KWARGS: dict[str, Any] = {"all_errors": True} if sys.version_info >= (3, 12) else {}


class Progress:
    """What an exchange in progress shows its owner: its phase (for a timeout's message), the
    exchange to give up (`conn.abort()`) when it is cancelled or timed out, the request bytes
    sent, whether it was sent again, and time.time() stamps ([2]: written, [3]: first byte)."""

    __slots__ = ("phase", "conn", "sent", "resent", "times", "capture")

    def __init__(self, capture: int = 0) -> None:
        self.phase = "starting"
        self.conn: Exchange | None = None
        self.sent = 0
        self.resent = False
        self.times: list[float] | None = None
        self.capture = capture  # response body bytes to keep


class _Handshake(asyncio.Protocol):
    """Holds a new connection until its protocol is known (TLS: after ALPN) and it is known not
    to be the proxy itself; then hands it, with anything already received, to the real one."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)

    def hand_over(self, conn: asyncio.Protocol) -> None:
        transport = self.transport
        assert transport is not None
        transport.set_protocol(conn)
        conn.connection_made(transport)
        for data in self.received:
            conn.data_received(data)
        if self.eof:
            conn.eof_received()
        if self.lost is not None:
            conn.connection_lost(self.lost[0])


class UpstreamClient:
    """Exchanges with upstream endpoints; pools per endpoint."""

    def __init__(
        self,
        *,
        connect_timeout: float | None = None,
        max_idle_per_endpoint: int = 16,
        max_response_body: int = 8 * 1024 * 1024,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._max_idle = max(0, max_idle_per_endpoint)
        self._max_body = max(0, max_response_body)
        self._pools: dict[MirrorEndpoint, EndpointPool] = {}
        self._contexts = ClientContexts()
        self._own: list[tuple[str, int]] = []
        self._own_ports: frozenset[int] = frozenset()

    @property
    def max_response_body(self) -> int:
        return self._max_body

    def set_own_addresses(self, addresses: list[tuple[str, int]]) -> None:
        """The proxy's own listen addresses: a new connection whose peer is one of them is
        aborted before a byte is written (SelfLoop): a name in the config may resolve there at
        run time, after the config-time check."""
        self._own = [(h.strip("[]").lower(), p) for h, p in addresses if p]
        self._own_ports = frozenset(p for _, p in self._own)

    async def exchange(
        self, p: Progress, endpoint: MirrorEndpoint, request: MirrorRequest, *, close: bool = False
    ) -> tuple[Exchange, str]:
        """Send `request` and wait for its whole response: (the finished exchange, a detail for
        the log, usually empty). Raises what the exchange met. close=True ends an HTTP/1.1
        connection after the exchange (`Connection: close`)."""
        pool = self._pools.get(endpoint)
        if pool is None:
            pool = self._new_pool(endpoint)
        head_request = request.method == "HEAD"
        may_resend = request.method in IDEMPOTENT_METHODS
        # Framed before any connection is made: a request that cannot be framed (InvalidRequest)
        # costs the mirror nothing.
        authority = _authority(request, endpoint)
        head: bytes | None = None
        fields: list[tuple[bytes, bytes]] | None = None
        if endpoint.alpn == HTTP2_ONLY:
            fields = request_headers(request, b"https" if endpoint.tls else b"http", authority)
        else:
            head = encode_head(request, endpoint, close=close)
        while True:
            h2conn = pool.shared()
            conn = None if h2conn is not None else pool.take()
            if h2conn is None and conn is None:
                if pool.dialing is not None:
                    # An HTTP/2 connection is being made: share it, or its failure.
                    await asyncio.shield(pool.dialing)
                    continue
                p.phase = "connect"
                made = await self._dial(pool)
                if isinstance(made, Http2Connection):
                    h2conn = made
                else:
                    conn = made
            times = p.times
            if h2conn is not None:
                stream = h2conn.send(request, authority, head_request, fields)
                stream.capture = p.capture
                p.conn = stream
                p.phase = "waiting for response head"
                p.sent = stream.sent
                if times is not None:
                    times[2] = time.time()
                await stream.waiter
                if times is not None:
                    times[3] = stream.first_byte
                ex: Exchange = stream
                retry = stream.retryable or (
                    may_resend and stream.reused and stream.wire == 0 and h2conn.closed
                )
            else:
                assert conn is not None and head is not None
                conn.capture = p.capture
                p.conn = conn
                p.phase = "waiting for response head"
                p.sent = len(head) + len(request.body)
                answered = conn.send(head, request.body, head_request)
                if times is not None:
                    times[2] = time.time()  # send() wrote the head (and a small body) already
                await answered
                if times is not None:
                    times[3] = conn.first_byte
                ex = conn
                # Stale keep-alive: the server closed an idle connection as we reused it.
                retry = conn.reused and conn.wire == 0 and may_resend
            error = ex.error
            if error is None:
                break
            if retry and not p.resent:
                # Never processed: one more try on a fresh connection.
                if isinstance(ex, Connection):
                    ex.abort()
                p.conn = None
                p.resent = True
                continue
            p.phase = ex.error_phase
            raise error
        if ex.truncated:
            what = "stream reset" if isinstance(ex, Http2Exchange) else "connection closed"
            return ex, f"response body truncated at {self._max_body} bytes; {what}"
        if p.resent:
            return ex, "resent on a fresh connection after a stale keep-alive or refused stream"
        return ex, ""

    def release(self, ex: Exchange) -> None:
        """Hand a finished exchange's connection back (HTTP/1.1; a stream needs nothing)."""
        if isinstance(ex, Connection):
            ex.pool.release(ex)

    def close(self) -> None:
        """Drop every pooled connection and forget the TLS contexts."""
        pools, self._pools = self._pools, {}
        self._contexts.clear()
        for pool in pools.values():
            pool.close()

    # -- connections ------------------------------------------------------------------------

    def _new_pool(self, endpoint: MirrorEndpoint) -> EndpointPool:
        context = self._contexts.for_endpoint(endpoint) if endpoint.tls else None
        pool = self._pools[endpoint] = EndpointPool(endpoint, self._max_idle, context)
        return pool

    async def _dial(self, pool: EndpointPool) -> Connection | Http2Connection:
        """A new connection, HTTP/2 ones shared with whoever waits on `pool.dialing`."""
        endpoint = pool.endpoint
        http2 = endpoint.alpn[0] == "h2"
        if not http2:
            return await self._connect(pool)
        dialing = pool.dialing = asyncio.get_running_loop().create_future()
        try:
            made = await self._connect(pool)
        except BaseException as exc:
            if not dialing.done():
                # Those waiting share the failure (they need not retrieve it).
                if isinstance(exc, Exception):
                    dialing.set_exception(exc)
                    dialing.exception()
                else:
                    dialing.cancel()
            raise
        finally:
            if pool.dialing is dialing:
                pool.dialing = None
            if not dialing.done():
                dialing.set_result(None)
        return made

    async def _connect(self, pool: EndpointPool) -> Connection | Http2Connection:
        loop = asyncio.get_running_loop()
        endpoint = pool.endpoint
        coro = loop.create_connection(
            _Handshake,
            endpoint.host,
            endpoint.port,
            ssl=pool.ssl_context,
            server_hostname=pool.server_hostname,
            **_CONNECT_KWARGS,
        )
        connect_timeout = self._connect_timeout
        if connect_timeout is None:
            transport, handshake = await coro
        else:
            try:
                async with asyncio.timeout(connect_timeout) as deadline:
                    transport, handshake = await coro
            except TimeoutError:
                if deadline.expired():
                    raise ConnectTimeout(f"connect not done within {connect_timeout:g}s") from None
                raise
        tune_mirror_connection(transport)
        if self._own_ports:
            own = self._reaches_own(transport)
            if own is not None:
                transport.abort()
                raise SelfLoop(f"connected to this proxy's own listen address {own}")
        http2 = endpoint.alpn[0] == "h2"
        if endpoint.tls:
            ssl_object = transport.get_extra_info("ssl_object")
            chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if chosen != "h2" and endpoint.alpn == HTTP2_ONLY:
                transport.abort()
                raise ProtocolViolation(
                    f"mirror does not speak HTTP/2 (TLS ALPN chose {chosen or 'nothing'})"
                )
            http2 = chosen == "h2"
        conn: Connection | Http2Connection
        if http2:
            scheme = b"https" if endpoint.tls else b"http"
            conn = Http2Connection(pool, self._max_body, scheme)
            pool.add(conn)
        else:
            conn = Connection(pool, self._max_body)
        handshake.hand_over(conn)
        return conn

    def _reaches_own(self, transport: asyncio.BaseTransport) -> str | None:
        peer = transport.get_extra_info("peername")
        if not peer or peer[1] not in self._own_ports:
            return None
        local = transport.get_extra_info("sockname")
        peer_ip = str(peer[0]).lower()
        for host, port in self._own:
            if port != peer[1]:
                continue
            if host in ("", "0.0.0.0", "::", "*"):
                # A wildcard listener takes any local address; a connection to a local address
                # leaves from that same address (and loopback is always local).
                if (local and str(local[0]).lower() == peer_ip) or _loopback(peer_ip):
                    return f"{peer[0]}:{peer[1]}"
            elif host == peer_ip or (_loopback(host) and _loopback(peer_ip)):
                return f"{peer[0]}:{peer[1]}"
        return None


def _authority(request: MirrorRequest, endpoint: MirrorEndpoint) -> bytes:
    """The Host field the request carries (the shadow host), else the endpoint's address."""
    for name, value in request.headers:
        if name.lower() == b"host":
            return value
    host = endpoint.host
    if ":" in host:
        host = f"[{host}]"
    default = 443 if endpoint.tls else 80
    return (host if endpoint.port == default else f"{host}:{endpoint.port}").encode("idna")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
