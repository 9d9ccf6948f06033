"""gRPC and HTTP/2 end to end: real grpcio clients and servers (and a raw HTTP/2 server where a
mirror must misbehave) through a real mitmdump with the addon.

Plaintext clients come with prior knowledge (grpc.insecure_channel, curl
--http2-prior-knowledge); ports of protocol GRPC make the primary and the copies speak HTTP/2
(h2c); streaming calls pass through as they arrive; every copy is counted.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from pytest_httpserver import HTTPServer

from meshmirror.mirror.shadow import host_address
from tests.support import grpc_servers as gs
from tests.support import meshconfig as mc
from tests.support.mitmdump import (
    LISTEN_RE,
    MESHMIRROR,
    MITMDUMP,
    ROOT,
    Proxy,
    read_lines,
    start_proxy,
)
from tests.support.processes import stop, wait_for

HOST = "greeter.example.internal"
ANY = re.compile(".*")


def grpc_config(
    path: Path,
    primary_port: int,
    mirror_port: int | None,
    *,
    percentage: float | None = None,
    mirror_protocol: str = "GRPC",
    extra_rules: str = "",
    extra_docs: tuple[str, ...] = (),
) -> Path:
    docs = [mc.service_entry("greeter", HOST, primary_port, protocol="GRPC"), *extra_docs]
    mirror = ""
    if mirror_port is not None:
        docs.append(mc.service_entry("v2", "v2.internal", mirror_port, protocol=mirror_protocol))
        pct = "" if percentage is None else f"\n    mirrorPercentage: {{value: {percentage}}}"
        mirror = f"\n    mirror: {{host: v2.internal}}{pct}"
    vs = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter}}
spec:
  hosts: [{HOST}]
  http:{extra_rules}
  - route:
    - destination: {{host: {HOST}}}{mirror}
"""
    path.write_text("\n---\n".join(d.strip() for d in [*docs, vs]) + "\n")
    return path


