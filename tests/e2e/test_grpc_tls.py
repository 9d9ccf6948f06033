"""gRPC over TLS, and the primary's own path (a route's `timeout` / `retries`) over HTTP/2 and
TLS: real grpcio clients and servers through a real mitmdump with the addon.

The client trusts mitmproxy's CA (from a confdir of the test's own); the upstreams present a
self-signed certificate that the proxy trusts through mitmproxy's own options
(`ssl_verify_upstream_trusted_ca`, `ssl_insecure`) or a DestinationRule's `caCertificates`.
"""

from __future__ import annotations

import http.client
import re
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.support import grpc_servers as gs
from tests.support import meshconfig as mc
from tests.support import servers as srv
from tests.support.mitmdump import Proxy, start_proxy
from tests.support.processes import wait_for

HOST = "greeter.example.internal"


@pytest.fixture
def proxy_for(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(config: Path, *options: str) -> Proxy:
        proxy = start_proxy(
            "http://127.0.0.1:1",
            [config],
            "mirror_verbosity=each",
            f"confdir={tmp_path / 'confdir'}",
            *options,
        )
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def tls_destination_rule(host: str, ca: Path) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host.split(".")[0]}}}
spec:
  host: {host}
  trafficPolicy:
    tls: {{mode: SIMPLE, sni: localhost, caCertificates: {ca}}}
"""


def config(path: Path, primary: int, mirror: int | None, *docs: str, rule: str = "") -> Path:
    parts = [mc.service_entry("greeter", HOST, primary, protocol="GRPC"), *docs]
    mirror_line = ""
    if mirror is not None:
        parts.append(mc.service_entry("v2", "v2.internal", mirror, protocol="GRPC"))
        mirror_line = "\n    mirror: {host: v2.internal}"
    parts.append(
        f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter}}
spec:
  hosts: [{HOST}]
  http:
  - route: [{{destination: {{host: {HOST}}}}}]{rule}{mirror_line}
"""
    )
    path.write_text("\n---\n".join(p.strip() for p in parts) + "\n")
    return path


def tls_channel(port: int, ca_pem: bytes) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    return grpc.secure_channel(
        f"127.0.0.1:{port}",
        creds,
        options=[("grpc.ssl_target_name_override", HOST), ("grpc.default_authority", HOST)],
    )


def mitmproxy_ca(tmp_path: Path) -> bytes:
    path = tmp_path / "confdir" / "mitmproxy-ca-cert.pem"
    wait_for(path.exists, 10, what="mitmproxy's CA")
    return path.read_bytes()


def test_tls_grpc_both_ways(
    tmp_path: Path, grpc_servers: Callable[..., gs.GrpcServer], proxy_for: Callable[..., Proxy]
) -> None:
    """A TLS client (ALPN h2) in front of a TLS gRPC primary and a TLS gRPC mirror: the primary
    is reached with ALPN h2 (mitmproxy, trusting the CA through its own option), the copy too
    (the DestinationRule's caCertificates)."""
    key, cert = gs.tls_pair(tmp_path)
    ca = tmp_path / "grpc-cert.pem"
    primary = grpc_servers("primary", tls=(key, cert))
    v2 = grpc_servers("v2", tls=(key, cert))
    cfg = config(
        tmp_path / "c.yaml",
        primary.port,
        v2.port,
        tls_destination_rule(HOST, ca),
        tls_destination_rule("v2.internal", ca),
    )
    proxy = proxy_for(cfg, f"ssl_verify_upstream_trusted_ca={ca}")
    with tls_channel(proxy.port, mitmproxy_ca(tmp_path)) as ch:
        answers = [ch.unary_unary(gs.ECHO)(f"t{i}".encode(), timeout=10) for i in range(5)]
    assert answers == [f"primary:t{i}".encode() for i in range(5)]
    wait_for(lambda: v2.handled() == 5, 15, what="5 copies over TLS")
    wait_for(lambda: len(proxy.log_lines("mirror sent 200 grpc=OK")) == 5, 10, what="outcomes")


def test_a_tls_client_in_front_of_a_plaintext_grpc_primary(
    tmp_path: Path, grpc_servers: Callable[..., gs.GrpcServer], proxy_for: Callable[..., Proxy]
) -> None:
    primary, v2 = grpc_servers("primary"), grpc_servers("v2")
    proxy = proxy_for(config(tmp_path / "c.yaml", primary.port, v2.port))
    with tls_channel(proxy.port, mitmproxy_ca(tmp_path)) as ch:
        assert ch.unary_unary(gs.ECHO)(b"x", timeout=10) == b"primary:x"
    wait_for(lambda: v2.handled() == 1, 15, what="the copy")
    assert not [line for line in proxy.lines if len(line) > 1000]  # no ClientHello dumped


def test_a_grpc_route_with_a_timeout_is_sent_by_meshmirror_over_http2(
    tmp_path: Path, grpc_servers: Callable[..., gs.GrpcServer], proxy_for: Callable[..., Proxy]
) -> None:
    primary, v2 = grpc_servers("primary"), grpc_servers("v2")
    rule = "\n    timeout: 5s"
    proxy = proxy_for(config(tmp_path / "c.yaml", primary.port, v2.port, rule=rule))
    with grpc.insecure_channel(
        f"127.0.0.1:{proxy.port}", options=[("grpc.default_authority", HOST)]
    ) as ch:
        answers = [ch.unary_unary(gs.ECHO)(f"u{i}".encode(), timeout=10) for i in range(5)]
        with pytest.raises(grpc.RpcError) as error:
            ch.unary_unary(gs.ECHO)(b"fail:no price", timeout=10)
    assert answers == [f"primary:u{i}".encode() for i in range(5)]
    # The primary's own gRPC status and message reach the client (trailers passed on).
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "no price"
    assert primary.handled() == 6
    wait_for(lambda: v2.handled() == 6, 15, what="6 copies")


