"""The mirroring proxy end to end: a real mitmdump with the addon, real backends, real sockets."""

from __future__ import annotations

import http.client
import math
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from meshmirror.mirror.shadow import host_address
from tests.support import servers as srv
from tests.support.mitmdump import Proxy
from tests.support.ports import refused_port
from tests.support.processes import wait_for

ANY = re.compile(r".*")


def service_entry(name: str, host: str, port: int, labels: dict[str, str] | None = None) -> str:
    label_text = ""
    if labels:
        label_text = "\n    labels: {" + ", ".join(f"{k}: {v}" for k, v in labels.items()) + "}"
    return f"""
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{host}]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {port}}}{label_text}
"""


def write_config(tmp_path: Path, *docs: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("\n---\n".join(d.strip() for d in docs) + "\n")
    return path


def virtual_service(http_rules: str, hosts: str = "[app.example.com]") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app}}
spec:
  hosts: {hosts}
  http:
{http_rules}
"""


class Client:
    """A keep-alive HTTP/1.1 client for the proxy (one connection, reused)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)

    def request(
        self,
        method: str,
        path: str,
        host: str = "app.example.com",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes, float]:
        h = {"Host": host, **(headers or {})}
        t0 = time.perf_counter()
        self.conn.request(method, path, body=body, headers=h)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, dict(resp.getheaders()), data, time.perf_counter() - t0

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def upstream() -> Iterator[HTTPServer]:
    """The reverse-proxy upstream (`--mode reverse:`): serves requests no route claims."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request(ANY).respond_with_data("from-upstream", status=200)
    server.start()
    yield server
    server.stop()


def requests_of(server: HTTPServer) -> list[Request]:
    return [req for req, _ in list(server.log)]


@pytest.fixture
def basic(
    tmp_path: Path,
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    upstream: HTTPServer,
    proxies: Callable[..., Proxy],
) -> Callable[..., tuple[Proxy, Client]]:
    """Start a proxy with primary = httpserver, mirror = mirror_server for app.example.com."""

    def start(
        rules: str | None = None, *options: str, hosts: str = "[app.example.com]"
    ) -> tuple[Proxy, Client]:
        mirror_server.expect_request(ANY).respond_with_data("from-mirror", status=200)
        rules = (
            rules
            or """
  - route:
    - destination: {host: primary.local}
    mirror: {host: shadow.local}
"""
        )
        cfg = write_config(
            tmp_path,
            service_entry("primary", "primary.local", httpserver.port),
            service_entry("shadow", "shadow.local", mirror_server.port),
            virtual_service(rules, hosts),
        )
        proxy = proxies(upstream.url_for("/").rstrip("/"), [cfg], *options)
        return proxy, Client(proxy.port)

    return start


def test_primary_response_reaches_client_unchanged(
    basic: Callable[..., tuple[Proxy, Client]], httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    httpserver.expect_request("/things", method="POST").respond_with_data(
        b"created\x00\xffbytes",
        status=201,
        headers={"X-Primary": "yes", "Content-Type": "application/x-test"},
    )
    proxy, client = basic()
    status, headers, body, _ = client.request("POST", "/things?a=1", body=b"payload")
    assert status == 201
    assert body == b"created\x00\xffbytes"
    assert headers["X-Primary"] == "yes"
    assert headers["Content-Type"] == "application/x-test"
    primary = requests_of(httpserver)
    assert len(primary) == 1
    assert primary[0].headers["Host"] == "app.example.com"  # the client's Host, not the endpoint
    wait_for(lambda: len(mirror_server.log) == 1)
    client.close()


@pytest.mark.parametrize(
    ("host", "shadow"),
    [
        ("app.example.com", "app.example.com-shadow"),
        ("app.example.com:8000", "app.example.com-shadow:8000"),
    ],
    ids=["no-port", "with-port"],
)
def test_mirror_receives_full_copy_with_shadow_host(
    basic: Callable[..., tuple[Proxy, Client]],
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    host: str,
    shadow: str,
) -> None:
    httpserver.expect_request(ANY).respond_with_data("primary")
    proxy, client = basic()
    status, _, body, _ = client.request(
        "PUT",
        "/items/7?q=a%20b&x=1",
        host=host,
        headers={"X-Custom": "v1", "X-Request-Id": "rid-123", "Content-Type": "text/plain"},
        body=b"the body",
    )
    assert (status, body) == (200, b"primary")
    wait_for(lambda: len(mirror_server.log) == 1)
    copy = requests_of(mirror_server)[0]
    assert copy.method == "PUT"
    assert copy.full_path == "/items/7?q=a%20b&x=1"
    assert copy.headers["Host"] == shadow
    assert copy.headers["X-Custom"] == "v1"
    assert copy.headers["X-Request-Id"] == "rid-123"
    assert copy.get_data() == b"the body"
    primary = requests_of(httpserver)[0]
    assert primary.headers["Host"] == host
    # As Envoy builds a copy's: the primary's X-Forwarded-For, then the proxy's own address.
    before = primary.headers.get("X-Forwarded-For")
    assert copy.headers["X-Forwarded-For"] == (f"{before}," if before else "") + host_address()
    client.close()


def test_request_id_added_to_both_when_missing(
    basic: Callable[..., tuple[Proxy, Client]], httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    httpserver.expect_request(ANY).respond_with_data("primary")
    proxy, client = basic()
    client.request("GET", "/a")
    wait_for(lambda: len(mirror_server.log) == 1)
    rid_primary = requests_of(httpserver)[0].headers.get("X-Request-Id")
    rid_copy = requests_of(mirror_server)[0].headers.get("X-Request-Id")
    assert rid_primary and rid_primary == rid_copy
    client.close()


def test_every_routed_request_gets_a_request_id_whether_or_not_it_is_mirrored(
    basic: Callable[..., tuple[Proxy, Client]],
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    upstream: HTTPServer,
) -> None:
    # As Envoy: the id is added by the proxy for every request a route claims, not only for
    # the sampled ones; a client's own id is kept; a request no route claims is left alone.
    httpserver.expect_request(ANY).respond_with_data("primary")
    proxy, client = basic(
        """
  - route:
    - destination: {host: primary.local}
    mirror: {host: shadow.local}
    mirrorPercentage: {value: 0}
