"""corsPolicy and `fault.abort.grpcStatus` end to end: a real mitmdump with the addon, real
backends, an HTTP/1.1 client and a raw HTTP/2 client (the `h2` library mitmproxy itself uses).

- CORS as Envoy's filter under Istio: a preflight is answered by the proxy (neither the primary
  nor the mirror sees it); one from an origin not allowed is forwarded (and, being routed,
  mirrored), or answered without Access-Control-Allow-Origin under `unmatchedPreflights:
  IGNORE`; an actual request from an allowed origin gets the CORS response headers.
- A `grpcStatus` abort answers a gRPC request with a trailers-only response: over HTTP/2 one
  HEADERS frame that ends the stream (`:status 200`, `grpc-status`, `grpc-message`), no DATA and
  no trailers; over HTTP/1.1 the same fields with `content-length: 0`. Never mirrored.
"""

from __future__ import annotations

import socket
import ssl

import h2.config
import h2.connection
import h2.events
from pytest_httpserver import HTTPServer

from tests.e2e import test_httproute
from tests.e2e.test_httproute import Start, mirrored_only
from tests.e2e.test_proxy import ANY, requests_of

# The HTTPRoute tests' fixtures: a proxy with primary.local and shadow.local, its upstream.
start = test_httproute.start
upstream = test_httproute.upstream

CORS_RULES = """
  - match: [{uri: {prefix: /strict}}]
    route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
    corsPolicy:
      allowOrigins: [{exact: "https://app.example"}]
      allowMethods: [GET, PUT]
      unmatchedPreflights: IGNORE
  - match: [{uri: {prefix: /control}}]
    route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
  - route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
    headers: {response: {set: {access-control-allow-origin: "*"}}}
    corsPolicy:
      allowOrigins: [{exact: "https://app.example"}, {regex: "https://.*[.]partner[.]example"}]
      allowMethods: [GET, POST]
      allowHeaders: [content-type, x-token]
      exposeHeaders: [x-total]
      maxAge: 10m
      allowCredentials: true
"""

PREFLIGHT_HEADERS = {
    "access-control-allow-origin": "https://app.example",
    "access-control-allow-credentials": "true",
    "access-control-allow-methods": "GET,POST",
    "access-control-allow-headers": "content-type,x-token",
    "access-control-max-age": "600",
    "access-control-expose-headers": "x-total",
}


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method}


