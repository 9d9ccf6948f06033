"""Istio HTTPRoute fields end to end: rewrite, headers, redirect, directResponse, fault, timeout,
retries and delegates, each checked on the primary, the client and the mirror."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.e2e.test_proxy import (
    ANY,
    Client,
    requests_of,
    service_entry,
    virtual_service,
    write_config,
)
from tests.support.mitmdump import Proxy
from tests.support.processes import wait_for

Start = Callable[..., tuple[Proxy, Client]]


@pytest.fixture
def upstream() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request(ANY).respond_with_data("from-upstream", status=200)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start(
    tmp_path: Path,
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    upstream: HTTPServer,
    proxies: Callable[..., Proxy],
) -> Start:
    """A proxy with primary.local = httpserver and shadow.local = mirror_server."""

    def run(rules: str, *extra_docs: str) -> tuple[Proxy, Client]:
        cfg = write_config(
            tmp_path,
            service_entry("primary", "primary.local", httpserver.port),
            service_entry("shadow", "shadow.local", mirror_server.port),
            virtual_service(rules),
            *extra_docs,
        )
        proxy = proxies(upstream.url_for("/").rstrip("/"), [cfg])
        return proxy, Client(proxy.port)

    return run


def mirrored_only(mirror_server: HTTPServer, client: Client, path: str) -> list[Request]:
    """Send a control request on a mirrored route and wait for its copy: copies of earlier
    requests would have been submitted before it, so what arrived is all there is."""
    client.request("GET", path)
    wait_for(lambda: any(r.path == path for r in requests_of(mirror_server)))
    time.sleep(0.2)  # a stray copy of an earlier request would land within this grace
    return requests_of(mirror_server)


def test_copy_carries_rewritten_path_headers_and_authority(
    start: Start, httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    httpserver.expect_request(ANY).respond_with_data("primary", headers={"X-Upstream": "u"})
    mirror_server.expect_request(ANY).respond_with_data("mirror")
    proxy, client = start(
        """
  - match: [{uri: {prefix: /v1}}]
    rewrite: {uri: /v2, authority: "backend.example:8000"}
    headers:
      request: {set: {x-set: "s"}, add: {x-add: "a"}, remove: [x-drop]}
      response: {set: {x-resp: "r"}, remove: [x-upstream]}
    route:
    - destination: {host: primary.local}
      headers: {request: {set: {x-dest: "d"}}, response: {add: {x-dest-resp: "dr"}}}
    mirror: {host: shadow.local}
"""
    )
    status, headers, body, _ = client.request(
        "GET", "/v1/items?q=1", headers={"X-Drop": "gone", "X-Keep": "k", "X-Set": "old"}
    )
    assert (status, body) == (200, b"primary")
    assert headers["x-resp"] == "r" and headers["x-dest-resp"] == "dr"
    assert "X-Upstream" not in headers and "x-upstream" not in headers
    [primary] = requests_of(httpserver)
    wait_for(lambda: len(mirror_server.log) == 1)
    [copy] = requests_of(mirror_server)
    for req, host in ((primary, "backend.example:8000"), (copy, "backend.example-shadow:8000")):
        assert req.full_path == "/v2/items?q=1"
        assert req.headers["Host"] == host
        assert req.headers["X-Set"] == "s"
        assert req.headers["X-Add"] == "a"
        assert req.headers["X-Dest"] == "d"
        assert req.headers["X-Keep"] == "k"
        assert "X-Drop" not in req.headers
    client.close()


def test_redirect_and_direct_response_are_answered_and_not_mirrored(
    start: Start, httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    httpserver.expect_request(ANY).respond_with_data("primary")
    mirror_server.expect_request(ANY).respond_with_data("mirror")
    proxy, client = start(
        """
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: other.example, redirectCode: 308}
    mirror: {host: shadow.local}
  - match: [{uri: {prefix: /static}}]
    directResponse: {status: 418, body: {string: teapot}}
    mirror: {host: shadow.local}
  - route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
"""
    )
    status, headers, body, _ = client.request("GET", "/old/x?a=1")
    assert status == 308 and headers["location"] == "http://other.example/new?a=1"
    status, headers, body, _ = client.request("GET", "/static")
    assert (status, body) == (418, b"teapot") and headers["content-type"] == "text/plain"
    copies = mirrored_only(mirror_server, client, "/control")
    assert [r.path for r in copies] == ["/control"]
    assert [r.path for r in requests_of(httpserver)] == ["/control"]
    client.close()


def test_fault_abort_is_not_mirrored_and_delay_is(
    start: Start, httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    httpserver.expect_request(ANY).respond_with_data("primary")
    arrivals: dict[str, float] = {}

    def mirror(req: Request) -> Response:
        arrivals[req.path] = time.monotonic()
        return Response("mirror")

    mirror_server.expect_request(ANY).respond_with_handler(mirror)
    proxy, client = start(
        """
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 400ms, percentage: {value: 100}}}
    route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
  - route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