"""
    )
    for _ in range(3):
        assert client.request("GET", "/a")[0] == 200
    client.request("GET", "/b", headers={"X-Request-Id": "client-id"})
    assert client.request("GET", "/c", host="other.example.com")[2] == b"from-upstream"
    ids = [r.headers.get_all("X-Request-Id") for r in requests_of(httpserver)]
    assert [len(i) for i in ids] == [1, 1, 1, 1]
    assert len({i[0] for i in ids[:3]}) == 3  # a fresh id per request
    assert ids[3] == ["client-id"]
    assert requests_of(upstream)[0].headers.get("X-Request-Id") is None
    assert mirror_server.log == []
    client.close()


def test_unmatched_host_goes_upstream_without_mirror(
    basic: Callable[..., tuple[Proxy, Client]],
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    upstream: HTTPServer,
) -> None:
    proxy, client = basic()
    status, _, body, _ = client.request("GET", "/x", host="other.example.com")
    assert (status, body) == (200, b"from-upstream")
    status, _, body, _ = client.request("GET", "/y", host="app.example.com")
    wait_for(lambda: len(mirror_server.log) == 1)
    assert [r.path for r in requests_of(mirror_server)] == ["/y"]
    assert [r.path for r in requests_of(upstream)] == ["/x"]
    client.close()


def send_many(client: Client, n: int, path: str = "/p", **kw: object) -> None:
    for i in range(n):
        status, _, _, _ = client.request("GET", f"{path}?i={i}", **kw)  # type: ignore[arg-type]
        assert status == 200


def settle(server: HTTPServer, proxy: Proxy, expected_min: int = 0, quiet: float = 0.5) -> int:
    """Wait until the mirror stops receiving (no new copy for `quiet` seconds)."""
    last = -1
    stable_since = time.monotonic()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        n = len(server.log)
        if n != last:
            last, stable_since = n, time.monotonic()
        elif n >= expected_min and time.monotonic() - stable_since > quiet:
            return n
        time.sleep(0.05)
    raise AssertionError(f"mirror did not settle (last count {last})")


@pytest.mark.parametrize(
    ("percentage", "n", "expected"),
    [("", 50, 50), ("mirrorPercentage: {value: 0}", 50, 0)],
    ids=["absent-100pct", "explicit-0"],
)
def test_absent_and_zero_percentage(
    basic: Callable[..., tuple[Proxy, Client]],
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    percentage: str,
    n: int,
    expected: int,
) -> None:
    httpserver.expect_request(ANY).respond_with_data("p")
    rules = f"""
  - route:
    - destination: {{host: primary.local}}
    mirror: {{host: shadow.local}}
    {percentage}
"""
    proxy, client = basic(rules)
    send_many(client, n)
    assert len(httpserver.log) == n
    assert settle(mirror_server, proxy, expected) == expected
    client.close()


def within_3_sigma(count: int, n: int, p: float) -> bool:
    mean = n * p
    sigma = math.sqrt(n * p * (1 - p))
    return abs(count - mean) <= 3 * sigma


def test_fifty_percent_of_2000_within_3_sigma(
    basic: Callable[..., tuple[Proxy, Client]], httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    httpserver.expect_request(ANY).respond_with_data("p")
    rules = """
  - route:
    - destination: {host: primary.local}
    mirror: {host: shadow.local}
    mirrorPercentage: {value: 50}
