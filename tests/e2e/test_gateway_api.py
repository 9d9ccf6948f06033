"""Gateway API HTTPRoute mirroring end to end, in the shape of the conformance suite (spec 6.3-6.5).

The proxy acts as the conformance Gateway `gateway-conformance-infra/same-namespace`; the three
`infra-backend-v*` Services are real HTTP servers on 127.0.0.1 (a Service + WorkloadEntry each).
As in the suite, every request carries a fresh `gateway-api-conformance-request-id` query
parameter, the primary must answer, and a mirror "received" a request when its log holds the path
with that id.
"""

from __future__ import annotations

import http.client
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request

from meshmirror.validate.virtualservice import NOT_YET_SERVED
from tests.support.mitmdump import Proxy
from tests.support.processes import wait_for

ANY = re.compile(r".*")
NS = "gateway-conformance-infra"
REQUEST_ID = "gateway-api-conformance-request-id"

GATEWAY = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: same-namespace, namespace: {NS}}}
spec:
  gatewayClassName: meshmirror
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: Same}}}}
"""

HEADER_MODIFIER = """
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add:
        - {name: X-Header-Add, value: header-val-1}
        - {name: X-Header-Add-Append, value: header-val-2}
        remove: [X-Header-Remove]"""


def mirror_filter(backend: str, extra: str = "") -> str:
    return f"""
    - type: RequestMirror
      requestMirror:
        backendRef: {{name: {backend}, port: 8080}}{extra}"""


def rule(prefix: str, filters: str) -> str:
    return f"""
  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    filters:{filters}
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]"""


def http_route(name: str, rules: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules:{rules}
"""


# spec 6.3 httproute-request-mirror.yaml
REQUEST_MIRROR = http_route(
    "request-mirror",
    rule("/mirror", mirror_filter("infra-backend-v2"))
    + rule("/mirror-and-modify-headers", HEADER_MODIFIER + mirror_filter("infra-backend-v2")),
)
# spec 6.4 httproute-request-multiple-mirrors.yaml
MULTIPLE_MIRRORS = http_route(
    "request-multiple-mirrors",
    rule("/multi-mirror", mirror_filter("infra-backend-v2") + mirror_filter("infra-backend-v3"))
    + rule(
        "/multi-mirror-and-modify-request-headers",
        HEADER_MODIFIER + mirror_filter("infra-backend-v2") + mirror_filter("infra-backend-v3"),
    ),
)
# spec 6.5 httproute-request-percentage-mirror.yaml
PERCENTAGE_MIRROR = http_route(
    "request-percentage-mirror",
    rule("/percent-mirror", mirror_filter("infra-backend-v2", "\n        percent: 20"))
    + rule(
        "/percent-mirror-fraction",
        mirror_filter("infra-backend-v2", "\n        fraction: {numerator: 25, denominator: 50}"),
    )
    + rule(
        "/percent-mirror-and-modify-headers",
        HEADER_MODIFIER + mirror_filter("infra-backend-v2", "\n        percent: 35"),
    ),
)


def backend(name: str, port: int) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NS}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 8080, targetPort: 3000}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: {NS}}}
spec:
  address: 127.0.0.1
  labels: {{app: {name}}}
  ports: {{http: {port}}}
"""


@pytest.fixture
def upstream() -> Iterator[HTTPServer]:
    """The reverse-proxy upstream: answers what no route claims (no test expects it to)."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request(ANY).respond_with_data("from-upstream", status=200)
    server.start()
    yield server
    server.stop()


class Backends:
    def __init__(self, v1: HTTPServer, v2: HTTPServer, v3: HTTPServer) -> None:
        self.v1, self.v2, self.v3 = v1, v2, v3
        for name, server in (("v1", v1), ("v2", v2), ("v3", v3)):
            server.expect_request(ANY).respond_with_data(f"infra-backend-{name}", status=200)

    @staticmethod
    def seen(server: HTTPServer, path: str, request_id: str) -> int:
        """Requests for `path` carrying `request_id`: the conformance log check."""
        return sum(
            1
            for req, _ in list(server.log)
            if req.path == path and req.args.get(REQUEST_ID) == request_id
        )


@pytest.fixture
def gateway(
    tmp_path: Path,
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    second_mirror_server: HTTPServer,
    upstream: HTTPServer,
    proxies: Callable[..., Proxy],
) -> tuple[Proxy, Backends]:
    backends = Backends(httpserver, mirror_server, second_mirror_server)
    docs = [
        GATEWAY,
        backend("infra-backend-v1", httpserver.port),
        backend("infra-backend-v2", mirror_server.port),
        backend("infra-backend-v3", second_mirror_server.port),
        REQUEST_MIRROR,
        MULTIPLE_MIRRORS,
        PERCENTAGE_MIRROR,
    ]
    cfg = tmp_path / "conformance.yaml"
    cfg.write_text("\n---\n".join(d.strip() for d in docs) + "\n")
    proxy = proxies(upstream.url_for("/").rstrip("/"), [cfg])
    return proxy, backends