def curl(port: int, http2: str, path: str) -> tuple[str, str]:
    """`curl -s HTTP2 http://127.0.0.1:PORT/PATH` with Host app.example.com: (body, the HTTP
    version curl spoke)."""
    out = subprocess.run(
        [
            "curl",
            "-s",
            http2,
            "--max-time",
            "20",
            "-H",
            "Host: app.example.com",
            "-w",
            "\\n%{http_version}",
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    body, _, version = out.stdout.rpartition("\n")
    return body, version


def channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.default_authority", HOST)])


def echo(ch: grpc.Channel, message: bytes, timeout: float = 10) -> bytes:
    result: bytes = ch.unary_unary(gs.ECHO)(message, timeout=timeout)
    return result


@pytest.fixture
def proxy_for() -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(config: Path, *options: str, upstream: str = "http://127.0.0.1:1") -> Proxy:
        proxy = start_proxy(upstream, [config], "mirror_verbosity=each", *options)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def test_plaintext_grpc_is_served_by_the_primary_and_copied_over_h2c(
    tmp_path: Path, grpc_servers: Callable[..., gs.GrpcServer], proxy_for: Callable[..., Proxy]
) -> None:
    primary, v2 = grpc_servers("primary"), grpc_servers("v2")
    proxy = proxy_for(grpc_config(tmp_path / "c.yaml", primary.port, v2.port))
    with channel(proxy.port) as ch:
        answers = [echo(ch, f"m{i}".encode()) for i in range(10)]
    assert answers == [f"primary:m{i}".encode() for i in range(10)]
    wait_for(lambda: v2.handled() == 10, 15, what="10 copies at the mirror")
    assert sorted(v2.seen) == sorted(f"m{i}".encode() for i in range(10))
    assert primary.handled() == 10
    wait_for(lambda: len(proxy.log_lines("mirror sent 200 grpc=OK")) == 10, 10, what="outcomes")


def test_a_copy_over_http2_carries_the_shadow_authority_and_the_proxys_headers(
    tmp_path: Path, grpc_servers: Callable[..., gs.GrpcServer], proxy_for: Callable[..., Proxy]
) -> None:
    primary = grpc_servers("primary")
    mirror = gs.H2Server()
    try:
        proxy = proxy_for(grpc_config(tmp_path / "c.yaml", primary.port, mirror.port))
        with channel(proxy.port) as ch:
            assert echo(ch, b"hello") == b"primary:hello"
        wait_for(lambda: len(mirror.received) == 1, 15, what="the copy")
        [copy] = mirror.received
        h = copy.headers
        assert h[b":authority"] == f"{HOST}-shadow".encode()
        assert (h[b":method"], h[b":path"], h[b":scheme"]) == (b"POST", gs.ECHO.encode(), b"http")
        assert h[b"content-type"] == b"application/grpc"
        assert h[b"te"] == b"trailers"  # gRPC servers require it
        assert h[b"x-meshmirror-shadow"] == b"1"
        assert h[b"x-forwarded-for"].endswith(host_address().encode())
        assert len(h[b"x-request-id"]) == 36
        assert gs.unframe(copy.body) == [b"hello"]
        wait_for(lambda: proxy.log_lines("mirror sent 200"), 10, what="the outcome")
    finally:
        mirror.close()


def test_curl_with_prior_knowledge_is_served(
    tmp_path: Path, httpserver: HTTPServer, proxy_for: Callable[..., Proxy]
) -> None:
    """An HTTP/2 client with prior knowledge in front of an HTTP/1.1 primary: served over h2c,
    forwarded as HTTP/1.1 (port protocol HTTP), as Envoy converts."""
    httpserver.expect_request(ANY).respond_with_data("h1-primary")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        mc.service_entry("p", "primary.local", httpserver.port)
        + "---\n"
        + "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\n"
        + "spec:\n  hosts: [app.example.com]\n  http:\n"
        + "  - route: [{destination: {host: primary.local}}]\n"
    )
    proxy = proxy_for(cfg)
    assert curl(proxy.port, "--http2-prior-knowledge", "/x") == ("h1-primary", "2")
    [(req, _)] = httpserver.log
    assert req.environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert req.headers["Host"] == "app.example.com"


def test_a_preface_split_over_several_writes_is_still_http2(
    tmp_path: Path, grpc_servers: Callable[..., gs.GrpcServer], proxy_for: Callable[..., Proxy]
) -> None:
    """The layer is chosen when the preface is whole, however the client's bytes arrive."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    primary = grpc_servers("primary")
    proxy = proxy_for(grpc_config(tmp_path / "c.yaml", primary.port, None))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        data = conn.data_to_send()
        for piece in (data[:1], data[1:3], data[3:20], data[20:]):
            sock.sendall(piece)
            time.sleep(0.05)
        conn.send_headers(
            1,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", HOST),
                (":path", gs.ECHO),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
        )
        conn.send_data(1, gs.frame(b"split"), end_stream=True)
        sock.sendall(conn.data_to_send())
        body = b""
        ended = False
        while not ended:
            chunk = sock.recv(65536)
            assert chunk
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                    body += event.data
                ended = ended or (isinstance(event, h2.events.StreamEnded) and event.stream_id == 1)
            sock.sendall(conn.data_to_send())
    assert gs.unframe(body) == [b"primary:split"]


def test_server_streaming_messages_reach_the_client_as_they_are_sent(
    tmp_path: Path, grpc_servers: Callable[..., gs.GrpcServer], proxy_for: Callable[..., Proxy]
) -> None:
    primary, v2 = grpc_servers("primary", interval=1.0), grpc_servers("v2")
    proxy = proxy_for(grpc_config(tmp_path / "c.yaml", primary.port, v2.port))
    with channel(proxy.port) as ch:
        start = time.monotonic()
        arrivals = []
        for message in ch.unary_stream(gs.STREAM)(b"go", timeout=20):
            arrivals.append((message, time.monotonic() - start))
    assert [m for m, _ in arrivals] == [b"primary:0", b"primary:1", b"primary:2"]
    # Buffered whole, all three would arrive together after about 2 s.
    assert arrivals[0][1] < 0.9, arrivals
    assert arrivals[1][1] - arrivals[0][1] > 0.5, arrivals
    assert arrivals[2][1] - arrivals[1][1] > 0.5, arrivals
    wait_for(lambda: v2.handled("Stream") == 1, 15, what="the copy of the streaming call")


def test_bidirectional_and_client_streaming_calls_pass_and_are_copied_when_whole(
    tmp_path: Path, grpc_servers: Callable[..., gs.GrpcServer], proxy_for: Callable[..., Proxy]
) -> None:
    primary, v2 = grpc_servers("primary"), grpc_servers("v2")
    proxy = proxy_for(grpc_config(tmp_path / "c.yaml", primary.port, v2.port), "mirror_max_body=1k")
    with channel(proxy.port) as ch:
        # A chat: each message is sent only after the answer to the one before arrived, which
        # would never happen if the proxy waited for the whole request.
        chat = ch.stream_stream(gs.CHAT)
        outbox: queue.Queue[bytes | None] = queue.Queue()
        outbox.put(b"one")
        answers = []

        def messages() -> Iterator[bytes]:
            while (message := outbox.get(timeout=15)) is not None:
                yield message

        for answer in chat(messages(), timeout=15):
            answers.append(answer)
            outbox.put(f"next{len(answers)}".encode() if len(answers) < 3 else None)
        assert answers == [b"primary:one", b"primary:next1", b"primary:next2"]
        collect = ch.stream_unary(gs.COLLECT)
        assert collect(iter([b"a" * 100, b"b" * 100]), timeout=15) == b"primary:200"
        assert collect(iter([b"c" * 800] * 3), timeout=15) == b"primary:2400"
    wait_for(lambda: v2.handled("Chat") == 1 and v2.handled("Collect") == 1, 15, what="copies")
    time.sleep(0.5)
    assert v2.handled("Collect") == 1  # the 2.4 kB call passed mirror_max_body=1k: not copied
    wait_for(lambda: proxy.log_lines("mirror skipped: body_too_large"), 10, what="the skip")


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (gs.reset_stream, "failed: reset (stream reset by the mirror (INTERNAL_ERROR))"),
        (gs.goaway, "failed: reset (mirror sent GOAWAY (NO_ERROR) before this stream"),
        (gs.ping_flood, "failed: protocol (mirror sent more than 1000 frames"),
        (gs.never_trailers, "failed: timeout (no answer within 1s ("),
        (gs.no_grpc_status, "failed: protocol (answered HTTP 200 without a grpc-status)"),
    ],
    ids=["reset-stream", "goaway", "ping-flood", "never-trailers", "no-grpc-status"],
)
def test_a_misbehaving_http2_mirror_is_a_failed_copy_with_its_reason(
    tmp_path: Path,
    grpc_servers: Callable[..., gs.GrpcServer],
    proxy_for: Callable[..., Proxy],
    behaviour: gs.Behaviour,
    reason: str,
) -> None:
    primary = grpc_servers("primary")
    mirror = gs.H2Server(behaviour)
    try:
        proxy = proxy_for(
            grpc_config(tmp_path / "c.yaml", primary.port, mirror.port), "mirror_timeout=1s"
        )
        with channel(proxy.port) as ch:
            for i in range(3):
                assert echo(ch, f"m{i}".encode()) == f"primary:m{i}".encode()
        wait_for(lambda: len(proxy.log_lines("mirror failed")) == 3, 15, what="3 failures")
        lines = proxy.log_lines("mirror failed")
        assert all(reason in line for line in lines), (lines, proxy.output[-3000:])
    finally:
        mirror.close()


def test_a_mirror_that_does_not_speak_http2_is_a_protocol_failure(
    tmp_path: Path,
    grpc_servers: Callable[..., gs.GrpcServer],
    mirror_server: HTTPServer,
    proxy_for: Callable[..., Proxy],
) -> None:
    mirror_server.expect_request(ANY).respond_with_data("h1 only")
    primary = grpc_servers("primary")
    proxy = proxy_for(grpc_config(tmp_path / "c.yaml", primary.port, mirror_server.port))
    with channel(proxy.port) as ch:
        assert echo(ch, b"x") == b"primary:x"
    wait_for(lambda: proxy.log_lines("mirror failed"), 15, what="the failure")
    [line] = proxy.log_lines("mirror failed")
    assert "failed: protocol (mirror does not speak HTTP/2" in line, line


def test_grpc_statuses_are_counted_logged_and_gate_a_release(
    tmp_path: Path, grpc_servers: Callable[..., gs.GrpcServer], proxy_for: Callable[..., Proxy]
) -> None:
    """The candidate answers some calls INVALID_ARGUMENT where the primary answers OK: the
    outcome lines, the outcome log, the report and its verdict all show it."""
    primary = grpc_servers("primary")
    mirror = gs.H2Server()
    failing = gs.H2Server(gs.grpc_status(3, "bad field: price"))
    log = tmp_path / "outcomes.jsonl"
    try:
        cfg = grpc_config(tmp_path / "c.yaml", primary.port, mirror.port)
        proxy = proxy_for(cfg, f"mirror_log={log}")
        with channel(proxy.port) as ch:
            for i in range(4):
                echo(ch, f"m{i}".encode())
        wait_for(lambda: len(proxy.log_lines("mirror sent 200 grpc=OK")) == 4, 15, what="4 OKs")
        cfg.write_text(cfg.read_text().replace(str(mirror.port), str(failing.port)))
        proxy.stop()
        proxy = proxy_for(cfg, f"mirror_log={log}")
        with channel(proxy.port) as ch:
            assert echo(ch, b"x") == b"primary:x"  # the client never sees the candidate
        wait_for(
            lambda: proxy.log_lines("mirror sent 200 grpc=INVALID_ARGUMENT"), 15, what="the error"
        )
        proxy.stop()
    finally:
        mirror.close()
        failing.close()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["grpc"], r["grpc_status"]) for r in records] == [(True, 0)] * 4 + [(True, 3)]
    report = subprocess.run(
        [str(MESHMIRROR), "report", str(log), "--fail-on", "grpc_error_rate > 10%"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 1, report.stdout + report.stderr
    assert "grpc status INVALID_ARGUMENT:1,OK:4  errors 1/5" in report.stdout
    assert "grpc_error_rate" in report.stdout


def test_the_readme_grpc_example_runs(tmp_path: Path, proxy_for: Callable[..., Proxy]) -> None:
    """configs/examples/grpc-mirror with scripts/example_grpc.py, as the README shows them
    (on ports the OS chose)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import example_grpc

    (v1, v1_port), (v2, v2_port) = example_grpc.server("v1", 0), example_grpc.server("v2", 0)
    try:
        text = (ROOT / "configs/examples/grpc-mirror/mesh.yaml").read_text()
        cfg = tmp_path / "mesh.yaml"
        cfg.write_text(text.replace("28300", str(v1_port)).replace("28301", str(v2_port)))
        proxy = proxy_for(cfg)
        replies = example_grpc.call(f"127.0.0.1:{proxy.port}", 3)
        assert replies == ["Hello world0", "Hello world1", "Hello world2"]
        wait_for(
            lambda: len(proxy.log_lines("mirror sent 200 grpc=OK")) == 3,
            15,
            what="3 copies answered by v2",
        )
    finally:
        v1.stop(grace=None)
        v2.stop(grace=None)


def test_plain_mitmdump_with_meshmirrors_http2_edges_serves_grpc(
    tmp_path: Path, grpc_servers: Callable[..., gs.GrpcServer]
) -> None:
    """The benchmark's gRPC baseline: mitmdump with `PlainHttp2` only (no routing, no copies)
    carries a plaintext gRPC call to an HTTP/2 upstream."""
    primary = grpc_servers("primary")
    script = tmp_path / "plain_http2.py"
    script.write_text("from meshmirror.mitm.http2 import PlainHttp2\naddons = [PlainHttp2()]\n")
    proc = subprocess.Popen(
        [
            str(MITMDUMP),
            "--mode",
            f"reverse:http://127.0.0.1:{primary.port}",
            "--listen-host",
            "127.0.0.1",
            "-p",
            "0",
            "-s",
            str(script),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "addons")},
    )
    lines: list[str] = []
    reader = read_lines(proc, lines)
    try:
        port = wait_for(
            lambda: next(
                (int(m.group(1)) for line in list(lines) if (m := LISTEN_RE.search(line))), None
            ),
            30,
            what="mitmdump to listen",
        )
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            assert ch.unary_unary(gs.ECHO)(b"plain", timeout=10) == b"primary:plain"
    finally:
        stop(proc)
        reader.join(5)