"""
    proxy, client = basic(rules)
    send_many(client, 2000)
    count = settle(mirror_server, proxy, 1)
    assert within_3_sigma(count, 2000, 0.5), count
    client.close()


def test_two_mirrors_with_different_fractions(
    tmp_path: Path,
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    second_mirror_server: HTTPServer,
    upstream: HTTPServer,
    proxies: Callable[..., Proxy],
) -> None:
    httpserver.expect_request(ANY).respond_with_data("p")
    mirror_server.expect_request(ANY).respond_with_data("a")
    second_mirror_server.expect_request(ANY).respond_with_data("b")
    rules = """
  - route:
    - destination: {host: primary.local}
    mirrors:
    - destination: {host: shadow-a.local}
      percentage: {value: 20}
    - destination: {host: shadow-b.local}
"""
    cfg = write_config(
        tmp_path,
        service_entry("primary", "primary.local", httpserver.port),
        service_entry("shadow-a", "shadow-a.local", mirror_server.port),
        service_entry("shadow-b", "shadow-b.local", second_mirror_server.port),
        virtual_service(rules),
    )
    proxy = proxies(upstream.url_for("/").rstrip("/"), [cfg])
    client = Client(proxy.port)
    n = 600
    send_many(client, n)
    assert settle(second_mirror_server, proxy, n) == n
    count_a = settle(mirror_server, proxy, 1)
    assert within_3_sigma(count_a, n, 0.2), count_a
    client.close()


def test_first_match_withoutheaders_regex_and_weighted_subsets(
    tmp_path: Path,
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    second_mirror_server: HTTPServer,
    upstream: HTTPServer,
    proxies: Callable[..., Proxy],
) -> None:
    """v1 = httpserver, v2 = second_mirror_server (as a primary subset), mirror = mirror_server."""
    httpserver.expect_request(ANY).respond_with_data("v1")
    second_mirror_server.expect_request(ANY).respond_with_data("v2")
    mirror_server.expect_request(ANY).respond_with_data("m")
    docs = f"""
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: app}}
spec:
  hosts: [app.internal]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {httpserver.port}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {second_mirror_server.port}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: app}}
spec:
  host: app.internal
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""
    rules = """
  - name: only-v2
    match:
    - uri: {regex: "/v2/[0-9]+"}
    route:
    - destination: {host: app.internal, subset: v2}
  - name: no-debug-header
    match:
    - uri: {prefix: /mirrored}
      withoutHeaders:
        x-debug: {exact: "1"}
    route:
    - destination: {host: app.internal, subset: v1}
    mirror: {host: shadow.local}
  - name: split
    route:
    - destination: {host: app.internal, subset: v1}
      weight: 75
    - destination: {host: app.internal, subset: v2}
      weight: 25
"""
    cfg = write_config(
        tmp_path,
        docs,
        service_entry("shadow", "shadow.local", mirror_server.port),
        virtual_service(rules),
    )
    proxy = proxies(upstream.url_for("/").rstrip("/"), [cfg])
    client = Client(proxy.port)
    # regex rule: full match only
    assert client.request("GET", "/v2/123")[2] == b"v2"
    assert client.request("GET", "/v2/123x")[2] in (b"v1", b"v2")  # falls to the split rule
    # withoutHeaders: mirrored without the header (missing counts as ""), not with it
    assert client.request("GET", "/mirrored/a")[2] == b"v1"
    assert client.request("GET", "/mirrored/b", headers={"x-debug": "1"})[2] in (b"v1", b"v2")
    assert client.request("GET", "/mirrored/c", headers={"x-debug": "0"})[2] == b"v1"
    wait_for(lambda: len(mirror_server.log) == 2)
    assert sorted(r.path for r in requests_of(mirror_server)) == ["/mirrored/a", "/mirrored/c"]
    # weighted split 75/25 over 400 requests
    v1_before, v2_before = len(httpserver.log), len(second_mirror_server.log)
    send_many(client, 400, path="/split")
    v2 = len(second_mirror_server.log) - v2_before
    assert len(httpserver.log) - v1_before + v2 == 400
    assert within_3_sigma(v2, 400, 0.25), v2
    client.close()


