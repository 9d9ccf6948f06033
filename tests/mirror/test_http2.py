"""Tests for meshmirror.mirror.http2 and the client's HTTP/2 paths, against a real HTTP/2 server
on 127.0.0.1 (the raw `h2` server of tests/support/grpc_servers.py) and real TLS."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from meshmirror.mirror.failures import InvalidRequest
from meshmirror.mirror.request_head import header_bytes, request_headers
from meshmirror.mirror.types import (
    EITHER,
    HTTP1_ONLY,
    HTTP2_ONLY,
    MirrorEndpoint,
    MirrorRequest,
    MirrorResult,
)
from meshmirror.mirror.writer import MirrorWriter
from tests.support import grpc_servers as gs
from tests.support import servers as srv

DEADLINE = 10.0


def grpc_request(body: bytes = gs.frame(b"hi"), host: bytes = b"app-shadow") -> MirrorRequest:
    return MirrorRequest(
        "POST",
        "/svc/Method?x=1",
        [
            (b"Host", host),
            (b"Content-Type", b"application/grpc"),
            (b"Connection", b"keep-alive"),
            (b"Keep-Alive", b"5"),
            (b"TE", b"gzip"),
            (b"X-Forwarded-For", b"10.0.0.1"),
        ],
        body,
    )


def test_request_headers_as_http2_carries_them() -> None:
    fields = request_headers(grpc_request(), b"http", b"app-shadow")
    assert fields == [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"app-shadow"),
        (b":path", b"/svc/Method?x=1"),
        (b"content-type", b"application/grpc"),
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"te", b"trailers"),  # gRPC needs it; the client's own TE is connection-specific
        (b"content-length", b"7"),
    ]
    assert header_bytes(fields) == sum(len(n) + len(v) + 32 for n, v in fields)


@pytest.mark.parametrize(
    ("headers", "target", "why"),
    [
        ([(b"x-a", b"1\r\nx-b: 2")], "/", "header #0"),
        ([(b"x a", b"1")], "/", "header #0"),
        ([(b"x-a", b"\x00")], "/", "header #0"),
        ([], "/a b", "target"),
    ],
    ids=["crlf-in-value", "space-in-name", "nul", "space-in-target"],
)
def test_a_request_http2_cannot_carry_is_refused(
    headers: list[tuple[bytes, bytes]], target: str, why: str
) -> None:
    with pytest.raises(InvalidRequest, match=why):
        request_headers(MirrorRequest("GET", target, headers, b""), b"http", b"h")


async def one(w: MirrorWriter, endpoint: MirrorEndpoint, req: MirrorRequest) -> MirrorResult:
    done: asyncio.Future[MirrorResult] = asyncio.get_running_loop().create_future()
    assert w.submit("k", endpoint, req, done.set_result, capture=1024)
    async with asyncio.timeout(DEADLINE):
        return await done


async def test_copies_share_one_connection_and_read_the_grpc_status() -> None:
    server = gs.H2Server()
    w = MirrorWriter(timeout=5, max_inflight=64)
    try:
        endpoint = MirrorEndpoint("127.0.0.1", server.port, alpn=HTTP2_ONLY)
        results = await asyncio.gather(*(one(w, endpoint, grpc_request()) for _ in range(20)))
        assert {(r.status, r.grpc_status, r.failure) for r in results} == {(200, 0, None)}
        assert server.connections == 1  # 20 concurrent copies waited for the one being made
        assert len(server.received) == 20
        r = results[0]
        assert r.body == gs.frame(b"raw:hi") and r.headers is not None
        assert (b"content-type", b"application/grpc") in r.headers
        assert r.bytes_sent > len(gs.frame(b"hi")) and r.bytes_received > len(r.body)
    finally:
        w.close()
        server.close()


async def test_a_body_over_the_limit_resets_its_stream_not_the_connection() -> None:
    def big(ex: gs.H2Exchange) -> None:
        ex.conn.send_headers(ex.stream_id, [(":status", "200")])
        ex.conn.send_data(ex.stream_id, b"x" * 5000, end_stream=True)
        ex.send()

    server = gs.H2Server(big)
    w = MirrorWriter(timeout=5, max_inflight=8, max_response_body=1000)
    try:
        endpoint = MirrorEndpoint("127.0.0.1", server.port, alpn=HTTP2_ONLY)
        first = await one(w, endpoint, grpc_request())
        second = await one(w, endpoint, grpc_request())
        assert (first.status, first.body_truncated) == (200, True)
        assert "truncated at 1000 bytes; stream reset" in first.detail
        assert second.status == 200
        assert server.connections == 1
    finally:
        w.close()
        server.close()


async def test_a_refused_stream_is_sent_once_more_on_a_fresh_connection() -> None:
    refusals = iter([True])

    def refuse_once(ex: gs.H2Exchange) -> None:
        if next(refusals, False):
            ex.conn.reset_stream(ex.stream_id, error_code=7)  # REFUSED_STREAM
            ex.send()
        else:
            gs.grpc_ok(ex)

    server = gs.H2Server(refuse_once)
    w = MirrorWriter(timeout=5, max_inflight=8)
    try:
        result = await one(
            w, MirrorEndpoint("127.0.0.1", server.port, alpn=HTTP2_ONLY), grpc_request()
        )
        assert (result.status, result.resent) == (200, True)
        assert len(server.received) == 2
    finally:
        w.close()
        server.close()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    gs.tls_pair(tmp_path)
    return tmp_path / "grpc-cert.pem", tmp_path / "grpc-key.pem"


async def test_tls_either_speaks_what_the_server_chose(tls_files: tuple[Path, Path]) -> None:
    """ALPN offers h2 and http/1.1: a server that only speaks HTTP/1.1 is answered over it."""
    cert, key = tls_files
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    server = srv.FaultServer(srv.status(200), tls=ctx)
    w = MirrorWriter(timeout=5, max_inflight=8)
    try:
        req = MirrorRequest("GET", "/", [(b"Host", b"localhost")], b"")
        base = {"host": "127.0.0.1", "port": server.port, "tls": True, "sni": "localhost"}
        either = MirrorEndpoint(**base, ca_file=str(cert), alpn=EITHER)  # type: ignore[arg-type]
        only_h2 = MirrorEndpoint(**base, ca_file=str(cert), alpn=HTTP2_ONLY)  # type: ignore[arg-type]
        only_h1 = MirrorEndpoint(**base, ca_file=str(cert), alpn=HTTP1_ONLY)  # type: ignore[arg-type]
        assert (await one(w, either, req)).status == 200
        assert (await one(w, only_h1, req)).status == 200
        refused = await one(w, only_h2, req)
        assert refused.failure == "protocol"
        # No protocol in common: the server chose none.
        assert refused.detail == "mirror does not speak HTTP/2 (TLS ALPN chose nothing)"
    finally:
        w.close()
        server.close()