"""
    )
    status, _, body, _ = client.request("GET", "/abort")
    assert (status, body) == (503, b"fault filter abort")
    sent = time.monotonic()
    status, _, body, elapsed = client.request("GET", "/delay")
    assert (status, body) == (200, b"primary") and elapsed >= 0.4
    copies = mirrored_only(mirror_server, client, "/control")
    assert sorted(r.path for r in copies) == ["/control", "/delay"]
    assert arrivals["/delay"] - sent >= 0.4  # the copy leaves after the delay, as in Envoy
    assert [r.path for r in requests_of(httpserver)] == ["/delay", "/control"]
    client.close()


def test_timeout_answers_504_while_the_mirror_is_unaffected(
    start: Start, httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    release = threading.Event()

    def slow(req: Request) -> Response:
        release.wait(5)
        return Response("late")

    httpserver.expect_request(ANY).respond_with_handler(slow)
    mirror_server.expect_request(ANY).respond_with_data("mirror")
    proxy, client = start(
        """
  - route: [{destination: {host: primary.local}}]
    timeout: 300ms
    mirror: {host: shadow.local}
"""
    )
    try:
        status, _, body, elapsed = client.request("GET", "/slow")
    finally:
        release.set()
    assert (status, body) == (504, b"upstream request timeout")
    assert 0.3 <= elapsed < 2.0
    wait_for(lambda: len(mirror_server.log) == 1)
    [(copy, response)] = list(mirror_server.log)
    assert copy.path == "/slow" and response.status_code == 200
    client.close()


def test_retries_resend_the_primary_and_mirror_once(
    start: Start, httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    calls: list[float] = []

    def flaky(req: Request) -> Response:
        calls.append(time.monotonic())
        if len(calls) < 3:
            return Response("busy", status=503)
        return Response("ok")

    httpserver.expect_request(ANY).respond_with_handler(flaky)
    mirror_server.expect_request(ANY).respond_with_data("mirror")
    proxy, client = start(
        """
  - match: [{uri: {prefix: /retry}}]
    retries: {attempts: 3, retryOn: "5xx", perTryTimeout: 2s}
    route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
  - route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
"""
    )
    status, _, body, _ = client.request("POST", "/retry", body=b"payload")
    assert (status, body) == (200, b"ok")
    assert len(calls) == 3
    assert [r.get_data() for r in requests_of(httpserver)] == [b"payload"] * 3
    copies = mirrored_only(mirror_server, client, "/control")
    assert sorted(r.path for r in copies) == ["/control", "/retry"]
    client.close()


def test_retries_exhausted_return_the_last_response(
    start: Start, httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    httpserver.expect_request(ANY).respond_with_data("down", status=502)
    mirror_server.expect_request(ANY).respond_with_data("mirror")
    proxy, client = start(
        """
  - route: [{destination: {host: primary.local}}]
    retries: {attempts: 2, retryOn: gateway-error}
"""
    )
    status, _, body, _ = client.request("GET", "/x")
    assert (status, body) == (502, b"down")
    assert len(httpserver.log) == 3  # one try plus two retries
    client.close()


def test_delegate_routes_and_inherits_the_root_mirror(
    start: Start, httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    httpserver.expect_request(ANY).respond_with_data("primary")
    mirror_server.expect_request(ANY).respond_with_data("mirror")
    delegate = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: team}
spec:
  http:
  - match: [{uri: {prefix: /reviews/v2}}]
    headers: {request: {set: {x-delegate: v2}}}
    route: [{destination: {host: primary.local}}]
"""
    proxy, client = start(
        """
  - match: [{uri: {prefix: /reviews}}]
    mirror: {host: shadow.local}
    delegate: {name: reviews, namespace: team}
""",
        delegate,
    )
    status, _, body, _ = client.request("GET", "/reviews/v2/1")
    assert (status, body) == (200, b"primary")
    [primary] = requests_of(httpserver)
    assert primary.headers["X-Delegate"] == "v2"
    wait_for(lambda: len(mirror_server.log) == 1)
    assert requests_of(mirror_server)[0].headers["X-Delegate"] == "v2"
    # /reviews/v1 is inside the root's match but in no delegate rule: no route, the upstream.
    status, _, body, _ = client.request("GET", "/reviews/v1")
    assert (status, body) == (200, b"from-upstream")
    client.close()