def test_cors_preflights_are_answered_by_the_proxy_and_never_mirrored(
    start: Start, httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    httpserver.expect_request(ANY).respond_with_data("primary", headers={"X-Total": "3"})
    mirror_server.expect_request(ANY).respond_with_data("mirror")
    proxy, client = start(CORS_RULES)

    status, headers, body, _ = client.request(
        "OPTIONS", "/api", headers=preflight("https://app.example")
    )
    assert (status, body) == (200, b"")
    assert {
        k: v for k, v in headers.items() if k.startswith("access-control-")
    } == PREFLIGHT_HEADERS

    status, headers, _, _ = client.request(
        "OPTIONS", "/api", headers=preflight("https://www.partner.example")
    )
    assert status == 200 and headers["access-control-allow-origin"] == "https://www.partner.example"

    # Not an allowed origin: forwarded (Istio's default, FORWARD) like any request, so mirrored.
    status, headers, body, _ = client.request(
        "OPTIONS", "/forwarded", headers=preflight("https://evil.example")
    )
    assert (status, body) == (200, b"primary")
    assert headers["access-control-allow-origin"] == "*"  # the rule's own header, untouched

    # unmatchedPreflights: IGNORE answers it anyway, without allowing the origin.
    status, headers, body, _ = client.request(
        "OPTIONS", "/strict", headers=preflight("https://evil.example", "PUT")
    )
    assert (status, body) == (200, b"")
    assert "access-control-allow-origin" not in headers
    assert headers["access-control-allow-methods"] == "GET,PUT"

    # An actual request: the primary's response with the CORS headers (after the rule's).
    status, headers, body, _ = client.request(
        "POST", "/api/items", headers={"Origin": "https://app.example"}, body=b"{}"
    )
    assert (status, body) == (200, b"primary")
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-allow-credentials"] == "true"
    assert headers["access-control-expose-headers"] == "x-total"

    copies = mirrored_only(mirror_server, client, "/control")
    assert sorted((r.method, r.path) for r in copies) == [
        ("GET", "/control"),
        ("OPTIONS", "/forwarded"),
        ("POST", "/api/items"),
    ]
    assert sorted((r.method, r.path) for r in requests_of(httpserver)) == [
        ("GET", "/control"),
        ("OPTIONS", "/forwarded"),
        ("POST", "/api/items"),
    ]
    client.close()


GRPC_RULES = """
  - match: [{uri: {prefix: /pkg.Echo/}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
  - route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
"""
GRPC_MESSAGE = b"\x00\x00\x00\x00\x02\x08\x01"  # one length-prefixed protobuf message


def h2_call(port: int, path: str) -> list[h2.events.Event]:
    """One gRPC call over TLS + HTTP/2 (ALPN h2, as mitmproxy offers it in reverse mode); the
    events of its stream up to its end."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=15) as raw:
        with ctx.wrap_socket(raw, server_hostname="app.example.com") as sock:
            assert sock.selected_alpn_protocol() == "h2"
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.send_headers(
                1,
                [
                    (":method", "POST"),
                    (":scheme", "https"),
                    (":authority", f"app.example.com:{port}"),
                    (":path", path),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ],
            )
            conn.send_data(1, GRPC_MESSAGE, end_stream=True)
            sock.sendall(conn.data_to_send())
            events: list[h2.events.Event] = []
            while not any(isinstance(e, h2.events.StreamEnded) for e in events):
                data = sock.recv(65536)
                assert data, "the proxy closed the connection before the stream ended"
                for event in conn.receive_data(data):
                    if getattr(event, "stream_id", None) == 1:
                        events.append(event)
                sock.sendall(conn.data_to_send())
            return events


def test_grpc_status_abort_is_a_trailers_only_response_and_never_mirrored(
    start: Start, httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    httpserver.expect_request(ANY).respond_with_data("primary")
    mirror_server.expect_request(ANY).respond_with_data("mirror")
    proxy, client = start(GRPC_RULES)

    events = h2_call(proxy.port, "/pkg.Echo/Say")
    response, ended = events[0], events[-1]
    assert isinstance(response, h2.events.ResponseReceived)
    # Trailers-only: the HEADERS frame ends the stream; no DATA, no trailers.
    assert response.stream_ended is not None
    assert [type(e) for e in events] == [h2.events.ResponseReceived, h2.events.StreamEnded]
    assert isinstance(ended, h2.events.StreamEnded)
    fields = {bytes(k): bytes(v) for k, v in response.headers}
    assert fields[b":status"] == b"200"
    assert fields[b"content-type"] == b"application/grpc"
    assert (fields[b"grpc-status"], fields[b"grpc-message"]) == (b"14", b"fault filter abort")
    assert b"content-length" not in fields

    # HTTP/1.1: the same answer in the headers, with an explicit empty body.
    status, headers, body, _ = client.request(
        "POST", "/pkg.Echo/Say", headers={"Content-Type": "application/grpc"}, body=GRPC_MESSAGE
    )
    assert (status, body) == (200, b"")
    assert (headers["grpc-status"], headers["grpc-message"]) == ("14", "fault filter abort")
    assert (headers["content-type"], headers["content-length"]) == ("application/grpc", "0")

    # A request that is not gRPC gets Envoy's plain local reply: the abort's HTTP status is 200.
    status, headers, body, _ = client.request("POST", "/pkg.Echo/Say", body=b"x")
    assert (status, body) == (200, b"fault filter abort")
    assert "grpc-status" not in headers

    assert [r.path for r in mirrored_only(mirror_server, client, "/control")] == ["/control"]
    assert [r.path for r in requests_of(httpserver)] == ["/control"]
    client.close()
