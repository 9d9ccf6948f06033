"""http1.Connection: the HTTP/1.1 response parser and its connection bookkeeping, driven through a
fake transport: framing, keep-alive, violations, limits, capture, gRPC status, connection loss;
and what is still unsent, on a real socket on 127.0.0.1 (the kernel's send queue)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import ssl
import struct
import sys
import termios
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from meshmirror.mirror import http1
from meshmirror.mirror.failures import ClosedEarly, ProtocolViolation
from meshmirror.mirror.types import CapturedResponse

REQUEST = b"GET / HTTP/1.1\r\nHost: m\r\n\r\n"


class FakeTransport(asyncio.Transport):
    def __init__(self, buffered: int = 0) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False
        self.aborted = False
        self.closed = False
        self.buffered = buffered

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted = self.closing = True

    def close(self) -> None:
        self.closed = self.closing = True

    def get_write_buffer_size(self) -> int:
        return self.buffered


class Owner:
    def __init__(self) -> None:
        self.forgotten: list[http1.Connection] = []

    def release(self, conn: http1.Connection) -> None:
        raise AssertionError("the connection never releases itself")

    def forget(self, conn: http1.Connection) -> None:
        self.forgotten.append(conn)


def connect(limit: int = 1 << 20) -> tuple[http1.Connection, FakeTransport, Owner]:
    owner = Owner()
    conn = http1.Connection(owner, limit)
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport, owner


def feed(conn: http1.Connection, chunks: Sequence[bytes]) -> None:
    for chunk in chunks:
        if chunk:
            conn.data_received(chunk)


def splits(response: bytes) -> list[list[bytes]]:
    """The response whole, in every split into two parts, and byte by byte."""
    out = [[response]]
    out += [[response[:i], response[i:]] for i in range(1, len(response))]
    out.append([bytes([b]) for b in response])
    return out


def head(*lines: str, version: str = "HTTP/1.1 200 OK") -> bytes:
    return ("\r\n".join([version, *lines]) + "\r\n\r\n").encode()


# --- framing and keep-alive --------------------------------------------------------------------

CHUNKED_BODY = b"3\r\nabc\r\nA;ext=1\r\n0123456789\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    ("response", "status", "reusable"),
    [
        pytest.param(head("Content-Length: 3") + b"abc", 200, True, id="length"),
        pytest.param(head("Content-Length: 0"), 200, True, id="zero-length-keep-alive"),
        pytest.param(head("content-LENGTH: 2") + b"ok", 200, True, id="names-any-case"),
        pytest.param(head("Content-Length:   2  ") + b"ok", 200, True, id="length-whitespace"),
        pytest.param(head("Content-Length: 2, 2") + b"ok", 200, True, id="length-list-agrees"),
        pytest.param(
            head("Content-Length: 2", "Content-Length: 2") + b"ok", 200, True, id="length-twice"
        ),
        pytest.param(
            head("Content-Length: 1", version="HTTP/1.1 404") + b"x", 404, True, id="no-reason"
        ),
        pytest.param(
            head("X-A: 1", "  folded", "\tfolded", "Content-Length: 1") + b"x",
            200,
            True,
            id="obs-fold-ignored",
        ),
        pytest.param(
            head("Content-Length: 1", version="HTTP/1.0 200 OK") + b"x", 200, False, id="1.0-closes"
        ),
        pytest.param(
            head("Connection: Keep-Alive", "Content-Length: 1", version="HTTP/1.0 200 OK") + b"x",
            200,
            True,
            id="1.0-keep-alive",
        ),
        pytest.param(
            head("Connection: keep-alive", "Content-Length: 1") + b"x",
            200,
            True,
            id="1.1-keep-alive",
        ),
        pytest.param(head("Connection: close", "Content-Length: 1") + b"x", 200, False, id="close"),
        pytest.param(
            head("Connection: upgrade, CLOSE", "Content-Length: 1") + b"x",
            200,
            False,
            id="close-among-tokens",
        ),
        pytest.param(
            head("Connection: keep-alive", "Connection: close", "Content-Length: 1") + b"x",
            200,
            False,
            id="repeated-connection-close-last",
        ),
        pytest.param(
            head(
                "Connection: close",
                "Connection: keep-alive",
                "Content-Length: 1",
                version="HTTP/1.0 200 OK",
            )
            + b"x",
            200,
            False,
            id="repeated-connection-close-first",
        ),
        pytest.param(head("Transfer-Encoding: chunked") + CHUNKED_BODY, 200, True, id="chunked"),
        pytest.param(
            head("Transfer-Encoding: gzip, CHUNKED") + CHUNKED_BODY, 200, True, id="chunked-last"
        ),
        pytest.param(
            head("Transfer-Encoding: chunked") + b"3\nabc\n0\nX-T: 1\n\n",
            200,
            True,
            id="chunked-bare-lf-and-trailer",
        ),
        pytest.param(
            head("Transfer-Encoding: chunked") + b"3 ; a=b\r\nabc\r\n000\r\n\r\n",
            200,
            True,
            id="chunk-size-padding",
        ),
        pytest.param(
            head("Transfer-Encoding: chunked", "Content-Length: 5") + CHUNKED_BODY,
            200,
            False,
            id="chunked-and-length-closes",
        ),
        pytest.param(
            head("Content-Length: 9", version="HTTP/1.1 204 No Content"), 204, True, id="204"
        ),
        pytest.param(
            head("Content-Length: 9", version="HTTP/1.1 304 Not Modified"), 304, True, id="304"
        ),
        pytest.param(
            head(version="HTTP/1.1 100 Continue") + head("Content-Length: 1") + b"x",
            200,
            True,
            id="interim-then-final",
        ),
        pytest.param(
            head("Accept-Charset: utf-8", "Content-Length: 1") + b"x",
            200,
            True,
            id="same-length-name-is-not-content-length",
        ),
        pytest.param(
            head("X-Forwarded-Proto: https", "Content-Length: 1") + b"x",
            200,
            True,
            id="same-length-name-is-not-transfer-encoding",
        ),
        pytest.param(
            head("Set-Cookie: close", "Content-Length: 1") + b"x",
            200,
            True,
            id="same-length-name-is-not-connection",
        ),
        pytest.param(
            head("Connection: upgrade,close", "Content-Length: 1") + b"x",
            200,
            False,
            id="close-in-a-list-without-spaces",
        ),
        pytest.param(
            head("Connection: upgrade", "Content-Length: 1", version="HTTP/1.0 200 OK") + b"x",
            200,
            False,
            id="1.0-other-token-closes",
        ),
        pytest.param(
            head("Transfer-Encoding: gzip,chunked") + CHUNKED_BODY,
            200,
            True,
            id="chunked-last-without-spaces",
        ),
        pytest.param(
            head("Transfer-Encoding: gzip, deflate, chunked") + CHUNKED_BODY,
            200,
            True,
            id="chunked-after-two-codings",
        ),
        pytest.param(
            head("Transfer-Encoding: chunked") + b"3;a=1;b=2\r\nabc\r\n0\r\n\r\n",
            200,
            True,
            id="chunk-extensions",
        ),
        pytest.param(
            head("Transfer-Encoding: chunked") + b"20\r\n" + b"y" * 32 + b"\r\n0\r\n\r\n",
            200,
            True,
            id="chunk-size-is-hex",
        ),
        pytest.param(b"HTTP/1.1 204\r\nX: 1\n\n", 204, True, id="bare-lf-head-cr-after-status"),
        pytest.param(
            b"HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\nContent-Length: 1\n\nx",
            200,
            True,
            id="bare-lf-interim-then-final",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\nContent-Length: 6\n\na\n\nb\n\n",
            200,
            True,
            id="bare-lf-head-ends-at-the-first-blank-line",
        ),
        pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 200, True, id="bare-lf-head"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\nok", 200, True, id="mixed-cr-lf"),
    ],
)
async def test_a_complete_response_ends_the_exchange(
    response: bytes, status: int, reusable: bool
) -> None:
    for chunks in splits(response):
        conn, transport, _ = connect()
        waiter = conn.send(REQUEST, b"", False)
        feed(conn, chunks)
        where = [len(c) for c in chunks]
        assert waiter.done(), where
        assert conn.error is None, (where, conn.error)
        assert (conn.status, conn.wire, conn.reusable()) == (status, len(response), reusable), where
        assert not conn.leftover and not conn.truncated and not transport.closing
        assert conn.phase() == "idle"


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(head() + b"body until close", id="no-length"),
        pytest.param(head("Transfer-Encoding: gzip") + b"body until close", id="not-chunked"),
        pytest.param(head("Transfer-Encoding: chunked, gzip") + b"3\r\nabc", id="chunked-not-last"),
        pytest.param(
            head("Connection: keep-alive", version="HTTP/1.0 200 OK") + b"xyz",
            id="1.0-keep-alive-without-length",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\n\rContent-Length: 1\n\nabc", id="cr-before-a-name-is-no-length"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\nTransfer-Encoding: chunkedX\n\nabc",
            id="bare-lf-coding-that-only-starts-with-chunked",
        ),
    ],
)
@pytest.mark.parametrize("end", ["eof", "lost", "tls-eof"])
async def test_a_body_without_framing_ends_with_the_connection(response: bytes, end: str) -> None:
    crlf, lf = response.find(b"\r\n\r\n"), response.find(b"\n\n")
    body = len(response) - (crlf + 4 if crlf != -1 else lf + 2)
    for chunks in splits(response):
        conn, _, _ = connect(limit=body)  # exactly the body: not truncated
        waiter = conn.send(REQUEST, b"", False)
        feed(conn, chunks)
        assert not waiter.done()
        assert conn.phase() == "reading response body"
        if end == "eof":
            assert conn.eof_received() is False
        else:
            conn.connection_lost(None if end == "lost" else ssl.SSLEOFError())
        assert waiter.done() and conn.error is None
        assert (conn.status, conn.wire, conn.keep_alive) == (200, len(response), False)
        assert not conn.reusable() and not conn.truncated


async def test_a_head_request_has_no_body_whatever_the_length() -> None:
    response = head("Content-Length: 50")
    for chunks in splits(response):
        conn, _, _ = connect()
        waiter = conn.send(REQUEST, b"", True)
        feed(conn, chunks)
        assert waiter.done() and conn.error is None and conn.reusable()
    conn, _, _ = connect()
    conn.send(REQUEST, b"", False)
    feed(conn, [response])
    assert conn.phase() == "reading response body"


async def test_a_connection_carries_one_exchange_after_another() -> None:
    conn, transport, _ = connect()
    first = conn.send(REQUEST, b"", False)
    feed(conn, [head("Content-Length: 3", version="HTTP/1.1 201 Created") + b"abc"])
    assert first.done() and conn.status == 201
    second = conn.send(REQUEST, b"", True)
    assert not second.done() and conn.status == 0 and conn.wire == 0
    assert conn.phase() == "waiting for response head"
    feed(conn, [head("Content-Length: 7", version="HTTP/1.1 404 Not Found")])
    assert second.done() and (conn.status, conn.error) == (404, None) and conn.reusable()
    assert transport.writes == [REQUEST, REQUEST]


async def test_the_first_response_byte_is_stamped_once_per_exchange() -> None:
    conn, _, _ = connect()
    conn.send(REQUEST, b"", False)
    assert conn.first_byte == 0.0
    before = time.time()
    feed(conn, [b"HTTP/1.1 200 OK\r\n"])
    stamped = conn.first_byte
    assert before <= stamped <= time.time()
    time.sleep(0.002)
    feed(conn, [b"Content-Length: 0\r\n\r\n"])
    assert conn.first_byte == stamped  # later bytes do not move it
    conn.send(REQUEST, b"", False)
    assert conn.first_byte == 0.0  # the next exchange starts unstamped


async def test_each_exchange_starts_without_the_last_ones_error_or_limits() -> None:
    conn, transport, _ = connect(limit=4)
    conn.send(REQUEST, b"", False)
    feed(conn, [head(version="HTTP/1.1 100 Continue") + b"HTTP/1.1 abc\r\n\r\n"])
    assert conn.error is not None and transport.aborted
    transport.closing = False  # as if the transport had survived: only the state is checked
    waiter = conn.send(REQUEST, b"", False)
    assert conn.error is None and not waiter.done()
    feed(conn, [head("Content-Length: 4") + b"abcd"])
    assert waiter.done() and conn.error is None and not conn.truncated


# --- protocol violations -----------------------------------------------------------------------


STATUS = "malformed status line"
HEADER = "malformed header line"
LENGTH = "malformed Content-Length"
CONFLICT = "conflicting Content-Length"
CHUNK = "malformed chunk size"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        pytest.param(
            head(version="HTTP/1.1 101 Switching Protocols"),
            "unexpected 101 Switching Protocols",
            id="101",
        ),
        pytest.param(head(version="HTTP/2 200 OK"), STATUS, id="version-2"),
        pytest.param(head(version="http/1.1 200 OK"), STATUS, id="version-lower-case"),
        pytest.param(head(version="HTTP/1.1 20"), STATUS, id="two-digits"),
        pytest.param(head(version="HTTP/1.1 2000"), STATUS, id="four-digits"),
        pytest.param(head(version="HTTP/1.1 200OK"), STATUS, id="no-space-before-reason"),
        pytest.param(head(version="HTTP/1.1 2x0 OK"), STATUS, id="not-digits"),
        pytest.param(head(version="HTTP/1.1"), STATUS, id="no-status"),
        pytest.param(head("Content-Length 3"), HEADER, id="no-colon"),
        pytest.param(head(": 3"), HEADER, id="empty-name"),
        pytest.param(head("Content-Length : 3"), HEADER, id="space-before-colon"),
        pytest.param(head("Content-Length\t: 3"), HEADER, id="tab-before-colon"),
        pytest.param(head("Content-Length: abc"), LENGTH, id="length-word"),
        pytest.param(head("Content-Length: -1"), LENGTH, id="length-negative"),
        pytest.param(head("Content-Length: "), LENGTH, id="length-empty"),
        pytest.param(head("Content-Length: 3,"), LENGTH, id="length-list-gap"),
        pytest.param(head("Content-Length: 3, 4"), CONFLICT, id="length-list-conflict"),
        pytest.param(
            head("Content-Length: 3", "Content-Length: 4"),
            CONFLICT,
            id="length-twice-conflict",
        ),
        pytest.param(
            head("Transfer-Encoding: chunked") + b"zz\r\n", CHUNK, id="chunk-size-not-hex"
        ),
        pytest.param(head("Transfer-Encoding: chunked") + b";x\r\n", CHUNK, id="chunk-size-empty"),
        pytest.param(
            head("Transfer-Encoding: chunked") + b"-1\r\n", CHUNK, id="chunk-size-negative"
        ),
        pytest.param(
            head("Transfer-Encoding: chunked") + b"3\r\nabcd\r\n",
            "missing CRLF after chunk data",
            id="chunk-longer-than-its-size",
        ),
        pytest.param(
            head("Transfer-Encoding: chunked") + b"1X\r\n", CHUNK, id="chunk-size-trailing-x"
        ),
        pytest.param(head("Content-Length: 1:2"), LENGTH, id="length-with-colon"),
        pytest.param(b"\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", STATUS, id="empty-head"),
        pytest.param(b"\n\nHTTP/1.1 200 OK\n\n", STATUS, id="empty-bare-lf-head"),
        pytest.param(b"HTTP/1.1 200X\nContent-Length: 0\n\n", STATUS, id="bare-lf-200x"),
    ],
)
async def test_a_malformed_response_is_a_protocol_violation(response: bytes, message: str) -> None:
    for chunks in splits(response):
        conn, transport, _ = connect()
        waiter = conn.send(REQUEST, b"", False)
        feed(conn, chunks)
        assert waiter.done()
        assert isinstance(conn.error, ProtocolViolation), [len(c) for c in chunks]
        assert str(conn.error) == message
        assert transport.aborted and not conn.reusable()


@pytest.mark.parametrize(
    ("response", "phase", "message"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX: " + b"x" * (64 * 1024),
            "reading response head",
            "response head too large",
            id="head-too-large",
        ),
        pytest.param(
            head("Transfer-Encoding: chunked") + b"1;" + b"e" * (8 * 1024),
            "reading response body",
            "chunk framing line too long",
            id="chunk-line-too-long",
        ),
    ],
)
async def test_unbounded_framing_is_refused(response: bytes, phase: str, message: str) -> None:
    conn, transport, _ = connect()
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [response[i : i + 1000] for i in range(0, len(response), 1000)])
    assert waiter.done() and isinstance(conn.error, ProtocolViolation)
    assert str(conn.error) == message
    assert conn.error_phase == phase and transport.aborted


async def test_framing_just_inside_the_bounds_is_accepted() -> None:
    conn, _, _ = connect()
    waiter = conn.send(REQUEST, b"", False)
    filler = b"x" * (64 * 1024 - len(b"HTTP/1.1 200 OK\r\nX: \r\nContent-Length: 0"))
    feed(conn, [b"HTTP/1.1 200 OK\r\nX: " + filler + b"\r\nContent-Length: 0\r\n\r\n"])
    assert waiter.done() and conn.error is None
    conn, _, _ = connect()
    waiter = conn.send(REQUEST, b"", False)
    line = b"1;" + b"e" * (8 * 1024 - 2)
    feed(conn, [head("Transfer-Encoding: chunked"), line, b"\r\nx\r\n0\r\n\r\n"])
    assert waiter.done() and conn.error is None


# --- interim responses ------------------------------------------------------------------------


async def test_interim_responses_are_bounded_in_number() -> None:
    interim = head(version="HTTP/1.1 100 Continue")
    final = head(version="HTTP/1.1 204 No Content")
    conn, _, _ = connect()
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [interim * http1.MAX_INTERIM + final])
    assert waiter.done() and conn.error is None and conn.status == 204
    assert conn.wire == len(interim) * http1.MAX_INTERIM + len(final)
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [interim * (http1.MAX_INTERIM + 1)])
    assert waiter.done() and isinstance(conn.error, ProtocolViolation)
    assert str(conn.error) == f"more than {http1.MAX_INTERIM} interim (1xx) responses"


async def test_interim_bytes_count_toward_the_cap_but_not_against_the_final_body() -> None:
    interim = head("Link: </a>", version="HTTP/1.1 103 Early Hints")
    body_head = head("Content-Length: 90")
    conn, _, _ = connect(limit=100)
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [interim, body_head, b"b" * 90])
    assert waiter.done() and conn.error is None and not conn.truncated
    conn, _, _ = connect(limit=len(interim) - 5)  # the 1xx head itself is counted
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [interim])
    assert waiter.done() and isinstance(conn.error, ProtocolViolation)
    assert str(conn.error) == f"interim (1xx) responses over {len(interim) - 5} bytes"
    conn, _, _ = connect(limit=len(interim) - 4)  # exactly at the cap is still allowed
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [interim])
    assert not waiter.done()


# --- limits and stray bytes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "limit", "truncated"),
    [
        pytest.param(head("Content-Length: 20") + b"b" * 20, 20, False, id="length-at-limit"),
        pytest.param(head("Content-Length: 20") + b"b" * 20, 19, True, id="length-over-limit"),
        pytest.param(
            head("Transfer-Encoding: chunked") + b"14\r\n" + b"b" * 20 + b"\r\n0\r\n\r\n",
            19,
            True,
            id="chunked-over-limit",
        ),
        pytest.param(
            head("Transfer-Encoding: chunked")
            + b"a\r\n"
            + b"b" * 10
            + b"\r\na\r\n"
            + b"c" * 10
            + b"\r\n0\r\n\r\n",
            20,
            False,
            id="chunked-at-limit",
        ),
    ],
)
async def test_a_body_over_the_limit_is_truncated_and_the_connection_aborted(
    response: bytes, limit: int, truncated: bool
) -> None:
    conn, transport, _ = connect(limit)
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [response])
    assert waiter.done() and conn.error is None and conn.status == 200
    assert conn.truncated is truncated and transport.aborted is truncated
    if truncated:
        # Only the bytes read count: the rest dies with the connection.
        assert conn.wire == response.index(b"b") + limit
        assert not conn.reusable()
    else:
        assert conn.wire == len(response) and conn.reusable()


async def test_a_body_until_close_over_the_limit_is_truncated() -> None:
    conn, transport, _ = connect(limit=10)
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [head(), b"b" * 6, b"b" * 6])
    assert waiter.done() and conn.truncated and transport.aborted
    assert conn.wire == len(head()) + 10


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(head("Content-Length: 1") + b"x", id="after-a-body"),
        pytest.param(head(version="HTTP/1.1 204 No Content"), id="after-no-body"),
        pytest.param(head("Transfer-Encoding: chunked") + b"0\r\n\r\n", id="after-chunks"),
    ],
)
async def test_bytes_beyond_the_response_make_the_connection_suspect(response: bytes) -> None:
    conn, transport, _ = connect()
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [response + b"HTTP/1.1 200 OK\r\n"])
    assert waiter.done() and conn.error is None
    assert conn.leftover and conn.wire == len(response) and not conn.reusable()
    conn, transport, _ = connect()
    conn.send(REQUEST, b"", False)
    feed(conn, [response, b"late"])
    assert conn.leftover and transport.aborted and conn.error is None


async def test_bytes_nobody_asked_for_abort_an_idle_connection() -> None:
    conn, transport, _ = connect()
    conn.data_received(b"HTTP/1.1 200 OK\r\n\r\n")
    assert conn.leftover and transport.aborted


# --- connection loss ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "phase"),
    [
        pytest.param(b"", "waiting for response head", id="before-any-byte"),
        pytest.param(b"HTTP/1.1 200", "reading response head", id="in-the-head"),
        pytest.param(head("Content-Length: 5") + b"ab", "reading response body", id="in-the-body"),
        pytest.param(
            head("Transfer-Encoding: chunked") + b"5\r\nab",
            "reading response body",
            id="in-a-chunk",
        ),
    ],
)
async def test_a_connection_lost_mid_exchange_fails_it(received: bytes, phase: str) -> None:
    conn, _, _ = connect()
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [received])
    assert conn.phase() == phase
    conn.eof_received()
    assert not waiter.done()
    conn.connection_lost(None)
    assert waiter.done() and conn.closed
    assert isinstance(conn.error, ClosedEarly) and str(conn.error) == phase
    assert conn.error_phase == phase and conn.phase() == "idle"


async def test_a_transport_error_is_reported_as_it_is() -> None:
    conn, _, _ = connect()
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [head(), b"partial"])
    error = ConnectionResetError("reset")
    conn.connection_lost(error)
    assert waiter.done() and conn.error is error
    assert conn.error_phase == "reading response body"


async def test_losing_an_idle_connection_is_not_an_error_and_leaves_the_pool() -> None:
    conn, _, owner = connect()
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [head("Content-Length: 0")])
    conn.idle = True
    conn.connection_lost(None)
    assert waiter.done() and conn.error is None and conn.closed
    assert owner.forgotten == [conn] and not conn.idle
    assert not conn.usable() and not conn.reusable() and conn.unsent() == 0
    busy, _, owner = connect()
    busy.connection_lost(None)
    assert owner.forgotten == [] and busy.error is None


# --- sending -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "writes"),
    [
        pytest.param(b"", [REQUEST], id="no-body"),
        pytest.param(b"b" * 10, [REQUEST + b"b" * 10], id="small-body-one-write"),
        pytest.param(b"b" * 65536, [REQUEST + b"b" * 65536], id="64k-one-write"),
        pytest.param(b"b" * 65537, [REQUEST, b"b" * 65537], id="larger-two-writes"),
    ],
)
async def test_the_request_is_written_in_as_few_writes_as_it_can(
    body: bytes, writes: list[bytes]
) -> None:
    conn, transport, _ = connect()
    conn.send(REQUEST, body, False)
    assert transport.writes == writes


@pytest.mark.parametrize("how", ["closing", "closed"])
async def test_a_connection_lost_before_use_fails_at_once(how: str) -> None:
    conn, transport, _ = connect()
    if how == "closing":
        transport.closing = True
    else:
        conn.closed = True
    waiter = conn.send(REQUEST, b"", False)
    assert waiter.done() and transport.writes == []
    assert isinstance(conn.error, ClosedEarly)
    assert str(conn.error) == "waiting for response head"


async def test_usable_reusable_and_unsent_follow_the_transport() -> None:
    conn, transport, _ = connect()
    assert conn.usable() and conn.phase() == "idle"
    conn.send(REQUEST, b"", False)
    feed(conn, [head("Content-Length: 0")])
    assert conn.reusable()
    transport.buffered = 7
    assert not conn.reusable() and conn.unsent() == 7 and conn.usable()
    transport.buffered = 0
    transport.closing = True
    assert not conn.reusable() and not conn.usable()
    unattached = http1.Connection(Owner(), 10)
    assert not unattached.usable() and unattached.unsent() == 0
    unattached.abort()
    unattached.close()


@pytest.mark.parametrize("method", ["abort", "close"])
async def test_abort_and_close_reach_the_transport_only_while_open(method: str) -> None:
    conn, transport, _ = connect()
    getattr(conn, method)()
    assert (transport.aborted, transport.closed) == (method == "abort", method == "close")
    conn, transport, _ = connect()
    conn.connection_lost(None)
    getattr(conn, method)()
    assert not transport.aborted and not transport.closed


# --- capture -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "capture", "status", "reason", "fields", "body", "truncated"),
    [
        pytest.param(
            head("Content-Type: text/plain", "X-A:  spaced  ", "Content-Length: 5") + b"hello",
            1 << 20,
            200,
            b"OK",
            ((b"Content-Type", b"text/plain"), (b"X-A", b"spaced"), (b"Content-Length", b"5")),
            b"hello",
            False,
            id="whole",
        ),
        pytest.param(
            head("Content-Length: 5", version="HTTP/1.1 404 Not Found Here") + b"hello",
            3,
            404,
            b"Not Found Here",
            ((b"Content-Length", b"5"),),
            b"hel",
            True,
            id="prefix",
        ),
        pytest.param(
            head("Transfer-Encoding: chunked", "X-B: 1", "  fold") + CHUNKED_BODY,
            1 << 20,
            200,
            b"OK",
            ((b"Transfer-Encoding", b"chunked"), (b"X-B", b"1")),
            b"abc0123456789",
            False,
            id="chunked-body-without-framing",
        ),
        pytest.param(
            head(version="HTTP/1.1 100 Continue")
            + head("Content-Length: 0", version="HTTP/1.1 201"),
            1 << 20,
            201,
            b"",
            ((b"Content-Length", b"0"),),
            b"",
            False,
            id="final-response-after-interim",
        ),
        pytest.param(
            b"HTTP/1.1 202 Accepted\r\nA: 1\nContent-Length: 1\n\nz",
            1 << 20,
            202,
            b"Accepted",
            ((b"A", b"1"), (b"Content-Length", b"1")),
            b"z",
            False,
            id="bare-lf",
        ),
    ],
)
async def test_a_captured_response_keeps_status_reason_fields_and_body(
    response: bytes,
    capture: int,
    status: int,
    reason: bytes,
    fields: tuple[tuple[bytes, bytes], ...],
    body: bytes,
    truncated: bool,
) -> None:
    for chunks in splits(response):
        conn, _, _ = connect()
        conn.capture = capture
        waiter = conn.send(REQUEST, b"", False)
        feed(conn, chunks)
        assert waiter.done() and conn.error is None
        got = http1.take_response(conn)
        assert got == http1.CapturedResponse(status, reason, fields, body, truncated)
        assert (conn.capture, conn.captured, conn.head_raw) == (0, bytearray(), None)


async def test_capture_is_per_exchange() -> None:
    conn, _, _ = connect()
    conn.capture = 100
    conn.send(REQUEST, b"", False)
    feed(conn, [head("Content-Length: 2") + b"ab"])
    conn.send(REQUEST, b"", False)  # still capturing: the first exchange was never taken
    assert (conn.captured, conn.head_raw) == (bytearray(), None)
    feed(conn, [head("Content-Length: 2") + b"cd"])
    assert http1.take_capture(conn) == (((b"Content-Length", b"2"),), b"cd", False)
    conn.send(REQUEST, b"", False)
    feed(conn, [head("Content-Length: 2") + b"ef"])
    assert conn.captured == bytearray() and conn.head_raw is None
    assert http1.take_response(conn) == http1.CapturedResponse(200, b"", (), b"", True)


async def test_a_capture_over_the_connection_limit_reports_truncation() -> None:
    conn, _, _ = connect(limit=4)
    conn.capture = 100
    conn.send(REQUEST, b"", False)
    feed(conn, [head("Content-Length: 6") + b"abcdef"])
    assert http1.take_capture(conn) == (((b"Content-Length", b"6"),), b"abcd", True)


async def test_a_new_connection_is_idle_unused_and_captures_nothing() -> None:
    conn, _, _ = connect()
    assert (conn.status, conn.wire, conn.error, conn.error_phase, conn.waiter) == (
        0,
        0,
        None,
        "",
        None,
    )
    assert conn.closed is False and conn.idle is False and conn.reused is False
    assert conn.keep_alive is False and conn.truncated is False and conn.leftover is False
    assert (conn.capture, conn.captured, conn.head_raw) == (0, bytearray(), None)
    assert conn.reusable() is False and conn.phase() == "idle"


async def test_a_connection_waiting_for_its_answer_is_not_reusable() -> None:
    conn, _, _ = connect()
    conn.send(REQUEST, b"", False)
    feed(conn, [head("Content-Length: 0")])
    conn.send(REQUEST, b"", False)
    assert conn.reusable() is False and conn.keep_alive is False
    feed(conn, [b"HTTP/1.1 200 OK\r\n"])
    assert conn.reusable() is False


async def test_an_answer_after_the_waiter_gave_up_is_still_parsed() -> None:
    conn, _, _ = connect()
    waiter = conn.send(REQUEST, b"", False)
    waiter.cancel()  # the copy timed out
    feed(conn, [head("Content-Length: 1") + b"x"])
    assert conn.status == 200 and conn.error is None and conn.phase() == "idle"
    conn, _, _ = connect()
    waiter = conn.send(REQUEST, b"", False)
    waiter.cancel()
    feed(conn, [b"garbage\r\n\r\n"])
    assert isinstance(conn.error, ProtocolViolation)


async def test_interim_bytes_add_up_toward_the_cap() -> None:
    interim = head(version="HTTP/1.1 100 Continue")
    counted = len(interim) - 4  # the head without its blank line
    conn, _, _ = connect(limit=2 * counted - 1)
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [interim])
    assert not waiter.done()
    feed(conn, [interim])
    assert waiter.done() and isinstance(conn.error, ProtocolViolation)
    assert str(conn.error) == f"interim (1xx) responses over {2 * counted - 1} bytes"


async def test_the_head_bound_counts_only_the_head_being_read() -> None:
    conn, _, _ = connect()
    waiter = conn.send(REQUEST, b"", False)
    start = b"HTTP/1.1 200 OK\r\nX: "
    feed(conn, [start + b"x" * (64 * 1024 - len(start))])  # exactly the bound, no end yet
    assert not waiter.done() and conn.error is None
    feed(conn, [b"\r\nContent-Length: 0\r\n\r\n"])
    assert waiter.done() and conn.error is None
    conn, _, _ = connect()
    waiter = conn.send(REQUEST, b"", False)
    big_interim = head("Link: <" + "l" * 40_000 + ">", version="HTTP/1.1 103 Early Hints")
    feed(conn, [big_interim + b"HTTP/1.1 200 OK\r\nX: " + b"x" * 30_000])
    assert not waiter.done() and conn.error is None
    feed(conn, [b"\r\nContent-Length: 0\r\n\r\n"])
    assert waiter.done() and conn.error is None and conn.status == 200


@pytest.mark.parametrize(
    ("status_line", "reason"),
    [
        pytest.param(b"HTTP/1.1 200 OK  ", b"OK  ", id="trailing-spaces-kept"),
        pytest.param(b"HTTP/1.1 418 Page X", b"Page X", id="ends-in-x"),
        pytest.param(b"HTTP/1.0 503 Service Unavailable", b"Service Unavailable", id="1.0"),
    ],
)
async def test_the_reason_phrase_is_kept_as_sent(status_line: bytes, reason: bytes) -> None:
    conn, _, _ = connect()
    conn.capture = 10
    conn.send(REQUEST, b"", False)
    feed(conn, [status_line + b"\r\nContent-Length: 0\r\n\r\n"])
    assert http1.take_response(conn).reason == reason


async def test_captured_fields_keep_names_and_values_as_sent() -> None:
    conn, _, _ = connect()
    conn.capture = 10
    conn.send(REQUEST, b"", False)
    feed(
        conn,
        [
            b"HTTP/1.1 200 OK\n"
            b"Location: http://x:8080/a\n"
            b"X-A: one\n"
            b"\tfolded with a tab\n"
            b" folded with a space\n"
            b"X-B: XX\n"
            b"   \n"
            b"\rX-C: 3\n"
            b"Content-Length: 0\n\n"
        ],
    )
    fields, _, _ = http1.take_capture(conn)
    assert fields == (
        (b"Location", b"http://x:8080/a"),
        (b"X-A", b"one"),
        (b"X-B", b"XX"),
        (b"\rX-C", b"3"),
        (b"Content-Length", b"0"),
    )


# --- gRPC status -------------------------------------------------------------------------------


def trailers(*lines: str) -> bytes:
    """A chunked response of two body bytes ending with these trailer fields."""
    return (
        head("Transfer-Encoding: chunked")
        + ("2\r\nab\r\n0\r\n" + "".join(line + "\r\n" for line in lines) + "\r\n").encode()
    )


@pytest.mark.parametrize(
    ("response", "grpc_status"),
    [
        pytest.param(
            head(
                "Content-Type: application/grpc",
                "grpc-status: 14",
                "grpc-message: unavailable",
                "Content-Length: 0",
            ),
            14,
            id="trailers-only-answer-in-the-head",
        ),
        pytest.param(head("GRPC-Status:  7 ", "Content-Length: 0"), 7, id="head-any-case"),
        pytest.param(
            head("Retry-After: 120", "Content-Length: 0"),
            None,
            id="same-length-name-is-not-grpc-status",
        ),
        pytest.param(head("Content-Length: 0"), None, id="none-sent"),
        pytest.param(
            trailers("grpc-status: 0", "grpc-message: fine"), 0, id="in-the-chunked-trailers"
        ),
        pytest.param(trailers("Grpc-Status:13"), 13, id="trailer-any-case-no-space"),
        pytest.param(trailers("grpc-status: \t2"), 2, id="trailer-value-trimmed"),
        pytest.param(
            trailers("x-grpc-status: 5", "grpc-status-details-bin: 6"),
            None,
            id="other-trailers-are-not-grpc-status",
        ),
        pytest.param(trailers("grpc-status: 9", "grpc-status: 4"), 4, id="the-last-one-counts"),
    ],
)
async def test_the_grpc_status_comes_from_the_head_or_the_trailers(
    response: bytes, grpc_status: int | None
) -> None:
    for chunks in splits(response):
        conn, _, _ = connect()
        waiter = conn.send(REQUEST, b"", False)
        feed(conn, chunks)
        assert waiter.done() and conn.error is None, [len(c) for c in chunks]
        assert conn.grpc_status == grpc_status, [len(c) for c in chunks]


@pytest.mark.parametrize(
    ("value", "grpc_status"),
    [
        pytest.param("0", 0, id="zero"),
        pytest.param("16", 16, id="two-digits"),
        pytest.param("999", 999, id="three-digits"),
        pytest.param("1000", None, id="four-digits"),
        pytest.param("00014", None, id="leading-zeros-past-three-digits"),
        pytest.param("", None, id="empty"),
        pytest.param("abc", None, id="word"),
        pytest.param("-1", None, id="negative"),
        pytest.param("+1", None, id="sign"),
        pytest.param("1 2", None, id="two-numbers"),
        pytest.param("１", None, id="non-ascii-digit"),
    ],
)
@pytest.mark.parametrize("where", ["head", "trailers"])
async def test_a_grpc_status_is_up_to_three_ascii_digits(
    value: str, grpc_status: int | None, where: str
) -> None:
    field = "grpc-status: " + value
    response = head(field, "Content-Length: 0") if where == "head" else trailers(field)
    conn, _, _ = connect()
    waiter = conn.send(REQUEST, b"", False)
    feed(conn, [response])
    assert waiter.done() and conn.error is None
    assert conn.grpc_status == grpc_status


async def test_the_grpc_status_is_per_exchange() -> None:
    conn, _, _ = connect()
    assert conn.grpc_status is None
    conn.send(REQUEST, b"", False)
    feed(conn, [head("grpc-status: 5", "Content-Length: 0")])
    assert conn.grpc_status == 5
    waiter = conn.send(REQUEST, b"", False)
    assert conn.grpc_status is None  # not the last exchange's
    feed(conn, [head("Content-Length: 0")])
    assert waiter.done() and conn.error is None and conn.grpc_status is None


# --- what the connection hands over ------------------------------------------------------------


async def test_the_connection_hands_over_its_own_capture() -> None:
    conn, _, _ = connect()
    conn.capture = 100
    conn.send(REQUEST, b"", False)
    feed(conn, [head("X-A: 1", "Content-Length: 2", version="HTTP/1.1 201 Made") + b"ab"])
    assert conn.take_response() == CapturedResponse(
        201, b"Made", ((b"X-A", b"1"), (b"Content-Length", b"2")), b"ab", False
    )
    assert (conn.capture, conn.captured, conn.head_raw) == (0, bytearray(), None)
    conn.capture = 1
    conn.send(REQUEST, b"", False)
    feed(conn, [head("Content-Length: 2") + b"cd"])
    assert conn.take_capture() == (((b"Content-Length", b"2"),), b"c", True)
    assert (conn.capture, conn.captured, conn.head_raw) == (0, bytearray(), None)


# --- unsent bytes on a real socket -------------------------------------------------------------

DEADLINE = 10.0


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; fail after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {DEADLINE:g}s waiting for {what}"
        await asyncio.sleep(0.005)


def received_unread(sock: socket.socket) -> int:
    """Bytes that arrived on `sock` and nobody has read yet (FIONREAD)."""
    raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4)
    count: int = struct.unpack("i", raw)[0]
    return count


@contextlib.asynccontextmanager
async def to_a_mirror_that_does_not_read() -> AsyncIterator[tuple[http1.Connection, socket.socket]]:
    """A Connection on a real TCP connection to 127.0.0.1, and the mirror's end of it: a socket
    with a 4 KiB receive buffer that reads only when the test does."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        # Before listen, so that the accepted socket advertises the small window from the start.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        async with asyncio.timeout(DEADLINE):
            _, conn = await loop.create_connection(
                lambda: http1.Connection(Owner(), 1 << 20), *listener.getsockname()
            )
            peer, _ = await loop.sock_accept(listener)
        assert conn.transport is not None
        # Room for a test's whole request in the kernel, whatever the autotuning would give.
        conn.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 18
        )
        with peer:
            try:
                yield conn, peer
            finally:
                conn.abort()
                await until(lambda: conn.closed, "the connection to close")


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's send queue is read on Linux")
async def test_unsent_counts_request_bytes_still_in_the_kernels_send_queue() -> None:
    """A mirror that answers without reading the body: the request left asyncio's buffer at once
    (the kernel took it whole), but what the mirror's small receive window could not take is
    still in the kernel's send queue. unsent() counts it, so the pool does not reuse the
    connection as if the request had gone out."""
    loop = asyncio.get_running_loop()
    async with to_a_mirror_that_does_not_read() as (conn, peer):
        transport = conn.transport
        assert transport is not None
        body = b"b" * 32768
        request = b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 32768\r\n\r\n"
        sent = len(request) + len(body)
        waiter = conn.send(request, body, False)
        # All of it is the kernel's now, and more than the mirror's window could take.
        assert transport.get_write_buffer_size() == 0 and conn.unsent() > 0
        await loop.sock_sendall(peer, b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        async with asyncio.timeout(DEADLINE):
            await waiter
        assert conn.error is None and conn.status == 413
        # Once the mirror's acks are in, every byte is either unsent or in its receive queue.
        await until(lambda: conn.unsent() + received_unread(peer) == sent, "the acks")
        assert conn.unsent() > 0 and transport.get_write_buffer_size() == 0
        got = 0
        async with asyncio.timeout(DEADLINE):
            while got < sent:
                got += len(await loop.sock_recv(peer, 65536))
        await until(lambda: conn.unsent() == 0, "the rest of the request to leave")
