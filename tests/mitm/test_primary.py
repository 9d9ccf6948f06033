"""Tests for the primary's owned upstream exchange (meshmirror.mitm.primary.Primary.exchange: the
route's timeout and retries) against real sockets on 127.0.0.1 (OS-chosen ports).

The upstreams are the scriptable asyncio backends of tests/mirror/test_writer.py; every wait has
a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from meshmirror.mesh.clusters import Cluster, TlsOrigination
from meshmirror.mitm.primary import (
    CONNECT_FAILURE_BODY,
    RESET_BODY,
    TIMEOUT_BODY,
    Primary,
    answer_locally,
    apply_cors,
    apply_rewrites,
    finalize_response,
    local_reply,
)
from meshmirror.policy.fault import FaultAbort
from meshmirror.policy.upstream import UpstreamPolicy
from meshmirror.routing.table import Route
from tests.mirror import test_writer
from tests.mirror.test_writer import (
    DEADLINE,
    OK_RESPONSE,
    Backend,
    Handler,
    read_request,
    serve,
    serve_once_then_close,
)
from tests.routing.test_compile import all_routes, compile_ok, vs
from tests.support.ports import refused_port

# The writer tests' fixtures: a self-signed CA for localhost and 127.0.0.1, and a server using it.
cert_files = test_writer.cert_files
server_tls = test_writer.server_tls

TIMEOUT = UpstreamPolicy(timeout=DEADLINE)


def retrying(on: str, retries: int = 2, per_try: float = 0.0) -> UpstreamPolicy:
    return UpstreamPolicy(
        timeout=DEADLINE,
        retries=retries,
        per_try_timeout=per_try,
        retry_on=frozenset({on}),
        backoff=0.001,
    )


def flow_to(
    port: int,
    method: str = "GET",
    path: str = "/p",
    body: bytes = b"",
    headers: tuple[tuple[bytes, bytes], ...] = ((b"Host", b"primary.local"),),
    scheme: str = "http",
) -> http.HTTPFlow:
    req = http.Request.make(method, f"{scheme}://127.0.0.1:{port}{path}", body)
    req.headers.fields = headers  # as the client sent them (make() writes its own Host)
    return tflow.tflow(req=req)


def tls_cluster(tls: TlsOrigination) -> Cluster:
    """The cluster's host names the SNI by default; the flow already carries the address."""
    return Cluster("outbound|443||primary.local", "primary.local", 443, None, (), tls)


async def exchange(
    flow: http.HTTPFlow, policy: UpstreamPolicy = TIMEOUT, cluster: Cluster | None = None
) -> http.Response:
    async with asyncio.timeout(DEADLINE * 2):
        await Primary(seed=1).exchange(flow, policy, cluster)
    assert flow.response is not None
    return flow.response


