"""Hostile clients against a real mitmdump: what they send must neither strip the proxy's own
headers from a copy, nor forge or flood meshmirror's log lines, nor turn into a malformed copy.

The primary and the mirror are raw-socket servers written here: they record every request head
exactly as it arrived and answer 200, so a test can read what the copy carried byte for byte.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from meshmirror.mirror.shadow import host_address
from tests.support import meshconfig as mc
from tests.support.mitmdump import Proxy
from tests.support.processes import wait_for
from tests.support.servers import Recorder


@pytest.fixture
def servers() -> Iterator[tuple[Recorder, Recorder]]:
    primary, mirror = Recorder("primary"), Recorder("mirror")
    yield primary, mirror
    primary.close()
    mirror.close()


GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"""
VIRTUAL_SERVICE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - destination: {host: primary.local}
    mirrors:
    - destination: {host: shadow.local}
"""


@pytest.fixture
def start(
    tmp_path: Path, servers: tuple[Recorder, Recorder], proxies: Callable[..., Proxy]
) -> Callable[..., Proxy]:
    """A proxy for any Host (`*`): primary.local is routed, every request mirrored to
    shadow.local; extra `--set` options may be given."""
    primary, mirror = servers

    def run(*options: str) -> Proxy:
        # A Gateway for every host, as the mesh gateway refuses `*`: any Host a client sends,
        # however odd, is routed and sampled.
        docs = [
            mc.service_entry("primary", "primary.local", primary.port),
            mc.service_entry("shadow", "shadow.local", mirror.port),
            GATEWAY,
            VIRTUAL_SERVICE,
        ]
        cfg = tmp_path / "mesh.yaml"
        cfg.write_text("\n---\n".join(d.strip() for d in docs) + "\n")
        return proxies(f"http://127.0.0.1:{primary.port}", [cfg], *options)

    return run


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` on a new connection and read one response: until its Content-Length body is
    complete, the proxy closes the connection, or the deadline."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and m and len(body) >= int(m.group(1)):
                break
    return out


def h2_request(port: int, headers: list[tuple[str, str]], timeout: float = 10.0) -> int | None:
    """One HTTP/2 request over TLS with headers sent as given (no client-side validation);
    returns the response's :status, None when the stream was reset or nothing came."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    conn = h2.connection.H2Connection(config=config)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="app.example.com") as sock:
            assert sock.selected_alpn_protocol() == "h2"
            conn.initiate_connection()
            conn.send_headers(1, headers, end_stream=True)
            sock.sendall(conn.data_to_send())
            status: int | None = None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    break
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = int(dict(event.headers)[b":status"])
                    if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                        return status
                    if isinstance(event, h2.events.ConnectionTerminated):
                        return status
                sock.sendall(conn.data_to_send())
    return status


def skipped_of(proxy: Proxy) -> dict[str, int]:
    """Stop the proxy (it prints its summary on exit) and return the mirror cluster's skips."""
    proxy.stop()
    summary = mc.last_summary(proxy.lines)
    assert len(summary) == 1, proxy.output[-3000:]
    (counters,) = summary.values()
    assert mc.accounted(counters) == counters["sampled"], counters
    skipped: dict[str, int] = counters["skipped"]
    return skipped


# --- the client cannot strip the proxy's own headers from a copy ------------------------------