def render_auto(message: object, flow: object) -> tuple[str, str]:
    """(the view mitmproxy's automatic content view picks, its text), on mitmproxy 11 and 12."""
    from mitmproxy import contentviews
    from mitmproxy.test import taddons

    if hasattr(contentviews, "prettify_message"):  # mitmproxy 12: views read ctx.options
        with taddons.context():
            result = contentviews.prettify_message(message, flow)  # type: ignore[arg-type]
        return str(result.view_name or result.description), str(result.text)
    description, lines, _ = contentviews.get_message_content_view(  # type: ignore[attr-defined]
        "auto", message, flow
    )
    text = "\n".join("".join(chunk for _, chunk in line) for line in lines)
    return str(description), text


def test_grpc_answers_are_compared_field_by_field_and_shown_with_the_grpc_view(
    tmp_path: Path, proxy_for: Callable[..., Proxy]
) -> None:
    """v1 answers "Hello NAME", the candidate "Hi NAME": the comparison names the protobuf
    field that differs, and the mirror flows saved with -w render with mitmproxy's gRPC view."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import example_grpc
    from mitmproxy import io as mitmio

    (v1, v1_port), (v2, v2_port) = example_grpc.server("v1", 0), example_grpc.server("v2", 0)
    log, flows = tmp_path / "outcomes.jsonl", tmp_path / "mirror.mitm"
    try:
        text = (ROOT / "configs/examples/grpc-mirror/mesh.yaml").read_text()
        cfg = tmp_path / "mesh.yaml"
        cfg.write_text(text.replace("28300", str(v1_port)).replace("28301", str(v2_port)))
        proxy = proxy_for(cfg, "mirror_compare=true", f"mirror_log={log}", f"mirror_record={flows}")
        assert example_grpc.call(f"127.0.0.1:{proxy.port}", 2) == ["Hello world0", "Hello world1"]
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == 2, 15, what="2")
        proxy.stop()
    finally:
        v1.stop(grace=None)
        v2.stop(grace=None)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    for i, r in enumerate(records):
        assert r["comparison"]["fields"] == ["body:/message/0/1"], r
        assert r["comparison"]["examples"]["body:/message/0/1"] in (
            f'"Hello world{i}" != "Hi world{i}"' for i in range(2)
        )
    with flows.open("rb") as f:
        saved = list(mitmio.FlowReader(f).stream())
    copies = [f for f in saved if f.response is not None and f.is_replay == "request"]
    assert copies, saved
    view, rendered = render_auto(copies[0].response, copies[0])
    assert "grpc" in view.lower(), view
    assert "Hi world" in rendered, rendered


def test_an_upgrade_to_h2c_is_served_and_mirrored_as_http1(
    tmp_path: Path,
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    proxy_for: Callable[..., Proxy],
) -> None:
    """curl --http2 over plain text asks `Upgrade: h2c`: mitmproxy removes the upgrade before
    the addon sees the request, so it is answered over HTTP/1.1 and copied like any other."""
    httpserver.expect_request(ANY).respond_with_data("h1-primary")
    mirror_server.expect_request(ANY).respond_with_data("m")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "\n---\n".join(
            [
                mc.service_entry("p", "primary.local", httpserver.port),
                mc.service_entry("m", "shadow.local", mirror_server.port),
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\n"
                "spec:\n  hosts: [app.example.com]\n  http:\n"
                "  - route: [{destination: {host: primary.local}}]\n"
                "    mirror: {host: shadow.local}\n",
            ]
        )
    )
    proxy = proxy_for(cfg)
    body, version = curl(proxy.port, "--http2", "/up")
    assert (body, version.startswith("1")) == ("h1-primary", True), (body, version)
    wait_for(lambda: len(mirror_server.log) == 1, 15, what="the copy")
    [(copy, _)] = mirror_server.log
    assert "Upgrade" not in copy.headers and copy.headers["Host"] == "app.example.com-shadow"