def test_one_mib_post_arrives_byte_exact(
    basic: Callable[..., tuple[Proxy, Client]], httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    httpserver.expect_request(ANY).respond_with_data("ok")
    proxy, client = basic()
    body = bytes((i * 7 + i // 251) % 256 for i in range(1024 * 1024))
    status, _, _, _ = client.request("POST", "/upload", body=body)
    assert status == 200
    wait_for(lambda: len(mirror_server.log) == 1, timeout=15)
    assert requests_of(mirror_server)[0].get_data() == body
    assert requests_of(httpserver)[0].get_data() == body
    client.close()


def test_body_over_max_body_is_skipped_with_reason(
    basic: Callable[..., tuple[Proxy, Client]], httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    httpserver.expect_request(ANY).respond_with_data("ok")
    proxy, client = basic(None, "mirror_max_body=1k")
    status, _, _, _ = client.request("POST", "/big", body=b"x" * 2048)
    assert status == 200
    status, _, _, _ = client.request("POST", "/small", body=b"x" * 512)
    wait_for(lambda: len(mirror_server.log) == 1)
    assert [r.path for r in requests_of(mirror_server)] == ["/small"]
    wait_for(lambda: proxy.log_lines("mirror skipped: body_too_large"))
    assert len(requests_of(httpserver)) == 2
    client.close()


def test_bad_config_stops_startup_with_located_error(
    tmp_path: Path, upstream: HTTPServer, proxies: Callable[..., Proxy]
) -> None:
    cfg = write_config(
        tmp_path,
        service_entry("shadow", "shadow.local", 9),
        virtual_service(
            """
  - route:
    - destination: {host: shadow.local}
    mirror: {host: shadow.local}
    mirrorPercentage: {value: 150}
"""
        ),
    )
    proxy = proxies(upstream.url_for("/").rstrip("/"), [cfg], expect_failure=True)
    assert proxy.proc.returncode != 0
    assert "spec.http[0].mirrorPercentage.value" in proxy.output
    assert str(cfg) in proxy.output
    assert "150" in proxy.output


# --- a misbehaving mirror never changes what the client gets ------------------------------------


def timed_requests(client: Client, n: int) -> tuple[list[tuple[int, bytes]], float]:
    results = []
    times = []
    for i in range(n):
        status, _, body, dt = client.request("GET", f"/r?i={i}")
        results.append((status, body))
        times.append(dt)
    times.sort()
    return results, times[len(times) // 2]


@pytest.mark.parametrize("fault", ["refused", "silent", "http500"])
def test_misbehaving_mirror_leaves_primary_identical(
    fault: str,
    tmp_path: Path,
    httpserver: HTTPServer,
    upstream: HTTPServer,
    proxies: Callable[..., Proxy],
) -> None:
    httpserver.expect_request(ANY).respond_with_handler(
        lambda req: Response(f"primary {req.args.get('i')}", status=200)
    )
    silent = srv.FaultServer(srv.silent) if fault == "silent" else None
    failing = None
    if fault == "refused":
        mirror_port = refused_port()
    elif fault == "silent":
        assert silent is not None
        mirror_port = silent.port
    else:
        failing = HTTPServer(host="127.0.0.1", port=0)
        failing.expect_request(ANY).respond_with_data("boom", status=500)
        failing.start()
        mirror_port = failing.port
    try:
        base_cfg = write_config(
            tmp_path,
            service_entry("primary", "primary.local", httpserver.port),
            virtual_service("  - route:\n    - destination: {host: primary.local}\n"),
        )
        baseline = proxies(upstream.url_for("/").rstrip("/"), [base_cfg])
        bclient = Client(baseline.port)
        expected, base_median = timed_requests(bclient, 40)
        bclient.close()

        mdir = tmp_path / "m"
        mdir.mkdir()
        cfg = write_config(
            mdir,
            service_entry("primary", "primary.local", httpserver.port),
            service_entry("shadow", "shadow.local", mirror_port),
            virtual_service(
                "  - route:\n    - destination: {host: primary.local}\n"
                "    mirror: {host: shadow.local}\n"
            ),
        )
        proxy = proxies(
            upstream.url_for("/").rstrip("/"), [cfg], "mirror_timeout=1s", "mirror_verbosity=each"
        )
        client = Client(proxy.port)
        got, median = timed_requests(client, 40)
        client.close()
        assert got == expected
        # The mirror's fault must not show in the primary's latency (generous bound for CI noise).
        assert median < base_median * 3 + 0.02, (median, base_median)
        word = {
            "refused": "failed: refused",
            "silent": "failed: timeout",
            "http500": "mirror sent 500",
        }[fault]
        wait_for(lambda: proxy.log_lines(word), timeout=10)
    finally:
        if silent:
            silent.close()
        if failing:
            failing.stop()