class Upstreams:
    def __init__(self) -> None:
        self.started: list[Backend] = []

    async def start(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> Backend:
        backend = await Backend(handler, ssl_context).start()
        self.started.append(backend)
        return backend


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    u = Upstreams()
    yield u
    for backend in u.started:
        await backend.stop()


def reset_after(response: bytes) -> Handler:
    """serve_once_then_close, ending in a reset (RST) instead of a FIN."""
    answer = serve_once_then_close(response)

    async def handler(
        backend: Backend, conn_id: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await answer(backend, conn_id, reader, w)

    return handler


async def never_answer(
    backend: Backend, conn_id: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    await read_request(backend, conn_id, reader)
    await backend.release.wait()


# --------------------------------------------------------------------------------------------
# What goes upstream


async def test_request_head_host_first_hop_by_hop_dropped_connection_close(
    upstreams: Upstreams,
) -> None:
    backend = await upstreams.start(serve_once_then_close(OK_RESPONSE))
    headers = (
        (b"X-First", b"1"),
        (b"Host", b"primary.local"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-Checksum"),
        (b"Upgrade", b"h2c"),
        (b"Content-Length", b"999"),
        (b"X-Hop", b"named-in-connection"),
        (b"X-Last", b"2"),
    )
    resp = await exchange(flow_to(backend.port, "POST", "/up?q=1", b"payload", headers))
    assert resp.status_code == 200
    [sent] = backend.requests
    assert sent.head == (
        b"POST /up?q=1 HTTP/1.1\r\n"
        b"host: primary.local\r\n"
        b"X-First: 1\r\n"
        b"X-Last: 2\r\n"
        b"Content-Length: 7\r\n\r\n"
    )
    assert sent.body == b"payload"


async def test_host_defaults_to_the_request_host_and_get_has_no_length(
    upstreams: Upstreams,
) -> None:
    backend = await upstreams.start(serve_once_then_close(OK_RESPONSE))
    await exchange(flow_to(backend.port, headers=()))
    [sent] = backend.requests
    assert sent.head == b"GET /p HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"


# --------------------------------------------------------------------------------------------
# What comes back: the whole body, framing replaced


async def test_content_length_body_is_returned_whole(upstreams: Upstreams) -> None:
    body = bytes(range(256)) * 2048  # 512 KiB: many reads, far past the copies' capture sizes
    response = (
        b"HTTP/1.1 201 Made It\r\nX-Upstream: u\r\nConnection: close\r\nKeep-Alive: x\r\n"
        b"Host: nonsense\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    backend = await upstreams.start(serve_once_then_close(response))
    resp = await exchange(flow_to(backend.port))
    assert (resp.status_code, resp.reason) == (201, "Made It")
    assert resp.raw_content == body
    assert resp.headers.fields == (
        (b"x-upstream", b"u"),
        (b"content-length", str(len(body)).encode()),
    )


async def test_chunked_body_is_dechunked_and_reframed(upstreams: Upstreams) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n"
        b"Content-Type: text/plain\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Sum: 1\r\n\r\n"
    )
    backend = await upstreams.start(serve(response))
    resp = await exchange(flow_to(backend.port))
    assert resp.status_code == 200
    assert resp.raw_content == b"hello world"
    assert resp.headers.fields == ((b"content-type", b"text/plain"), (b"content-length", b"11"))


async def test_body_delimited_by_close_is_returned_whole(upstreams: Upstreams) -> None:
    backend = await upstreams.start(
        serve_once_then_close(b"HTTP/1.0 200 OK\r\n\r\n" + b"z" * 100_000)
    )
    resp = await exchange(flow_to(backend.port))
    assert resp.status_code == 200
    assert resp.raw_content == b"z" * 100_000
    assert resp.headers["content-length"] == "100000"


async def test_head_keeps_the_upstream_length_without_a_body(upstreams: Upstreams) -> None:
    backend = await upstreams.start(serve(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"))
    resp = await exchange(flow_to(backend.port, "HEAD"))
    assert resp.status_code == 200
    assert resp.raw_content == b""
    assert resp.headers["content-length"] == "42"


async def test_interim_response_is_skipped(upstreams: Upstreams) -> None:
    response = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    backend = await upstreams.start(serve(response))
    resp = await exchange(flow_to(backend.port, "POST", body=b"x"))
    assert (resp.status_code, resp.raw_content) == (200, b"ok")


# --------------------------------------------------------------------------------------------
# Failure classes: connect-failure, reset, timeout, retriable status


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
async def test_connection_closed_mid_body_is_a_reset(upstreams: Upstreams, rst: bool) -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial"
    backend = await upstreams.start(reset_after(cut) if rst else serve_once_then_close(cut))
    resp = await exchange(flow_to(backend.port))
    assert (resp.status_code, resp.raw_content) == (503, RESET_BODY)
    assert backend.accepted == 1


async def test_reset_is_retried_under_retry_on_reset(upstreams: Upstreams) -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial"
    backend = await upstreams.start(serve_once_then_close(cut))
    resp = await exchange(flow_to(backend.port), retrying("reset", retries=2))
    assert (resp.status_code, resp.raw_content) == (503, RESET_BODY)
    assert backend.accepted == 3
    # A reset is not a connect failure: that policy does not retry it.
    again = await upstreams.start(serve_once_then_close(cut))
    await exchange(flow_to(again.port), retrying("connect-failure"))
    assert again.accepted == 1


async def test_malformed_response_is_a_reset(upstreams: Upstreams) -> None:
    backend = await upstreams.start(
        serve_once_then_close(b"\x00\x01garbage that is not HTTP\r\n\r\n")
    )
    resp = await exchange(flow_to(backend.port))
    assert (resp.status_code, resp.raw_content) == (503, RESET_BODY)


async def test_closed_before_any_response_is_a_reset(upstreams: Upstreams) -> None:
    backend = await upstreams.start(serve_once_then_close(b""))
    resp = await exchange(flow_to(backend.port))
    assert (resp.status_code, resp.raw_content) == (503, RESET_BODY)


async def test_refused_connection_is_a_connect_failure_and_retried() -> None:
    flow = flow_to(refused_port())
    resp = await exchange(flow, retrying("connect-failure", retries=2))
    assert (resp.status_code, resp.raw_content) == (503, CONNECT_FAILURE_BODY)


async def test_route_timeout_answers_504(upstreams: Upstreams) -> None:
    backend = await upstreams.start(never_answer)
    started = time.monotonic()
    resp = await exchange(flow_to(backend.port), UpstreamPolicy(timeout=0.3))
    elapsed = time.monotonic() - started
    assert (resp.status_code, resp.raw_content) == (504, TIMEOUT_BODY)
    assert 0.3 <= elapsed < DEADLINE
    assert len(backend.requests) == 1


async def test_per_try_timeout_is_retried_under_5xx(upstreams: Upstreams) -> None:
    backend = await upstreams.start(never_answer)
    resp = await exchange(flow_to(backend.port), retrying("5xx", retries=2, per_try=0.1))
    assert (resp.status_code, resp.raw_content) == (504, TIMEOUT_BODY)
    assert backend.accepted == 3


async def test_retriable_status_is_retried_and_the_next_answer_returned(
    upstreams: Upstreams,
) -> None:
    answers = [b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy", OK_RESPONSE]

    async def flaky(
        backend: Backend, conn_id: int, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        if await read_request(backend, conn_id, reader) is not None:
            w.write(answers[min(conn_id, len(answers)) - 1])
            await w.drain()

    backend = await upstreams.start(flaky)
    resp = await exchange(flow_to(backend.port, "POST", body=b"again"), retrying("5xx"))
    assert (resp.status_code, resp.raw_content) == (200, b"ok")
    assert [r.body for r in backend.requests] == [b"again", b"again"]


# --------------------------------------------------------------------------------------------
# TLS: the cluster's settings through the shared context cache


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        pytest.param(TlsOrigination(sni="localhost"), 503, id="system-trust-rejects"),
        pytest.param(TlsOrigination(sni="localhost", ca_file="CA"), 200, id="ca-file-sni"),
        pytest.param(TlsOrigination(ca_file="CA"), 503, id="ca-file-cluster-host-mismatch"),
        pytest.param(
            TlsOrigination(sni="other.example", insecure_skip_verify=True), 200, id="insecure"
        ),
    ],
)
async def test_tls_follows_the_cluster(
    upstreams: Upstreams,
    server_tls: ssl.SSLContext,
    cert_files: tuple[Path, Path],
    tls: TlsOrigination,
    expected: int,
) -> None:
    backend = await upstreams.start(serve(OK_RESPONSE), server_tls)
    if tls.ca_file == "CA":
        tls = TlsOrigination(tls.sni, str(cert_files[0]), tls.insecure_skip_verify)
    cluster = tls_cluster(tls)
    resp = await exchange(flow_to(backend.port, scheme="https"), cluster=cluster)
    if expected == 200:
        assert (resp.status_code, resp.raw_content) == (200, b"ok")
    else:
        assert (resp.status_code, resp.raw_content) == (503, CONNECT_FAILURE_BODY)


async def test_unreadable_ca_file_is_a_connect_failure_named_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = tls_cluster(TlsOrigination(ca_file=str(tmp_path / "missing.pem")))
    with caplog.at_level(logging.INFO, logger="meshmirror.primary"):
        resp = await exchange(flow_to(9, scheme="https"), cluster=cluster)
    assert (resp.status_code, resp.raw_content) == (503, CONNECT_FAILURE_BODY)
    assert "primary attempt 1 of 1 to 127.0.0.1:9 failed: connect-failure" in caplog.text
    assert "cannot load ca_file" in caplog.text


# --- local replies to gRPC requests, the CORS filter, the retry policy chosen -------------------


def grpc_request(http2: bool = True) -> http.Request:
    req = http.Request.make(
        "POST",
        "http://app/pkg.Svc/Call",
        b"\x00\x00\x00\x00\x00",
        {"content-type": "application/grpc"},
    )
    req.http_version = "HTTP/2.0" if http2 else "HTTP/1.1"
    return req


@pytest.mark.parametrize("http2", [True, False], ids=["http2", "http1"])
def test_local_reply_to_grpc_is_trailers_only(http2: bool) -> None:
    resp = local_reply(503, b"fault filter abort", request=grpc_request(http2))
    assert resp.status_code == 200 and resp.raw_content == b""
    assert resp.trailers is None  # the status rides in the headers: "trailers-only"
    assert (resp.headers["grpc-status"], resp.headers["grpc-message"]) == (
        "14",
        "fault filter abort",
    )
    assert resp.headers["content-type"] == "application/grpc"
    # HTTP/1.1 needs the length to end the response; an HTTP/2 HEADERS frame ends the stream.
    assert resp.headers.get("content-length") == (None if http2 else "0")


def test_local_reply_to_a_plain_request_is_text() -> None:
    req = http.Request.make("GET", "http://app/", b"", {"content-type": "application/grpc-web"})
    resp = local_reply(503, b"fault filter abort", request=req)
    assert (resp.status_code, resp.raw_content) == (503, b"fault filter abort")
    assert resp.headers["content-type"] == "text/plain" and "grpc-status" not in resp.headers


@pytest.mark.parametrize(
    ("abort", "content_type", "expected"),
    [
        (FaultAbort(200, 5), "application/grpc", (200, {"grpc-status": "5"}, b"")),
        (FaultAbort(503), "application/grpc+proto", (200, {"grpc-status": "14"}, b"")),
        # Envoy answers a grpcStatus abort of a request that is not gRPC with a plain 200.
        (FaultAbort(200, 5), "text/plain", (200, {}, b"fault filter abort")),
    ],
    ids=["grpc-status-abort", "http-abort-of-grpc-request", "grpc-abort-of-plain-request"],
)
def test_abort(
    abort: FaultAbort, content_type: str, expected: tuple[int, dict[str, str], bytes]
) -> None:
    f = tflow.tflow(
        req=http.Request.make("POST", "http://app/x", b"", {"content-type": content_type})
    )
    Primary.abort(f, abort)
    assert f.response is not None
    status, headers, body = expected
    assert (f.response.status_code, f.response.raw_content) == (status, body)
    for name, value in headers.items():
        assert f.response.headers[name] == value


def routed(spec_http: str) -> Route:
    table, _ = compile_ok(vs(spec_http))
    return all_routes(table)[0]


CORS_ROUTE = """  - route: [{destination: {host: a}}]
    headers: {response: {set: {access-control-allow-origin: "*", x-rule: "1"}}}
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}]
      allowMethods: [GET, POST]
      exposeHeaders: [x-total]
"""


def cors_flow(method: str, **headers: str) -> http.HTTPFlow:
    req = http.Request.make(method, "http://app.example.com/p", b"", headers)
    return tflow.tflow(req=req)


def test_preflight_is_answered_and_nothing_else_happens() -> None:
    route = routed(CORS_ROUTE)
    f = cors_flow("OPTIONS", origin="https://a.example")
    f.request.headers["access-control-request-method"] = "POST"
    assert apply_cors(f, route.cors) is True
    assert f.response is not None and f.response.status_code == 200
    assert f.response.headers["access-control-allow-origin"] == "https://a.example"
    assert f.response.headers["access-control-allow-methods"] == "GET,POST"
    assert f.response.headers["access-control-expose-headers"] == "x-total"


def test_a_recorded_preflight_is_not_answered_but_still_not_routed() -> None:
    route = routed(CORS_ROUTE)
    f = cors_flow("OPTIONS", origin="https://a.example")
    f.request.headers["access-control-request-method"] = "GET"
    f.live = False
    assert apply_cors(f, route.cors) is True and f.response is None


def test_actual_request_gets_cors_headers_after_the_rules_own() -> None:
    route = routed(CORS_ROUTE)
    f = cors_flow("GET", origin="https://a.example")
    assert apply_cors(f, route.cors) is False
    # The route's response ops are stashed after the CORS filter decided (apply_rewrites).
    apply_rewrites(f, route, None, "app.example.com")
    f.response = http.Response.make(200, b"ok", {"access-control-allow-origin": "upstream"})
    finalize_response(f)
    headers = f.response.headers
    # Envoy's CORS filter sets (overwrites) after the router's response header operations.
    assert headers.get_all("access-control-allow-origin") == ["https://a.example"]
    assert (headers["x-rule"], headers["access-control-expose-headers"]) == ("1", "x-total")


def test_disallowed_origin_leaves_the_response_alone() -> None:
    route = routed(CORS_ROUTE)
    f = cors_flow("GET", origin="https://evil.example")
    assert apply_cors(f, route.cors) is False
    f.response = http.Response.make(200, b"ok", {"access-control-allow-origin": "upstream"})
    finalize_response(f)
    assert f.response.headers["access-control-allow-origin"] == "upstream"


def test_redirect_answer_gets_cors_headers_and_a_preflight_to_it_is_answered_first() -> None:
    route = routed(
        "  - redirect: {uri: /new}\n    corsPolicy: {allowOrigins: [{prefix: 'https://'}]}\n"
    )
    f = cors_flow("GET", origin="https://a.example")
    assert answer_locally(f, route, "http")
    finalize_response(f)
    assert f.response is not None and f.response.status_code == 301
    assert f.response.headers["access-control-allow-origin"] == "https://a.example"
    pre = cors_flow("OPTIONS", origin="https://a.example")
    pre.request.headers["access-control-request-method"] = "GET"
    assert answer_locally(pre, route, "http")
    assert pre.response is not None and pre.response.status_code == 200


def test_default_retries_option_picks_istios_mesh_default() -> None:
    plain = routed("  - route: [{destination: {host: a}}]\n")
    explicit = routed("  - route: [{destination: {host: a}}]\n    retries: {attempts: 0}\n")
    req = http.Request.make("GET", "http://app/", b"")
    p = Primary()
    assert p.upstream_for(plain, req) is None
    p.default_retries = True
    chosen = p.upstream_for(plain, req)
    assert chosen is plain.mesh_default_upstream and chosen is not None and chosen.retries == 2
    assert p.upstream_for(explicit, req) is None  # attempts: 0 disables retries, as in Istio
    # What the owned HTTP/1.1 exchange cannot carry keeps mitmproxy's forwarding.
    websocket = http.Request.make("GET", "http://app/", b"", {"upgrade": "websocket"})
    assert p.upstream_for(plain, websocket) is None
    assert p.upstream_for(plain, grpc_request()) is None
