"""`mirror_default_retries` end to end: with `istio`, a route without `retries` gets Istio's mesh
default (2 retries on connect-failure, refused-stream, unavailable, cancelled; since Istio 1.24
no HTTP status), sent by the addon itself; with `off` (the default) mitmproxy forwards the
primary once. Either way the request is mirrored once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.e2e.test_httproute import mirrored_only
from tests.e2e.test_proxy import ANY, Client, service_entry, virtual_service, write_config
from tests.support.mitmdump import Proxy

RULES = """
  - route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
"""


@pytest.mark.parametrize(
    ("option", "calls", "answer"),
    [
        ("off", 1, (200, "14", b"busy")),
        ("istio", 2, (200, None, b"ok")),
    ],
)
def test_default_retries_follow_the_option(
    tmp_path: Path,
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    proxies: Callable[..., Proxy],
    option: str,
    calls: int,
    answer: tuple[int, str | None, bytes],
) -> None:
    seen: list[str] = []

    def unavailable_once(req: Request) -> Response:
        seen.append(req.path)
        if req.path == "/call" and seen.count("/call") == 1:
            # gRPC's UNAVAILABLE: the mesh default retries it, a 503 it would not.
            return Response("busy", headers={"grpc-status": "14"})
        return Response("ok")

    httpserver.expect_request(ANY).respond_with_handler(unavailable_once)
    mirror_server.expect_request(ANY).respond_with_data("mirror")
    cfg = write_config(
        tmp_path,
        service_entry("primary", "primary.local", httpserver.port),
        service_entry("shadow", "shadow.local", mirror_server.port),
        virtual_service(RULES),
    )
    proxy = proxies(httpserver.url_for("/").rstrip("/"), [cfg], f"mirror_default_retries={option}")
    client = Client(proxy.port)
    status, headers, body, _ = client.request("POST", "/call", body=b"payload")
    assert (status, headers.get("grpc-status"), body) == answer
    assert seen.count("/call") == calls
    copies = mirrored_only(mirror_server, client, "/control")
    assert sorted(r.path for r in copies) == ["/call", "/control"]
    client.close()


def test_a_503_is_not_retried_by_istios_default(
    tmp_path: Path, httpserver: HTTPServer, proxies: Callable[..., Proxy]
) -> None:
    httpserver.expect_request(ANY).respond_with_data("down", status=503)
    cfg = write_config(
        tmp_path,
        service_entry("primary", "primary.local", httpserver.port),
        virtual_service("  - route: [{destination: {host: primary.local}}]\n"),
    )
    proxy = proxies(httpserver.url_for("/").rstrip("/"), [cfg], "mirror_default_retries=istio")
    client = Client(proxy.port)
    status, _, body, _ = client.request("GET", "/x")
    assert (status, body) == (503, b"down")
    assert len(httpserver.log) == 1
    client.close()
