"""`mirror_metrics=HOST:PORT`: GET /metrics in Prometheus's text format, served on mitmproxy's
event loop (the exposition is built from the counters at scrape time: no thread, no lock).

Anything but `GET /metrics` gets 404; a client gets one response and the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from meshmirror.hosts import split_host_port
from meshmirror.outcomes.metrics import CONTENT_TYPE

log = logging.getLogger("meshmirror")

_READ_LIMIT = 16 * 1024
_READ_TIMEOUT = 5.0


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9464`); ValueError with the reason."""
    address = split_host_port(text)
    if address is None or not address[0]:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9464")
    return address


class MetricsServer:
    def __init__(self, render: Callable[[], bytes]) -> None:
        self.render = render
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, host, port)
        sock = self.server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        line = head[: min(len(head), _READ_LIMIT)].split(b"\r\n", 1)[0].split()
        if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
            try:
                body = self.render()
            except Exception:
                log.exception("meshmirror: building the metrics failed")
                status, body, ctype = b"500 Internal Server Error", b"error\n", b"text/plain"
            else:
                status, ctype = b"200 OK", CONTENT_TYPE.encode()
        else:
            status, body, ctype = b"404 Not Found", b"only /metrics here\n", b"text/plain"
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: "
            + ctype
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()