@pytest.mark.parametrize(
    "connection",
    [
        "x-meshmirror-shadow",
        "close, x-meshmirror-shadow, x-forwarded-for, x-request-id",
    ],
)
def test_connection_tokens_do_not_strip_the_proxys_own_headers(
    connection: str, start: Callable[..., Proxy], servers: tuple[Recorder, Recorder]
) -> None:
    primary, mirror = servers
    proxy = start()
    answer = exchange(
        proxy.port,
        b"GET /a HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-For: 10.9.9.9\r\n"
        b"Connection: " + connection.encode() + b"\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    wait_for(lambda: mirror.heads, timeout=10, what="the copy")
    fields = mirror.fields(0)
    names = [name for name, _ in fields]
    assert ("x-meshmirror-shadow", "1") in fields, fields
    xff = [value for name, value in fields if name == "x-forwarded-for"]
    assert len(xff) == 1 and xff[0].endswith("," + host_address()), fields
    if "x-forwarded-for" in connection:
        # As Envoy does: the field the client named in Connection is dropped, ours is added
        # (the connection manager's own, at this Gateway, then the copy's).
        assert xff == [f"{host_address()},{host_address()}"], fields
    assert names.count("x-request-id") == 1, fields
    assert re.fullmatch(r"[0-9a-f-]{36}", dict(fields)["x-request-id"]), fields
    # Whatever the client's Connection said is gone; the writer's own framing is the only one.
    assert not any(v for n, v in fields if n == "connection" and "x-" in v), fields
    assert dict(fields)["host"] == "app.example.com-shadow", fields
    # The primary gets the same id, and no Connection token that would let the next hop drop it.
    wait_for(lambda: primary.heads, timeout=10, what="the primary's request")
    at_primary = primary.fields(0)
    ids = [value for name, value in at_primary if name == "x-request-id"]
    assert ids == [dict(fields)["x-request-id"]], at_primary
    tokens = {t.strip().lower() for n, v in at_primary if n == "connection" for t in v.split(",")}
    assert "x-request-id" not in tokens, at_primary


# --- meshmirror's log lines are safe to print ---------------------------------------------------


def _mirror_lines(proxy: Proxy) -> list[str]:
    """The outcome lines so far (a copy whose Host holds a CR is refused by the writer: failed)."""
    return [line for line in list(proxy.lines) if re.search(r"\] mirror (sent|failed)", line)]


def test_outcome_lines_drop_userinfo_escape_controls_and_are_bounded(
    start: Callable[..., Proxy], servers: tuple[Recorder, Recorder]
) -> None:
    primary, mirror = servers
    proxy = start("mirror_verbosity=each")
    hosts = [
        b"user:hunter2@app.example.com",
        b"app\x1b[31mred",
        b"app\rmirror sent 200 rule=FORGED cluster=x endpoint=y host=z gen=1",
        b"h" + b"x" * 20_000,
    ]
    sent = 0
    for host in hosts:
        answer = exchange(
            proxy.port, b"GET /a HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
        )
        if answer.startswith(b"HTTP/1.1 200"):
            sent += 1
    assert sent >= 3, proxy.output[-3000:]  # what mitmproxy lets through is logged below
    wait_for(
        lambda: len(_mirror_lines(proxy)) >= sent,
        timeout=10,
        what=f"{sent} outcome lines in {proxy.output[-4000:]!r}",
    )
    out = proxy.output
    assert "hunter2" not in out
    assert any(" host=app.example.com-shadow " in line for line in _mirror_lines(proxy)), out
    assert "\x1b" not in out
    # A CR in the Host must not start a line of its own (the reader splits on CR as well).
    assert not any(line.startswith("mirror sent 200 rule=FORGED") for line in proxy.lines), out
    for line in _mirror_lines(proxy):
        assert len(line) < 2048, line[:300]
    assert answer.startswith(b"HTTP/1.1 200")  # the 20 kB Host was served and logged, bounded
    assert any("..." in line for line in _mirror_lines(proxy)), out


# --- odd request lines and Hosts: a well-formed copy or a skip reason ---------------------------


def test_odd_hosts_are_skipped_with_a_reason(
    start: Callable[..., Proxy], servers: tuple[Recorder, Recorder]
) -> None:
    primary, mirror = servers
    proxy = start()
    requests = {
        "no_host": b"GET /a HTTP/1.0\r\n\r\n",
        "ip_host": b"GET /a HTTP/1.1\r\nHost: [::1]:8000\r\nConnection: close\r\n\r\n",
        "multiple_hosts": (
            b"GET /a HTTP/1.1\r\nHost: app.example.com\r\nHost: evil\r\nConnection: close\r\n\r\n"
        ),
    }
    served = []
    for reason, data in requests.items():
        answer = exchange(proxy.port, data)
        if answer.startswith(b"HTTP/1."):
            served.append(reason)
    assert served == list(requests), proxy.output[-3000:]
    # A well-formed request afterwards: its copy arriving bounds the wait for the others.
    exchange(proxy.port, b"GET /ok HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n")
    wait_for(lambda: mirror.heads, timeout=10, what="the well-formed copy")
    time.sleep(0.3)
    assert [h.split(b"\r\n", 1)[0] for h in mirror.heads] == [b"GET /ok HTTP/1.1"], mirror.heads
    skipped = skipped_of(proxy)
    for reason in requests:
        assert skipped.get(reason) == 1, skipped


def test_h2_method_that_is_not_a_token_is_skipped(
    start: Callable[..., Proxy], servers: tuple[Recorder, Recorder]
) -> None:
    primary, mirror = servers
    proxy = start()
    authority = f"app.example.com:{proxy.port}"
    status = h2_request(
        proxy.port,
        [(":method", "GET /x"), (":path", "/g"), (":scheme", "https"), (":authority", authority)],
    )
    good = h2_request(
        proxy.port,
        [(":method", "GET"), (":path", "/ok"), (":scheme", "https"), (":authority", authority)],
    )
    assert good == 200, proxy.output[-3000:]
    wait_for(lambda: mirror.heads, timeout=10, what="the well-formed copy")
    time.sleep(0.3)
    assert [h.split(b"\r\n", 1)[0] for h in mirror.heads] == [b"GET /ok HTTP/1.1"], mirror.heads
    skipped = skipped_of(proxy)
    if status is None:
        pytest.skip("mitmproxy itself refused the :method; nothing reached the addon")
    assert skipped.get("bad_method") == 1, skipped
