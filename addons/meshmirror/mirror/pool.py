"""Per-endpoint pools: idle HTTP/1.1 keep-alive connections, reused last-in first-out, and the
HTTP/2 connections whose streams many exchanges share."""

from __future__ import annotations

import asyncio
import ssl

from meshmirror.mirror.http1 import Connection
from meshmirror.mirror.http2 import Http2Connection
from meshmirror.mirror.types import MirrorEndpoint


class EndpointPool:
    """The connections to one endpoint."""

    __slots__ = (
        "endpoint",
        "idle",
        "max_idle",
        "ssl_context",
        "server_hostname",
        "http2",
        "dialing",
    )

    def __init__(
        self, endpoint: MirrorEndpoint, max_idle: int, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.endpoint = endpoint
        self.idle: list[Connection] = []
        self.max_idle = max_idle
        self.ssl_context = ssl_context
        self.server_hostname = (endpoint.sni or endpoint.host) if endpoint.tls else None
        self.http2: list[Http2Connection] = []
        # An HTTP/2 connection being made: exchanges wait for it instead of opening their own.
        self.dialing: asyncio.Future[None] | None = None

    # -- HTTP/1.1 ---------------------------------------------------------------------------

    def take(self) -> Connection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            conn.idle = False
            if conn.usable():
                conn.reused = True
                return conn
        return None

    def release(self, conn: Connection) -> None:
        """Pool a finished connection, or end it: gracefully when nothing is pending, by reset
        when its stream is suspect or request bytes are still unsent, in asyncio's buffer or in
        the kernel's send queue (a mirror that answered early and stopped reading: a close
        would leave the connection and its buffers to the kernel for minutes)."""
        if conn.reusable() and len(self.idle) < self.max_idle:
            conn.idle = True
            self.idle.append(conn)
        elif conn.truncated or conn.leftover or conn.unsent():
            conn.abort()
        else:
            conn.close()

    def forget(self, conn: Connection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    # -- HTTP/2 -----------------------------------------------------------------------------

    def shared(self) -> Http2Connection | None:
        """An HTTP/2 connection with room for one more stream."""
        for conn in self.http2:
            if conn.capacity() > 0:
                return conn
        return None

    def add(self, conn: Http2Connection) -> None:
        self.http2.append(conn)
        conn.on_lost = self._lost

    def _lost(self, conn: Http2Connection) -> None:
        try:
            self.http2.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.abort()
        shared, self.http2 = self.http2, []
        for h2conn in shared:
            h2conn.abort()
