"""Tests for meshmirror.mirror.writer against real sockets on 127.0.0.1 (OS-chosen ports).

Every wait has a deadline; servers signal progress through events, never through sleeps.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshmirror.mirror import failures, http1
from meshmirror.mirror.failures import FAILURE_CLASSES
from meshmirror.mirror.sender import ProcessWriter
from meshmirror.mirror.types import CopyWriter, MirrorEndpoint, MirrorRequest, MirrorResult
from meshmirror.mirror.writer import MirrorWriter

DEADLINE = 10.0  # generous upper bound for any single wait; tests normally finish in ms


# --------------------------------------------------------------------------------------------
# Helpers: a scriptable backend and an outcome recorder


class RecordedRequest:
    def __init__(self, conn_id: int, head: bytes, body: bytes) -> None:
        self.conn_id = conn_id
        self.head = head
        self.body = body


Handler = Callable[["Backend", int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Backend:
    """asyncio server whose per-connection behaviour is a coroutine; records what arrives."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.accepted = 0
        self.closed = 0
        self.requests: list[RecordedRequest] = []
        self.changed = asyncio.Event()
        self.release = asyncio.Event()  # handlers that hold a request wait on this
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> Backend:
        self._server = await asyncio.start_server(
            self._on_conn, "127.0.0.1", 0, ssl=self.ssl_context
        )
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn_id = self.accepted
        self._writers.append(writer)
        self._notify()
        try:
            await self.handler(self, conn_id, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()
            self.closed += 1
            self._notify()

    def _notify(self) -> None:
        self.changed.set()

    async def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        async with asyncio.timeout(DEADLINE):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def stop(self) -> None:
        self.release.set()
        for w in self._writers:
            w.transport.abort()
        if self._server is not None:
            self._server.close()
            async with asyncio.timeout(DEADLINE):
                await self._server.wait_closed()


async def read_request(
    backend: Backend, conn_id: int, reader: asyncio.StreamReader
) -> RecordedRequest | None:
    """Read one request (Content-Length framing only); None on a clean EOF between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    req = RecordedRequest(conn_id, head, body)
    backend.requests.append(req)
    backend._notify()
    return req


OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def serve(response: bytes, *, delay: float = 0.0) -> Handler:
    """Keep-alive server answering every request with the same bytes."""

    async def handler(
        backend: Backend, conn_id: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        while await read_request(backend, conn_id, reader) is not None:
            if delay:
                # The server's own behaviour (a slow backend), not test synchronisation.
                await asyncio.sleep(delay)
            w.write(response)
            await w.drain()

    return handler


def serve_once_then_close(response: bytes) -> Handler:
    """Answers one request, then closes the connection (read-until-close style bodies)."""

    async def handler(
        backend: Backend, conn_id: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        if await read_request(backend, conn_id, reader) is not None:
            w.write(response)
            await w.drain()
            w.close()

    return handler


async def hold(
    backend: Backend, conn_id: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """Reads the request and never answers until released (then answers 200); ends on EOF."""
    await read_request(backend, conn_id, reader)
    eof = asyncio.ensure_future(reader.read(1))
    released = asyncio.ensure_future(backend.release.wait())
    try:
        await asyncio.wait([eof, released], return_when=asyncio.FIRST_COMPLETED)
    finally:
        eof.cancel()
        released.cancel()
    if backend.release.is_set():
        w.write(OK_RESPONSE)
        await w.drain()


class Outcomes:
    """Collects on_done results and counts calls per submit to prove exactly-once delivery."""

    def __init__(self) -> None:
        self.results: dict[int, MirrorResult] = {}
        self.duplicates = 0
        self._event = asyncio.Event()
        self._next = 0

    def callback(self) -> tuple[int, Callable[[MirrorResult], None]]:
        ident = self._next
        self._next += 1

        def on_done(result: MirrorResult) -> None:
            if ident in self.results:
                self.duplicates += 1
            self.results[ident] = result
            self._event.set()

        return ident, on_done

    async def wait(self, count: int) -> list[MirrorResult]:
        async with asyncio.timeout(DEADLINE):
            while len(self.results) < count:
                self._event.clear()
                await self._event.wait()
        return [self.results[i] for i in sorted(self.results)]


def get(target: str = "/", host: bytes = b"app-shadow") -> MirrorRequest:
    return MirrorRequest("GET", target, [(b"Host", host)], b"")


class Harness:
    def __init__(self, kind: str = "loop") -> None:
        # "loop": MirrorWriter on the test's loop; "process": ProcessWriter (a child process
        # sends). Both keep the same contract, so the same tests run on both.
        self.kind = kind
        self.backends: list[Backend] = []
        self.writers: list[CopyWriter] = []
        self.outcomes = Outcomes()
        self.accepted = 0

    async def backend(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> Backend:
        b = await Backend(handler, ssl_context).start()
        self.backends.append(b)
        return b

    def writer(self, **kwargs: float | int | None) -> CopyWriter:
        params: dict[str, float | int | None] = {"timeout": 5.0, "max_inflight": 64}
        params.update(kwargs)
        kind = ProcessWriter if self.kind == "process" else MirrorWriter
        w: CopyWriter = kind(**params)  # type: ignore[arg-type]
        self.writers.append(w)
        return w

    def submit(
        self,
        w: CopyWriter,
        endpoint: MirrorEndpoint,
        request: MirrorRequest,
        key: str = "shadow",
    ) -> bool:
        _, on_done = self.outcomes.callback()
        accepted = w.submit(key, endpoint, request, on_done)
        if accepted:
            self.accepted += 1
        return accepted

    async def one(
        self, w: CopyWriter, endpoint: MirrorEndpoint, request: MirrorRequest
    ) -> MirrorResult:
        assert self.submit(w, endpoint, request)
        return (await self.outcomes.wait(self.accepted))[-1]


@pytest.fixture(params=["loop", "process"])
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    harness = Harness(request.param)
    try:
        yield harness
        # Every accepted submit got exactly one on_done; nothing is left in flight.
        await harness.outcomes.wait(harness.accepted)
        assert harness.outcomes.duplicates == 0
        assert len(harness.outcomes.results) == harness.accepted
        for w in harness.writers:
            assert w.inflight() == 0
    finally:
        for w in harness.writers:
            w.close()
        for b in harness.backends:
            await b.stop()
        loop.set_exception_handler(previous)
    # Nothing may reach the loop's "unhandled exception" handler.
    assert errors == []


def local(backend: Backend, **kwargs: object) -> MirrorEndpoint:
    return MirrorEndpoint("127.0.0.1", backend.port, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Healthy paths


async def test_keepalive_reuses_one_connection(h: Harness) -> None:
    backend = await h.backend(serve(OK_RESPONSE))
    w = h.writer()
    for i in range(20):
        result = await h.one(w, local(backend), get(f"/n/{i}"))
        assert result.status == 200, result
        assert result.failure is None
        assert result.bytes_received == len(OK_RESPONSE)
    assert backend.accepted == 1
    assert [r.head.split(b" ")[1] for r in backend.requests] == [
        f"/n/{i}".encode() for i in range(20)
    ]


async def test_request_bytes_arrive_exactly_with_hop_by_hop_stripped(h: Harness) -> None:
    backend = await h.backend(serve(OK_RESPONSE))
    w = h.writer()
    body = bytes(range(256)) * 4096  # 1 MiB, every byte value
    headers = [
        (b"Host", b"app.example.com-shadow:8080"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Multi", b"a"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-Checksum"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"X-Hop", b"named-in-connection"),
        (b"content-length", b"999"),
        (b"x-multi", b"b"),
        (b"Authorization", b"Bearer secret"),
    ]
    result = await h.one(w, local(backend), MirrorRequest("PUT", "/p/a%20b?q=1&r", headers, body))
    assert result.status == 200, result
    expected_head = (
        b"PUT /p/a%20b?q=1&r HTTP/1.1\r\n"
        b"Host: app.example.com-shadow:8080\r\n"
        b"X-Multi: a\r\n"
        b"x-multi: b\r\n"
        b"Authorization: Bearer secret\r\n"
        b"Content-Length: 1048576\r\n"
        b"\r\n"
    )
    [req] = backend.requests
    assert req.head == expected_head
    assert req.body == body
    assert result.bytes_sent == len(expected_head) + len(body)


@pytest.mark.parametrize(
    ("method", "body", "content_length"),
    [
        pytest.param("GET", b"", None, id="get-empty-no-length"),
        pytest.param("POST", b"", b"0", id="post-empty-length-0"),
        pytest.param("PATCH", b"", b"0", id="patch-empty-length-0"),
        pytest.param("DELETE", b"xyz", b"3", id="delete-with-body"),
        pytest.param("GET", b"q", b"1", id="get-with-body"),
    ],
)
async def test_content_length_framing(
    h: Harness, method: str, body: bytes, content_length: bytes | None
) -> None:
    backend = await h.backend(serve(OK_RESPONSE))
    w = h.writer()
    result = await h.one(w, local(backend), MirrorRequest(method, "/", [(b"Host", b"s")], body))
    assert result.status == 200
    [req] = backend.requests
    lengths = [
        line.split(b":", 1)[1].strip()
        for line in req.head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ]
    assert lengths == ([content_length] if content_length is not None else [])
    assert req.body == body


async def test_missing_host_is_filled_from_endpoint(h: Harness) -> None:
    backend = await h.backend(serve(OK_RESPONSE))
    w = h.writer()
    result = await h.one(w, local(backend), MirrorRequest("GET", "/", [(b"X-A", b"1")], b""))
    assert result.status == 200
    assert backend.requests[0].head.split(b"\r\n")[1] == f"Host: 127.0.0.1:{backend.port}".encode()


async def test_chunked_response_is_consumed_and_connection_reused(h: Harness) -> None:
    response = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n"
        b"10\r\n" + b"x" * 16 + b"\r\n"
        b"0\r\nX-Trailer: t\r\n\r\n"
    )
    backend = await h.backend(serve(response))
    w = h.writer()
    for _ in range(3):
        result = await h.one(w, local(backend), get())
        assert (result.status, result.failure) == (201, None)
        assert result.bytes_received == len(response)
    assert backend.accepted == 1


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 5000, id="1.1"
        ),
        pytest.param(b"HTTP/1.0 200 OK\r\n\r\n" + b"z" * 5000, id="1.0"),
    ],
)
async def test_read_until_close_response(h: Harness, response: bytes) -> None:
    backend = await h.backend(serve_once_then_close(response))
    w = h.writer()
    for _ in range(2):
        result = await h.one(w, local(backend), get())
        assert (result.status, result.failure) == (200, None)
        assert result.bytes_received == len(response)
    assert backend.accepted == 2  # never reused: the body ended with the connection


async def test_head_request_does_not_wait_for_a_body(h: Harness) -> None:
    backend = await h.backend(serve(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"))
    w = h.writer(timeout=2.0)
    for _ in range(2):
        result = await h.one(w, local(backend), MirrorRequest("HEAD", "/", [(b"Host", b"s")], b""))
        assert (result.status, result.failure) == (200, None)
    assert backend.accepted == 1


async def test_server_connection_close_is_not_reused(h: Harness) -> None:
    response = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    backend = await h.backend(serve(response))
    w = h.writer()
    for _ in range(2):
        assert (await h.one(w, local(backend), get())).status == 200
    assert backend.accepted == 2


async def test_stale_keepalive_is_retried_once_on_a_fresh_connection(h: Harness) -> None:
    async def one_per_connection(
        backend: Backend, conn_id: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        # Answers the first request, then hangs up when a second one arrives: the classic
        # race where a server's idle timeout fires just as the client reuses the connection.
        await read_request(backend, conn_id, reader)
        w.write(OK_RESPONSE)
        await w.drain()
        await read_request(backend, conn_id, reader)

    backend = await h.backend(one_per_connection)
    w = h.writer()
    first = await h.one(w, local(backend), get())
    second = await h.one(w, local(backend), get())
    assert (first.status, second.status) == (200, 200)
    assert "resent" in second.detail and second.resent
    assert not first.resent
    assert backend.accepted == 2
    assert [r.conn_id for r in backend.requests] == [1, 1, 2]


@pytest.mark.parametrize("method", ["POST", "PATCH", "CONNECT", "LOCK"])
async def test_a_non_idempotent_copy_meeting_a_stale_keepalive_fails_without_resend(
    h: Harness, method: str
) -> None:
    async def one_per_connection(
        backend: Backend, conn_id: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        await read_request(backend, conn_id, reader)
        w.write(OK_RESPONSE)
        await w.drain()
        await read_request(backend, conn_id, reader)

    backend = await h.backend(one_per_connection)
    w = h.writer()
    assert (await h.one(w, local(backend), get())).status == 200
    copy = MirrorRequest(method, "/pay", [(b"host", b"app-shadow")], b'{"charge": 1}')
    second = await h.one(w, local(backend), copy)
    assert (second.status, second.failure, second.resent) == (None, "reset", False)
    assert backend.accepted == 1
    assert [r.conn_id for r in backend.requests] == [1, 1]


async def test_idle_connections_are_capped(h: Harness) -> None:
    gate = asyncio.Event()

    async def gated(
        backend: Backend, conn_id: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        while await read_request(backend, conn_id, reader) is not None:
            await gate.wait()
            w.write(OK_RESPONSE)

    backend = await h.backend(gated)
    w = h.writer(max_idle_per_endpoint=2)
    for _ in range(5):
        assert h.submit(w, local(backend), get())
    await backend.wait_until(lambda: len(backend.requests) == 5, "5 requests")
    gate.set()
    await h.outcomes.wait(5)
    # 5 parallel connections, only 2 kept idle: the other 3 are closed by the writer.
    await backend.wait_until(lambda: backend.closed == 3, "3 closed")
    for _ in range(2):
        assert (await h.one(w, local(backend), get())).status == 200
    assert backend.accepted == 5


# --------------------------------------------------------------------------------------------
# Failures


async def test_refused(h: Harness) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = h.writer()
    result = await h.one(w, MirrorEndpoint("127.0.0.1", port), get())
    assert (result.status, result.failure) == (None, "refused")
    assert result.bytes_sent == 0


async def test_accept_and_never_answer_times_out(h: Harness) -> None:
    backend = await h.backend(hold)
    w = h.writer(timeout=0.3)
    started = time.monotonic()
    result = await h.one(w, local(backend), get())
    elapsed = time.monotonic() - started
    assert (result.status, result.failure) == (None, "timeout")
    assert "waiting for response head" in result.detail
    assert 0.3 <= result.latency <= elapsed
    assert elapsed < 0.3 + 0.5
    await backend.wait_until(lambda: backend.closed == 1, "timed-out connection closed")


async def test_answer_slower_than_timeout(h: Harness) -> None:
    backend = await h.backend(serve(OK_RESPONSE, delay=1.0))
    w = h.writer(timeout=0.2)
    result = await h.one(w, local(backend), get())
    assert (result.status, result.failure) == (None, "timeout")
    assert result.latency < 0.2 + 0.5


async def test_timeout_while_reading_body(h: Harness) -> None:
    async def slow_body(
        backend: Backend, conn_id: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        await read_request(backend, conn_id, reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await backend.release.wait()

    backend = await h.backend(slow_body)
    w = h.writer(timeout=0.2)
    result = await h.one(w, local(backend), get())
    assert (result.status, result.failure) == (None, "timeout")
    assert "reading response body" in result.detail
    assert result.bytes_received > 0


@pytest.mark.parametrize("rst", [True, False], ids=["rst", "fin"])
async def test_connection_lost_mid_response(h: Harness, rst: bool) -> None:
    async def cut(
        backend: Backend, conn_id: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        await read_request(backend, conn_id, reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
        await w.drain()
        sock = w.get_extra_info("socket")
        if rst:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
        else:
            w.close()

    backend = await h.backend(cut)
    w = h.writer()
    result = await h.one(w, local(backend), get())
    assert (result.status, result.failure) == (None, "reset"), result


async def test_fresh_connection_closed_without_answer_is_reset_not_retried(h: Harness) -> None:
    async def drop(
        backend: Backend, conn_id: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        await read_request(backend, conn_id, reader)

    backend = await h.backend(drop)
    w = h.writer()
    result = await h.one(w, local(backend), get())
    assert result.failure == "reset"
    assert backend.accepted == 1


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 2xx OK\r\n\r\n", id="bad-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", id="bad-header"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
            id="conflicting-length",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk"
        ),
    ],
)
async def test_garbage_response_is_protocol(h: Harness, garbage: bytes) -> None:
    backend = await h.backend(serve(garbage))
    w = h.writer(timeout=2.0)
    result = await h.one(w, local(backend), get())
    assert (result.status, result.failure) == (None, "protocol"), result


async def test_huge_response_is_truncated_and_connection_dropped(h: Harness) -> None:
    size = 20 * 1024 * 1024

    async def huge(
        backend: Backend, conn_id: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        while await read_request(backend, conn_id, reader) is not None:
            w.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
            chunk = b"b" * 65536
            for _ in range(size // len(chunk)):
                w.write(chunk)
                await w.drain()

    backend = await h.backend(huge)
    limit = 256 * 1024
    w = h.writer(max_response_body=limit)
    for _ in range(2):
        result = await h.one(w, local(backend), get())
        assert (result.status, result.failure) == (200, None)
        assert "truncated" in result.detail
        assert limit < result.bytes_received < limit + 1024
    assert backend.accepted == 2


async def test_unresolvable_name_is_dns(h: Harness) -> None:
    w = h.writer()
    result = await h.one(w, MirrorEndpoint("meshmirror-test.invalid", 80), get())
    assert (result.status, result.failure) == (None, "dns"), result


async def test_crlf_in_header_is_rejected_without_leaking_the_value(h: Harness) -> None:
    backend = await h.backend(serve(OK_RESPONSE))
    w = h.writer()
    headers = [(b"Host", b"s"), (b"X-Token", b"s3cret\r\nX-Injected: 1")]
    result = await h.one(w, local(backend), MirrorRequest("GET", "/", headers, b""))
    assert result.failure == "other"
    assert "header #1" in result.detail
    assert b"s3cret" not in result.detail.encode()
    assert backend.accepted == 0


def test_failure_classes_are_documented() -> None:
    assert set(FAILURE_CLASSES) == {
        "refused",
        "timeout",
        "reset",
        "tls",
        "protocol",
        "dns",
        "other",
        "cancelled",
    }


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        pytest.param(ConnectionRefusedError(111, "refused"), "refused", id="refused"),
        pytest.param(TimeoutError(), "timeout", id="timeout"),
        pytest.param(ConnectionResetError(104, "reset"), "reset", id="reset"),
        pytest.param(BrokenPipeError(32, "pipe"), "reset", id="broken-pipe"),
        pytest.param(ssl.SSLCertVerificationError("bad cert"), "tls", id="cert"),
        pytest.param(socket.gaierror(-2, "Name or service not known"), "dns", id="gaierror"),
        pytest.param(OSError(111, "Connect call failed"), "refused", id="errno-refused"),
        pytest.param(
            ExceptionGroup("x", [OSError(99, "no v6"), ConnectionRefusedError(111, "r")]),
            "refused",
            id="group-any-refused",
        ),
        pytest.param(ValueError("boom"), "other", id="other"),
    ],
)
def test_classify(exc: BaseException, expected: str) -> None:
    failure, detail = failures.classify(exc)
    assert failure == expected
    assert detail


# --------------------------------------------------------------------------------------------
# TLS


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshmirror-test")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    yield cert_path, key_path


@pytest.fixture
def server_tls(cert_files: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert_files)
    return ctx


@pytest.mark.parametrize(
    ("sni", "trust", "expected"),
    [
        pytest.param(None, "ca", 200, id="ca-file-ip-san"),
        pytest.param("localhost", "ca", 200, id="ca-file-sni-localhost"),
        pytest.param("other.example", "ca", "tls", id="ca-file-wrong-name"),
        pytest.param(None, "system", "tls", id="system-trust-rejects-self-signed"),
        pytest.param("other.example", "insecure", 200, id="insecure-skip-verify"),
    ],
)
async def test_tls(
    h: Harness,
    server_tls: ssl.SSLContext,
    cert_files: tuple[Path, Path],
    sni: str | None,
    trust: str,
    expected: int | str,
) -> None:
    backend = await h.backend(serve(OK_RESPONSE), server_tls)
    w = h.writer()
    endpoint = local(
        backend,
        tls=True,
        sni=sni,
        ca_file=str(cert_files[0]) if trust == "ca" else None,
        insecure_skip_verify=trust == "insecure",
    )
    for _ in range(2):
        result = await h.one(w, endpoint, get())
        if isinstance(expected, int):
            assert (result.status, result.failure) == (expected, None), result
        else:
            assert (result.status, result.failure) == (None, expected), result
    if isinstance(expected, int):
        assert backend.accepted == 1  # TLS connections are pooled too


async def test_unreadable_ca_file_is_tls_failure(h: Harness, tmp_path: Path) -> None:
    w = h.writer()
    endpoint = MirrorEndpoint("127.0.0.1", 9, tls=True, ca_file=str(tmp_path / "missing.pem"))
    for _ in range(2):
        result = await h.one(w, endpoint, get())
        assert (result.status, result.failure) == (None, "tls")
        assert "ca_file" in result.detail


# --------------------------------------------------------------------------------------------
# Concurrency, drain, close, callbacks


async def test_max_inflight_rejects_without_calling_on_done(h: Harness) -> None:
    backend = await h.backend(hold)
    w = h.writer(max_inflight=2, timeout=5.0)
    assert h.submit(w, local(backend), get(), key="a")
    assert h.submit(w, local(backend), get(), key="a")

    def must_not_be_called(result: MirrorResult) -> None:
        raise AssertionError(f"on_done called for a rejected submit: {result}")

    assert not w.submit("a", local(backend), get(), must_not_be_called)
    assert w.inflight("a") == 2
    # The cap is per pool key.
    assert h.submit(w, local(backend), get(), key="b")
    assert w.inflight() == 3
    await backend.wait_until(lambda: len(backend.requests) == 3, "3 requests held")
    backend.release.set()
    await h.outcomes.wait(3)
    assert w.inflight() == 0
    # Capacity is back once copies finish.
    assert h.submit(w, local(backend), get(), key="a")


async def test_an_uncapped_writer_leaves_the_cap_to_its_caller() -> None:
    # The sender child runs uncapped: its parent already counted each copy against the cap.
    backend = await Backend(hold).start()
    outcomes = Outcomes()
    w = MirrorWriter(timeout=5.0, max_inflight=None)
    try:
        for _ in range(5):
            assert w.submit("a", local(backend), get(), outcomes.callback()[1])
        assert w.submit("b", local(backend), get(), outcomes.callback()[1])
        assert (w.inflight("a"), w.inflight("b"), w.inflight()) == (5, 1, 6)
        await backend.wait_until(lambda: len(backend.requests) == 6, "6 requests held")
        backend.release.set()
        assert {r.status for r in await outcomes.wait(6)} == {200}
        assert w.inflight() == 0
    finally:
        w.close()
        await backend.stop()


async def test_drain_completes_pending_copies(h: Harness) -> None:
    backend = await h.backend(serve(OK_RESPONSE, delay=0.1))
    w = h.writer()
    for _ in range(5):
        assert h.submit(w, local(backend), get())
    assert w.inflight() == 5
    assert await w.drain(DEADLINE) == 0
    assert w.inflight() == 0
    results = await h.outcomes.wait(5)
    assert [r.status for r in results] == [200] * 5


async def test_drain_cancels_leftovers_after_timeout(h: Harness) -> None:
    backend = await h.backend(hold)
    w = h.writer(timeout=30.0)
    for _ in range(3):
        assert h.submit(w, local(backend), get())
    await backend.wait_until(lambda: len(backend.requests) == 3, "3 requests held")
    started = time.monotonic()
    assert await w.drain(0.2) == 3
    assert time.monotonic() - started < 0.2 + 1.0
    results = await h.outcomes.wait(3)
    assert {r.failure for r in results} == {"cancelled"}
    assert w.inflight() == 0
    await backend.wait_until(lambda: backend.closed == 3, "sockets closed")


async def test_close_cancels_everything_and_leaves_no_sockets_or_tasks(h: Harness) -> None:
    held = await h.backend(hold)
    healthy = await h.backend(serve(OK_RESPONSE))
    w = h.writer(timeout=30.0)
    assert (await h.one(w, local(healthy), get())).status == 200  # leaves one idle connection
    for _ in range(3):
        assert h.submit(w, local(held), get())
    await held.wait_until(lambda: len(held.requests) == 3, "requests held")
    # Submitted with no await before close(): its task has not started (or, with an eager
    # task factory, is still connecting) and must still get exactly one on_done.
    assert h.submit(w, local(held), get())

    w.close()
    # on_done ran synchronously inside close(): exactly once, "cancelled".
    assert len(h.outcomes.results) == 5
    assert [r.failure for r in list(h.outcomes.results.values())[1:]] == ["cancelled"] * 4
    assert w.inflight() == 0

    await held.wait_until(lambda: held.closed == held.accepted, "held sockets closed")
    await healthy.wait_until(lambda: healthy.closed == 1, "idle socket closed")

    if isinstance(w, ProcessWriter):
        # The copies ran in the sender process, which close() stopped and collected.
        assert w.pid is None
        return
    async with asyncio.timeout(DEADLINE):
        while any(_is_writer_task(t) for t in asyncio.all_tasks()):
            await asyncio.sleep(0)  # yields to the loop so cancelled tasks can unwind
    assert isinstance(w, MirrorWriter)
    assert w._live == set()


def _is_writer_task(task: asyncio.Task[object]) -> bool:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", "") == "MirrorWriter._run"


async def test_on_done_exceptions_are_caught_and_logged_once(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    backend = await h.backend(serve(OK_RESPONSE))
    w = h.writer()
    calls: list[MirrorResult] = []
    done = asyncio.Event()

    def broken(result: MirrorResult) -> None:
        calls.append(result)
        done.set()
        raise RuntimeError("callback bug")

    with caplog.at_level(logging.ERROR, logger="meshmirror.writer"):
        for _ in range(3):
            done.clear()
            assert w.submit("k", local(backend), get(), broken)
            async with asyncio.timeout(DEADLINE):
                await done.wait()
    assert len(calls) == 3
    assert w.callback_errors == 3
    records = [r for r in caplog.records if r.name == "meshmirror.writer"]
    assert len(records) == 1
    assert records[0].exc_info is not None
    # The writer is still healthy afterwards.
    assert (await h.one(w, local(backend), get())).status == 200


async def test_eager_task_factory_may_call_on_done_inside_submit(h: Harness) -> None:
    eager = getattr(asyncio, "eager_task_factory", None)  # Python 3.12+
    if eager is None:
        pytest.skip("no eager task factory before Python 3.12")
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    loop.set_task_factory(eager)
    try:
        w = h.writer()
        # An invalid request fails before the first await, i.e. inside submit().
        bad = MirrorRequest("GET", "/", [(b"Host", b"a\nb")], b"")
        assert h.submit(w, MirrorEndpoint("127.0.0.1", 9), bad)
        if isinstance(w, ProcessWriter):
            # Across the pipe the answer always comes later, on this loop.
            assert len(h.outcomes.results) == 0
            assert w.inflight() == 1
            assert (await h.outcomes.wait(1))[0].failure == "other"
        else:
            assert len(h.outcomes.results) == 1
        assert w.inflight() == 0
        backend = await h.backend(serve(OK_RESPONSE))
        for _ in range(3):
            assert (await h.one(w, local(backend), get())).status == 200
        assert backend.accepted == 1
        if isinstance(w, MirrorWriter):
            assert w._live == set()
    finally:
        loop.set_task_factory(previous)


# --------------------------------------------------------------------------------------------
# Response parser, fed in every possible split


class _FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.written = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True

    def close(self) -> None:
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0


@pytest.mark.parametrize(
    ("response", "status", "reusable", "head_request"),
    [
        pytest.param(OK_RESPONSE, 200, True, False, id="content-length"),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            204,
            True,
            False,
            id="interim-then-204",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"3\r\nabc\r\n0;x=y\r\nT: 1\r\n\r\n",
            200,
            True,
            False,
            id="chunked-with-trailer",
        ),
        pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", 200, True, False, id="bare-lf"),
        pytest.param(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n", 304, True, False, id="304"
        ),
        pytest.param(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
            200,
            True,
            False,
            id="1.0-keep-alive",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", 200, True, True, id="head-request"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
            200,
            False,
            False,
            id="close",
        ),
    ],
)
async def test_parser_handles_every_split(
    response: bytes, status: int, reusable: bool, head_request: bool
) -> None:
    for split in range(len(response) + 1):
        parts = [response[:split], response[split:]] if split else [response]
        for mode in ("two-parts", "bytewise"):
            chunks = parts if mode == "two-parts" else [bytes([b]) for b in response]
            conn = http1.Connection(None, 1 << 20)  # type: ignore[arg-type]
            conn.connection_made(_FakeTransport())
            waiter = conn.send(b"GET / HTTP/1.1\r\n\r\n", b"", head_request)
            for chunk in chunks:
                if chunk:
                    conn.data_received(chunk)
            assert waiter.done(), (split, mode)
            assert conn.error is None, (split, mode, conn.error)
            assert conn.status == status
            assert conn.wire == len(response)
            assert conn.reusable() is reusable, (split, mode)
            if mode == "bytewise":
                break


# --------------------------------------------------------------------------------------------
# Opt-in response capture (for comparison and mirror flows)


async def capture_one(
    h: Harness, w: MirrorWriter, endpoint: MirrorEndpoint, capture: int
) -> MirrorResult:
    _, on_done = h.outcomes.callback()
    assert w.submit("shadow", endpoint, get(), on_done, capture=capture)
    h.accepted += 1
    return (await h.outcomes.wait(h.accepted))[-1]


CHUNKED = (
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
    b"5;ext=1\r\nhello\r\n"
    b"10\r\n" + b"x" * 16 + b"\r\n"
    b"0\r\n\r\n"
)


@pytest.mark.parametrize(
    ("response", "capture", "body", "truncated"),
    [
        pytest.param(OK_RESPONSE, 1 << 20, OK_RESPONSE.split(b"\r\n\r\n", 1)[1], False, id="len"),
        pytest.param(CHUNKED, 1 << 20, b"hello" + b"x" * 16, False, id="chunked"),
        pytest.param(CHUNKED, 7, b"helloxx", True, id="chunked-capped"),
        pytest.param(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 500,
            100,
            b"z" * 100,
            True,
            id="until-close-capped",
        ),
    ],
)
async def test_capture_keeps_headers_and_body_prefix(
    h: Harness, response: bytes, capture: int, body: bytes, truncated: bool
) -> None:
    handler = serve(response) if b"HTTP/1.1" in response[:8] else serve_once_then_close(response)
    backend = await h.backend(handler)
    w = h.writer()
    result = await capture_one(h, w, local(backend), capture)
    assert result.failure is None
    assert result.body == body[:capture]
    assert result.body_truncated is truncated
    assert result.headers is not None
    expected_head = response.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    assert [f"{n.decode()}: {v.decode()}".encode() for n, v in result.headers] == expected_head


async def test_capture_is_per_copy_on_a_reused_connection(h: Harness) -> None:
    backend = await h.backend(serve(OK_RESPONSE))
    w = h.writer()
    first = await capture_one(h, w, local(backend), 1024)
    plain = await h.one(w, local(backend), get())
    again = await capture_one(h, w, local(backend), 1024)
    assert backend.accepted == 1
    assert first.body and first.headers
    assert plain.body is None and plain.headers is None and not plain.body_truncated
    assert again.body == first.body and again.headers == first.headers


async def test_failed_copy_captures_nothing(h: Harness) -> None:
    w = h.writer()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await capture_one(h, w, MirrorEndpoint("127.0.0.1", port), 1024)
    assert result.failure is not None
    assert result.body is None and result.headers is None


async def test_interim_responses_are_bounded_in_number() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    final = b"HTTP/1.1 204 No Content\r\n\r\n"
    conn = http1.Connection(None, 1 << 20)  # type: ignore[arg-type]
    conn.connection_made(_FakeTransport())
    waiter = conn.send(b"GET / HTTP/1.1\r\n\r\n", b"", False)
    conn.data_received(interim * http1.MAX_INTERIM + final)
    assert waiter.done() and conn.error is None and conn.status == 204
    waiter = conn.send(b"GET / HTTP/1.1\r\n\r\n", b"", False)
    conn.data_received(interim * (http1.MAX_INTERIM + 1) + final)
    assert waiter.done()
    assert isinstance(conn.error, failures.ProtocolViolation)
    assert "interim" in str(conn.error)


async def test_interim_response_bytes_count_toward_the_read_cap() -> None:
    # Three 1xx heads of about 400 bytes each against a 1000-byte cap.
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: <" + b"l" * 360 + b">\r\n\r\n"
    conn = http1.Connection(None, 1000)  # type: ignore[arg-type]
    conn.connection_made(_FakeTransport())
    waiter = conn.send(b"GET / HTTP/1.1\r\n\r\n", b"", False)
    conn.data_received(interim * 3 + b"HTTP/1.1 204 No Content\r\n\r\n")
    assert waiter.done()
    assert isinstance(conn.error, failures.ProtocolViolation)
    assert "bytes" in str(conn.error)


# --------------------------------------------------------------------------------------------
# The run-time loop guard: a connection that reached the proxy's own listen address


@pytest.mark.parametrize(
    ("own_host", "endpoint_host"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "localhost"),  # a name, resolved at connect time
        ("", "127.0.0.1"),  # a wildcard listener
        ("0.0.0.0", "localhost"),
    ],
)
async def test_a_connection_to_the_proxys_own_address_is_not_used(
    h: Harness, own_host: str, endpoint_host: str
) -> None:
    backend = await h.backend(serve(OK_RESPONSE))  # stands for the proxy's own listener
    w = h.writer()
    w.set_own_addresses([(own_host, backend.port)])
    result = await h.one(w, MirrorEndpoint(endpoint_host, backend.port), get())
    assert (result.status, result.failure) == (None, failures.SELF_LOOP)
    assert "own listen address" in result.detail
    await asyncio.sleep(0.1)
    assert backend.requests == []  # aborted before a byte of the copy was written


async def test_other_ports_of_the_same_host_are_not_the_proxy(h: Harness) -> None:
    backend = await h.backend(serve(OK_RESPONSE))
    w = h.writer()
    w.set_own_addresses([("127.0.0.1", backend.port + 1), ("", backend.port + 2)])
    assert (await h.one(w, local(backend), get())).status == 200