@pytest.mark.parametrize("rule", ["\n    timeout: 5s", ""], ids=["own-path", "mitmproxys-path"])
def test_fields_an_http1_client_names_in_connection_do_not_reach_an_http2_primary(
    tmp_path: Path, proxy_for: Callable[..., Proxy], rule: str
) -> None:
    """An HTTP/1.1 client in front of an HTTP/2 primary: the fields its Connection header
    names are hop-by-hop (RFC 9110 7.6.1) and are not sent on, nor a TE HTTP/2 does not allow,
    on meshmirror's own path (a route with a timeout) as on mitmproxy's. The answer reaches the
    client whole, without the trailers HTTP/1.1 cannot carry here (mitmproxy's connection to
    the client failed after the head, and the client waited out its timeout)."""
    primary = gs.H2Server(gs.grpc_ok)
    try:
        proxy = proxy_for(config(tmp_path / "c.yaml", primary.port, None, rule=rule))
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=15)
        try:
            conn.request(
                "POST",
                gs.ECHO,
                body=gs.frame(b"hi"),
                headers={
                    "Host": HOST,
                    "Content-Type": "application/grpc",
                    "Connection": "X-Hop, TE",
                    "TE": "deflate,gzip;q=0.3",  # as libwww-perl sends it
                    "X-Hop": "not for the next hop",
                    "X-Keep": "1",
                },
            )
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        assert (resp.status, body) == (200, gs.frame(b"raw:hi"))
        assert resp.getheader("grpc-status") is None  # the trailer is not made a header either
        [sent] = primary.received
        assert sent.headers[b"x-keep"] == b"1"
        assert b"x-hop" not in sent.headers and b"connection" not in sent.headers
        # HTTP/2 allows only `te: trailers`, which meshmirror's own path adds for gRPC calls.
        assert sent.headers.get(b"te") == (b"trailers" if rule else None)
    finally:
        primary.close()


def test_grpc_retries_read_the_grpc_status(tmp_path: Path, proxy_for: Callable[..., Proxy]) -> None:
    """retryOn: unavailable retries a call the primary answered UNAVAILABLE (from its
    grpc-status), as Envoy does."""
    answers = iter([gs.grpc_status(14, "warming up"), gs.grpc_ok])

    def flaky(ex: gs.H2Exchange) -> None:
        next(answers, gs.grpc_ok)(ex)

    primary = gs.H2Server(flaky)
    try:
        rule = "\n    retries: {attempts: 2, retryOn: unavailable}"
        proxy = proxy_for(config(tmp_path / "c.yaml", primary.port, None, rule=rule))
        events = gs.h2c_grpc_call(proxy.port, gs.ECHO, b"again", HOST)
        trailers = [e for e in events if type(e).__name__ == "TrailersReceived"]
        assert trailers and dict(trailers[0].headers)[b"grpc-status"] == b"0", events
        assert len(primary.received) == 2
        [line] = proxy.log_lines("primary attempt 1 of 3")
        assert "answered 200 grpc-status 14: retried" in line, line
    finally:
        primary.close()


@pytest.mark.parametrize(
    ("option", "status"),
    [("ssl_insecure=true", 200), ("ssl_verify_upstream_trusted_ca=CA", 200), (None, 503)],
    ids=["ssl-insecure", "trusted-ca", "not-trusted"],
)
def test_the_primarys_own_path_honours_mitmproxys_upstream_tls_options(
    tmp_path: Path, proxy_for: Callable[..., Proxy], option: str | None, status: int
) -> None:
    """A route with `timeout` to a TLS HTTP/1.1 primary with a private certificate: verified as
    mitmproxy verifies its own upstream connections; a failed attempt is logged with its cause
    at the default verbosity."""
    key, cert = gs.tls_pair(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "grpc-cert.pem", tmp_path / "grpc-key.pem")
    primary = srv.FaultServer(srv.status(200), tls=ctx)
    try:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            mc.service_entry("p", "primary.local", primary.port, protocol="HTTPS")
            # The certificate is for localhost: SNI and the name verified (the trust is
            # mitmproxy's option, or none).
            + "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            "metadata: {name: p}\nspec:\n  host: primary.local\n"
            "  trafficPolicy: {tls: {mode: SIMPLE, sni: localhost}}\n"
            + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            "metadata: {name: a}\nspec:\n  hosts: [app.example.com]\n  http:\n"
            "  - route: [{destination: {host: primary.local}}]\n    timeout: 5s\n"
        )
        options = [] if option is None else [option.replace("CA", str(tmp_path / "grpc-cert.pem"))]
        proxy = proxy_for(cfg, *options)
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=15)
        conn.request("GET", "/x", headers={"Host": "app.example.com"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == status, proxy.output
        if status == 503:
            [line] = proxy.log_lines("primary attempt 1 of 1")
            assert re.search(r"failed: connect-failure \(.*CERTIFICATE_VERIFY_FAILED", line), line
    finally:
        primary.close()
