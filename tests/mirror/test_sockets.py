"""meshmirror.mirror.sockets: the options of the sender's connections to mirrors, on real
sockets on 127.0.0.1 (and a Unix socket, which is left alone)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from meshmirror.mirror.sockets import tune_mirror_connection
from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest, MirrorResult
from meshmirror.mirror.writer import MirrorWriter


class Answering:
    """A server that answers one request per connection and keeps it open until the client
    closes; `stop()` waits for every connection's handler to end."""

    def __init__(self) -> None:
        self.handlers: list[asyncio.Task[None]] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await reader.read()  # until the client closes
        finally:
            writer.close()
            await writer.wait_closed()

    async def stop(self, server: asyncio.Server) -> None:
        server.close()
        await asyncio.wait_for(asyncio.gather(*self.handlers, return_exceptions=True), 10)
        await server.wait_closed()


def _nodelay(transport: asyncio.BaseTransport) -> int:
    sock = transport.get_extra_info("socket")
    value: int = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    return value


async def _exchange(
    opened: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> asyncio.StreamWriter:
    """One request and its answer (so the server's handler runs); the client's writer."""
    reader, writer = opened
    writer.write(b"GET / HTTP/1.1\r\nHost: m\r\n\r\n")
    assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
    return writer


async def test_tcp_nodelay_is_turned_on() -> None:
    answering = Answering()
    server = await asyncio.start_server(answering, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await _exchange(await asyncio.open_connection("127.0.0.1", port))
    try:
        # asyncio turns it on for its own transports; a transport without it gets it here.
        client.transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 0
        )
        assert _nodelay(client.transport) == 0
        tune_mirror_connection(client.transport)
        assert _nodelay(client.transport) != 0
    finally:
        client.close()
        await answering.stop(server)


async def test_a_unix_socket_is_left_alone(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    answering = Answering()
    server = await asyncio.start_unix_server(answering, path)
    client = await _exchange(await asyncio.open_unix_connection(path))
    try:
        tune_mirror_connection(client.transport)  # no TCP option on it, and no error
    finally:
        client.close()
        await answering.stop(server)


async def test_the_writers_connections_have_tcp_nodelay() -> None:
    answering = Answering()
    server = await asyncio.start_server(answering, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    endpoint = MirrorEndpoint("127.0.0.1", port)
    writer = MirrorWriter(timeout=5.0, max_inflight=4)
    done: asyncio.Future[MirrorResult] = asyncio.get_running_loop().create_future()
    request = MirrorRequest("POST", "/", [(b"host", b"m")], b"x" * 100_000)
    try:
        assert writer.submit("c", endpoint, request, done.set_result)
        result = await asyncio.wait_for(done, 10)
        assert result.status == 200, result
        (conn,) = writer._client._pools[endpoint].idle
        assert conn.transport is not None and _nodelay(conn.transport) != 0
    finally:
        writer.close()
        await answering.stop(server)
