"""Per-endpoint pools of idle keep-alive connections."""

from __future__ import annotations

import ssl

from meshmirror.mirror.http1 import Connection
from meshmirror.mirror.types import MirrorEndpoint


class IdlePool:
    """Idle keep-alive connections to one endpoint, reused last-in first-out."""

    __slots__ = ("endpoint", "idle", "max_idle", "ssl_context", "server_hostname")

    def __init__(
        self, endpoint: MirrorEndpoint, max_idle: int, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.endpoint = endpoint
        self.idle: list[Connection] = []
        self.max_idle = max_idle
        self.ssl_context = ssl_context
        self.server_hostname = (endpoint.sni or endpoint.host) if endpoint.tls else None

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
        """Pool a finished connection, or end it: gracefully when nothing is pending, by abort
        when its stream is suspect or request bytes are still unsent (a mirror that answered
        early and stopped reading: asyncio's close() would wait for that buffer forever)."""
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

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.abort()
