"""Istio's own mirroring integration test, reproduced for both protocols it runs: HTTP and gRPC.

Istio (tests/integration/pilot/mirror_test.go) routes 100 calls per case to service b with a
mirror to service c (or to an external ServiceEntry), tags each call with the case's id (the
HTTP path, the gRPC message) and compares the share of ids c logged with the ids b logged:
mirror percentage absent -> 100 +-0, 50 -> +-10, 10 -> +-5, 0 -> 0 +-0, an external ServiceEntry
as the mirror -> 100 +-0. Here b and c are real HTTP and grpcio servers counting what they
handle, behind one real mitmdump with the addon; b and c are a Kubernetes Service each (with a
WorkloadEntry standing in for the pod), the external target a MESH_EXTERNAL ServiceEntry.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from pytest_httpserver import HTTPServer

from tests.support import grpc_servers as gs
from tests.support.mitmdump import Proxy, start_proxy
from tests.support.processes import wait_for

CALLS = 100
# (case, mirrorPercentage or None, mirror target, expected percent, tolerance)
CASES = [
    ("absent", None, "c", 100, 0),
    ("fifty", 50, "c", 50, 10),
    ("ten", 10, "c", 10, 5),
    ("zero", 0, "c", 0, 0),
    ("external", None, "external", 100, 0),
]


def service(name: str, http_port: int, grpc_port: int) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: echo}}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 80}}
  - {{name: grpc, port: 7070}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: echo}}
spec:
  address: 127.0.0.1
  labels: {{app: {name}}}
  ports: {{http: {http_port}, grpc: {grpc_port}}}
"""


def external(http_port: int, grpc_port: int) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external, namespace: echo}}
spec:
  hosts: [external.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  - {{number: 7070, name: grpc, protocol: GRPC}}
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {http_port}, grpc: {grpc_port}}}
"""


def virtual_service(case: str, protocol: str, percent: int | None, target: str) -> str:
    port = 80 if protocol == "http" else 7070
    host = "external.example.com" if target == "external" else f"{target}.echo.svc.cluster.local"
    pct = "" if percent is None else f"\n    mirrorPercentage: {{value: {percent}}}"
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {protocol}-{case}, namespace: echo}}
spec:
  hosts: [{protocol}-{case}.b]
  http:
  - route:
    - destination: {{host: b.echo.svc.cluster.local, port: {{number: {port}}}}}
    mirror: {{host: {host}, port: {{number: {port}}}}}{pct}
"""


@pytest.fixture
def grpc_backends() -> Iterator[dict[str, gs.GrpcServer]]:
    servers = {name: gs.GrpcServer(name) for name in ("b", "c", "external")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def http_backends() -> Iterator[dict[str, HTTPServer]]:
    servers = {name: HTTPServer(host="127.0.0.1", port=0) for name in ("b", "c", "external")}
    for server in servers.values():
        server.expect_request(re.compile(".*")).respond_with_data("ok")
        server.start()
    yield servers
    for server in servers.values():
        server.clear()
        if server.is_running():
            server.stop()


@pytest.fixture
def proxy(
    tmp_path: Path, grpc_backends: dict[str, gs.GrpcServer], http_backends: dict[str, HTTPServer]
) -> Iterator[Proxy]:
    docs = [
        service("b", http_backends["b"].port, grpc_backends["b"].port),
        service("c", http_backends["c"].port, grpc_backends["c"].port),
        external(http_backends["external"].port, grpc_backends["external"].port),
    ]
    for case, percent, target, _, _ in CASES:
        for protocol in ("http", "grpc"):
            docs.append(virtual_service(case, protocol, percent, target))
    config = tmp_path / "istio-mirror-test.yaml"
    config.write_text("\n---\n".join(d.strip() for d in docs) + "\n")
    proxy = start_proxy("http://127.0.0.1:1", [config], "mirror_summary_interval=0")
    yield proxy
    proxy.stop()


def http_ids(server: HTTPServer, case: str) -> list[str]:
    return [req.path for req, _ in list(server.log) if req.path.startswith(f"/{case}-")]


def grpc_ids(server: gs.GrpcServer, case: str) -> list[bytes]:
    return [m for m in list(server.seen) if m.startswith(f"{case}-".encode())]


def settled(count: Callable[[], int], at_least: int) -> int:
    """The count once it has reached `at_least` and not moved for half a second (copies are
    fire-and-forget: the mirror logs them a little after the client had its answers)."""
    seen = [-1]

    def still() -> bool:
        now = count()
        done = now >= at_least and now == seen[0]
        seen[0] = now
        return done

    wait_for(still, 15, interval=0.5, what=f"at least {at_least} copies, then no more")
    return seen[0]


def send_calls(port: int, case: str, tag: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    for i in range(CALLS):
        conn.request("GET", f"/{tag}-{i}", headers={"Host": f"http-{case}.b"})
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"ok")
    conn.close()
    with grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.default_authority", f"grpc-{case}.b")]
    ) as ch:
        echo = ch.unary_unary(gs.ECHO)
        for i in range(CALLS):
            assert echo(f"{tag}-{i}".encode(), timeout=10) == f"b:{tag}-{i}".encode()


@pytest.mark.parametrize(("case", "percent", "target", "expected", "tolerance"), CASES)
def test_istio_mirroring_over_http_and_grpc(
    proxy: Proxy,
    http_backends: dict[str, HTTPServer],
    grpc_backends: dict[str, gs.GrpcServer],
    case: str,
    percent: int | None,
    target: str,
    expected: int,
    tolerance: int,
) -> None:
    """As Istio's test, each check is retried (up to 3 times) with calls of a fresh id:
    a share of 100 random draws is within its tolerance most of the time, not always."""
    low, high = expected - tolerance, expected + tolerance
    other = "external" if target == "c" else "c"
    shares: list[tuple[int, int]] = []
    for attempt in range(3):
        tag = f"{case}{attempt}"
        send_calls(proxy.port, case, tag)
        # Istio's percent: the ids the mirror logged over the ids the primary logged.
        assert len(http_ids(http_backends["b"], tag)) == CALLS
        assert len(grpc_ids(grpc_backends["b"], tag)) == CALLS
        got_http = settled(lambda t=tag: len(http_ids(http_backends[target], t)), low)
        got_grpc = settled(lambda t=tag: len(grpc_ids(grpc_backends[target], t)), low)
        shares.append((got_http, got_grpc))
        for ids in (http_ids(http_backends[target], tag), grpc_ids(grpc_backends[target], tag)):
            assert len(set(ids)) == len(ids)  # each call copied at most once
        assert http_ids(http_backends[other], tag) == []
        assert grpc_ids(grpc_backends[other], tag) == []
        if all(low <= n * 100 / CALLS <= high for n in (got_http, got_grpc)):
            break
    else:
        raise AssertionError(f"{case}: mirrored (HTTP, gRPC) per attempt {shares}")
    for req, _ in list(http_backends[target].log):
        assert req.headers["Host"] == f"http-{case}.b-shadow"