def send(
    port: int, path: str, request_id: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(
            "GET",
            f"{path}?{REQUEST_ID}={request_id}",
            headers={"Host": "gw.example", **(headers or {})},
        )
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def primary_request(backends: Backends, path: str, request_id: str) -> Request:
    reqs = [
        req
        for req, _ in list(backends.v1.log)
        if req.path == path and req.args.get(REQUEST_ID) == request_id
    ]
    assert len(reqs) == 1
    return reqs[0]


MODIFY_REQUEST_HEADERS = {"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1"}
EXPECTED_HEADERS = {
    "X-Header-Add": "header-val-1",
    "X-Header-Add-Append": "append-val-1,header-val-2",
    "X-Header-Set": "set-overwrites-values",
}

headers_not_served = pytest.mark.xfail(
    "headers" in NOT_YET_SERVED,
    strict=True,
    reason="RequestHeaderModifier converts to Istio headers.request, which the proxy does not "
    "serve yet (NOT_YET_SERVED); this passes once header operations are served",
)


# --- 6.3 HTTPRouteRequestMirror ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/mirror", "/mirror-and-modify-headers"])
def test_mirrored_path_reaches_the_mirror(gateway: tuple[Proxy, Backends], path: str) -> None:
    proxy, backends = gateway
    rid = str(uuid.uuid4())
    status, body = send(proxy.port, path, rid, MODIFY_REQUEST_HEADERS)
    assert (status, body) == (200, b"infra-backend-v1")
    primary_request(backends, path, rid)
    wait_for(lambda: Backends.seen(backends.v2, path, rid) == 1, timeout=10)
    assert Backends.seen(backends.v3, path, rid) == 0


@headers_not_served
def test_mirror_and_modify_headers_primary_sees_modified_headers(
    gateway: tuple[Proxy, Backends],
) -> None:
    proxy, backends = gateway
    rid = str(uuid.uuid4())
    path = "/mirror-and-modify-headers"
    assert send(proxy.port, path, rid, MODIFY_REQUEST_HEADERS)[0] == 200
    req = primary_request(backends, path, rid)
    seen = {name: ",".join(req.headers.getlist(name)) for name in EXPECTED_HEADERS}
    assert seen == EXPECTED_HEADERS
    assert "X-Header-Remove" not in req.headers


def test_prefix_is_element_wise_end_to_end(gateway: tuple[Proxy, Backends]) -> None:
    # /mirror must not claim /mirrorx (Envoy path_separated_prefix): no route, no copy.
    proxy, backends = gateway
    rid = str(uuid.uuid4())
    status, body = send(proxy.port, "/mirrorx", rid)
    assert (status, body) == (200, b"from-upstream")
    # A copy, were one sent, would arrive before the copy of a later matched request.
    later = str(uuid.uuid4())
    assert send(proxy.port, "/mirror", later)[0] == 200
    wait_for(lambda: Backends.seen(backends.v2, "/mirror", later) == 1, timeout=10)
    assert Backends.seen(backends.v2, "/mirrorx", rid) == 0


# --- 6.4 HTTPRouteRequestMultipleMirrors ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/multi-mirror", "/multi-mirror-and-modify-request-headers"])
def test_two_mirrors_both_receive_the_copy(gateway: tuple[Proxy, Backends], path: str) -> None:
    proxy, backends = gateway
    rid = str(uuid.uuid4())
    assert send(proxy.port, path, rid, MODIFY_REQUEST_HEADERS) == (200, b"infra-backend-v1")
    primary_request(backends, path, rid)
    wait_for(
        lambda: (
            Backends.seen(backends.v2, path, rid) == 1
            and Backends.seen(backends.v3, path, rid) == 1
        ),
        timeout=10,
    )


# --- 6.5 HTTPRouteRequestPercentageMirror ---------------------------------------------------------

TOTAL_REQUESTS = 500
CONCURRENCY = 10
DISTRIBUTION_ROUNDS = 3  # the suite allows 5; each round fails with probability ~0.3%


def _send_many(port: int, path: str, request_id: str, headers: dict[str, str]) -> int:
    """TOTAL_REQUESTS requests over CONCURRENCY keep-alive connections; returns how many got 200."""
    ok = [0] * CONCURRENCY
    per_worker = TOTAL_REQUESTS // CONCURRENCY

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            for _ in range(per_worker):
                conn.request(
                    "GET",
                    f"{path}?{REQUEST_ID}={request_id}",
                    headers={"Host": "gw.example", **headers},
                )
                resp = conn.getresponse()
                resp.read()
                ok[k] += resp.status == 200
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return sum(ok)


def _settled_count(server: HTTPServer, path: str, request_id: str) -> int:
    """The mirror's count once copies stop arriving (they are fire-and-forget)."""
    last = [-1, time.monotonic()]

    def stable() -> bool:
        n = Backends.seen(server, path, request_id)
        now = time.monotonic()
        if n != last[0]:
            last[0], last[1] = n, now
            return False
        return now - last[1] >= 0.5

    wait_for(stable, timeout=30, interval=0.05)
    return last[0]


@pytest.mark.parametrize(
    ("path", "percent"),
    [
        ("/percent-mirror", 20),
        ("/percent-mirror-fraction", 50),
        ("/percent-mirror-and-modify-headers", 35),
    ],
)
def test_percentage_mirror_within_three_sigma(
    gateway: tuple[Proxy, Backends], path: str, percent: int
) -> None:
    proxy, backends = gateway
    rid = str(uuid.uuid4())
    assert send(proxy.port, path, rid, MODIFY_REQUEST_HEADERS)[0] == 200
    primary_request(backends, path, rid)
    p = percent / 100
    mean = TOTAL_REQUESTS * p
    sigma = math.sqrt(TOTAL_REQUESTS * p * (1 - p))
    low, high = mean - 3 * sigma, mean + 3 * sigma
    counts: list[int] = []
    for _ in range(DISTRIBUTION_ROUNDS):
        rid = str(uuid.uuid4())
        assert _send_many(proxy.port, path, rid, MODIFY_REQUEST_HEADERS) == TOTAL_REQUESTS
        n = _settled_count(backends.v2, path, rid)
        counts.append(n)
        if low <= n <= high:
            break
    else:
        pytest.fail(
            f"{path}: mirrored {counts} of {TOTAL_REQUESTS}, expected [{low:.2f}, {high:.2f}]"
        )
