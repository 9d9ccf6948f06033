"""Comparison against echo backends and a hostile candidate.

Secrets: no secret in outcome records or reports.

A real mitmdump with the addon mirrors to real echo servers on 127.0.0.1 that answer with the
request headers they received (JSON as httpbin's /headers, or `Name: value` text lines). The
client sends an Authorization and a Cookie; the copy has them redacted (strip and mask). Then:
- the proxy's own changes to the copy (the redactions, the `-shadow` Host, the loop-guard marker,
  the appended X-Forwarded-For) are not mismatches, in JSON and in text bodies;
- where the bodies really differ, the examples never carry the secrets: neither the outcome log
  (`mirror_log`), nor the proxy's mismatch lines, nor `meshmirror report`, nor its HTML page.

A hostile candidate (the mirror) chooses its answers:
- decompression bombs in every content coding (zstd, gzip, br, deflate, stacked) are decoded
  only up to mirror_compare_max_body, so the proxy's memory stays flat, and are `not compared:
  body over N bytes after decoding`; the primary's body is decoded the same way;
- bodies whose diff is costly (the same lines shuffled) hold up neither the mirrored request's
  client nor an unrelated one, and are `not compared: too costly`, counted.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from meshmirror.mirror.shadow import host_address
from tests.e2e.test_hostile_configs import KeepAliveClient
from tests.e2e.test_proxy import Client
from tests.support import bombs
from tests.support import meshconfig as mc
from tests.support.launch import Launched
from tests.support.mitmdump import Proxy
from tests.support.processes import wait_for
from tests.support.procfs import tree_memory_mb
from tests.support.servers import FaultServer, by_path

TOKEN = "SECRET-TOKEN-123"
AUTHORIZATION = f"Bearer {TOKEN}"
COOKIE = "session=COOKIESECRET"
SECRETS = (TOKEN, "COOKIESECRET")
MESHMIRROR = [sys.executable, "-m", "meshmirror"]


def title(name: str) -> str:
    """Header names as httpbin shows them (X-Meshmirror-Shadow, Host)."""
    return "-".join(part.capitalize() for part in name.split("-"))


class EchoServer:
    """An HTTP/1.1 server on an OS-chosen port of 127.0.0.1 that answers with the request's
    headers. `role` is "primary" or "shadow": on a few paths the shadow answers differently,
    as a new version of the service would.

    /headers       {"headers": {...}} on both sides
    /renamed       the shadow calls the object "request_headers"
    /text          `Name: value` lines, sorted, on both sides
    /text-leak     the primary adds a line with the bearer token it was given"""

    def __init__(self, role: str) -> None:
        self.role = role
        self.seen: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                headers: dict[str, str] = {}
                for name, value in self.headers.items():
                    key = title(name)
                    headers[key] = f"{headers[key]},{value}" if key in headers else value
                server.seen.append(headers)
                body, ctype = server.answer(self.path, headers)
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str, headers: dict[str, str]) -> tuple[bytes, str]:
        if path.startswith("/text"):
            lines = [f"{k}: {v}" for k, v in sorted(headers.items())]
            auth = headers.get("Authorization", "")
            if path.startswith("/text-leak") and auth.startswith("Bearer "):
                lines.append(f"token {auth.removeprefix('Bearer ')} accepted")
            return ("\n".join(lines) + "\n").encode(), "text/plain"
        key = "request_headers" if path.startswith("/renamed") and self.role == "shadow" else ""
        return json.dumps({key or "headers": headers}).encode(), "application/json"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def echo() -> Iterator[Callable[[str], EchoServer]]:
    started: list[EchoServer] = []

    def start(role: str) -> EchoServer:
        server = EchoServer(role)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_echoed_secrets_never_reach_records_or_reports(
    tmp_path: Path, echo: Callable[[str], EchoServer], proxies: Callable[..., Proxy]
) -> None:
    primary, shadow = echo("primary"), echo("shadow")
    cfg = mc.mirror_config(
        tmp_path / "mesh.yaml",
        primary.port,
        {"shadow.local": mc.service_entry("shadow", "shadow.local", shadow.port)},
    )
    log = tmp_path / "outcomes.jsonl"
    proxy = proxies(
        f"http://127.0.0.1:{primary.port}",
        [cfg],
        "mirror_compare=true",
        "mirror_redact_headers=Authorization",
        "mirror_redact_headers=Cookie=mask",
        f"mirror_log={log}",
    )
    client = Client(proxy.port)
    paths = ("/headers", "/renamed", "/text", "/text-leak")
    for path in paths:
        status, _, body, _ = client.request(
            "GET",
            path,
            headers={"Authorization": AUTHORIZATION, "Cookie": COOKIE, "X-Request-Id": path},
        )
        # The primary got the secrets (and echoed them to the client): they were there to leak.
        assert status == 200 and TOKEN.encode() in body and b"COOKIESECRET" in body
    client.close()
    try:
        wait_for(lambda: len(records(log)) == len(paths), timeout=30)
    except AssertionError:
        raise AssertionError(f"outcome records: {records(log)}\n{proxy.output}") from None

    # The copies were redacted, marked and re-hosted: what the comparison must see through.
    assert len(shadow.seen) == len(paths)
    copy = shadow.seen[0]
    assert "Authorization" not in copy and copy["Cookie"] == "[redacted]"
    assert copy["Host"] == "app.example.com-shadow" and copy["X-Meshmirror-Shadow"] == "1"
    before = primary.seen[0].get("X-Forwarded-For")
    assert copy["X-Forwarded-For"] == (f"{before}," if before else "") + host_address()

    text = log.read_text()
    for secret in SECRETS:
        assert secret not in text, f"{secret} in the outcome log:\n{text}"
        assert secret not in proxy.output, f"{secret} in mitmdump's output"  # mismatch lines
    by_id = {r["request_id"]: r for r in records(log)}
    assert all(r["outcome"] == "sent" for r in by_id.values())
    # Only the proxy's own changes differ: a match, in JSON and in text.
    assert by_id["/headers"]["comparison"] == {"match": True}
    assert by_id["/text"]["comparison"] == {"match": True}
    # Real differences are reported, with the secrets replaced.
    renamed = by_id["/renamed"]["comparison"]
    assert renamed["fields"] == ["body:/headers", "body:/request_headers"]
    assert '"Authorization": "[redacted]"' in renamed["examples"]["body:/headers"]
    leak = by_id["/text-leak"]["comparison"]
    assert leak["fields"] == ["body"] and leak["examples"]["body"] == "-[redacted]"

    html_out = tmp_path / "report.html"
    proc = subprocess.run(
        [*MESHMIRROR, "report", str(log), "--html", str(html_out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mismatches 50.0% (2/4)" in proc.stdout
    page = html_out.read_text()
    for secret in SECRETS:
        assert secret not in proc.stdout, f"{secret} in the report:\n{proc.stdout}"
        assert secret not in page, f"{secret} in the HTML report"
    assert "[redacted]" in proc.stdout and "[redacted]" in page


# --- a hostile candidate: decompression bombs and costly diffs ---------------------------------


def serve_by_path(answers: dict[str, tuple[bytes, bytes]]) -> Callable[[socket.socket], None]:
    """Answers `path -> (extra header lines, body)`; any other path gets `ok`."""
    return by_path(lambda path: answers.get(path, (b"", b"ok")))


@pytest.fixture(scope="module")
def bomb_bodies() -> dict[str, bytes]:
    return bombs.bombs(200)  # each inflates to 200 MiB; gzip's is 204 kB, zstd's 6 kB


def test_decompression_bombs_are_decoded_only_up_to_the_limit(
    tmp_path: Path, launch: Callable[..., Launched], bomb_bodies: dict[str, bytes]
) -> None:
    codings = list(bomb_bodies)
    shadow_answers = {
        f"/bomb/{i}": (b"Content-Encoding: %s\r\n" % c.encode(), bomb_bodies[c])
        for i, c in enumerate(codings)
    }
    # The primary answers with a bomb of its own: its body is decoded for the comparison too.
    primary_bomb = (b"Content-Encoding: gzip\r\n", bomb_bodies["gzip"])
    primary_answers = {p: primary_bomb for p in shadow_answers}
    primary = FaultServer(serve_by_path(primary_answers))
    shadow = FaultServer(serve_by_path(shadow_answers))
    try:
        cfg = mc.mirror_config(
            tmp_path / "mesh.yaml",
            primary.port,
            {"shadow.local": mc.service_entry("shadow", "shadow.local", shadow.port)},
        )
        log = tmp_path / "outcomes.jsonl"
        launched = launch(primary.port, [cfg], "mirror_compare=true", f"mirror_log={log}")
        proxy = launched.proxy
        client = Client(proxy.port)
        # A first comparison of small bodies: the comparison process runs from here on.
        assert client.request("GET", "/warm-up")[0] == 200
        wait_for(lambda: len(records(log)) == 1, timeout=30, what="the first record")
        before = tree_memory_mb(proxy.proc.pid)
        for path in shadow_answers:
            status, _, body, _ = client.request("GET", path)
            # The client gets the primary's answer as it was sent: encoded, byte for byte.
            assert status == 200 and body == primary_bomb[1]
        client.close()
        wait_for(
            lambda: len(records(log)) == 1 + len(codings), timeout=60, what="the bombs' records"
        )
        after = tree_memory_mb(proxy.proc.pid)
        stats = launched.stats()
    finally:
        primary.close()
        shadow.close()
    # Each bomb inflates to 200 MiB: decoded in full, the peak grew by that much at least.
    growth = after["VmHWM"] - before["VmHWM"]
    assert growth < 64, f"peak RSS of mitmdump and its children grew by {growth:.0f} MiB"
    assert after["VmRSS"] - before["VmRSS"] < 64, (before, after)
    by_path = {r["path"]: r for r in records(log)}
    for path in shadow_answers:
        assert by_path[path]["comparison"] == {
            "not_compared": "body_over_limit",
            "note": "body over 262144 bytes after decoding",
        }, by_path[path]
    counts = stats["comparison"]["default/app[0] outbound|80||shadow.local"]
    assert counts["not_compared"] == len(codings) and counts["body_over_limit"] == len(codings)


def test_a_costly_diff_never_holds_up_a_client_and_is_not_compared_as_too_costly(
    tmp_path: Path, launch: Callable[..., Launched]
) -> None:
    # 32,000 short lines, a hundred distinct ones (250 KiB), in another order on the mirror:
    # difflib took 5-6 s over them; within the budget they are `not compared: too costly`.
    lines = [f"line {i % 100:02d}" for i in range(32_000)]
    shuffled = lines[:]
    random.Random(23).shuffle(shuffled)
    text = b"Content-Type: text/plain\r\n"
    primary = FaultServer(serve_by_path({"/big": (text, "\n".join(lines).encode())}))
    shadow = FaultServer(serve_by_path({"/big": (text, "\n".join(shuffled).encode())}))
    try:
        cfg = mc.mirror_config(
            tmp_path / "mesh.yaml",
            primary.port,
            {"shadow.local": mc.service_entry("shadow", "shadow.local", shadow.port)},
        )
        log = tmp_path / "outcomes.jsonl"
        launched = launch(primary.port, [cfg], "mirror_compare=true", f"mirror_log={log}")
        proxy = launched.proxy
        # An unrelated client, on a Host no rule claims (never mirrored), all along.
        other = KeepAliveClient(proxy.port, host="other.example.com")
        try:
            wait_for(lambda: len(other.samples) >= 5, timeout=10, what="the other client")
            client = Client(proxy.port)
            for i in range(3):
                status, _, body, seconds = client.request("GET", "/big")
                assert status == 200 and body.startswith(b"line 00\nline 01\n")
                assert seconds < 1.0, f"request {i} waited {seconds:.2f}s"
            client.close()
            wait_for(lambda: len(records(log)) == 3, timeout=60, what="the records")
            seen = len(other.samples)
            wait_for(lambda: len(other.samples) >= seen + 5, timeout=10, what="more samples")
        finally:
            other.stop()
        stats = launched.stats()
    finally:
        primary.close()
        shadow.close()
    assert other.errors == []
    slowest = max(seconds for _, seconds in other.samples)
    assert slowest < 1.0, f"an unrelated request waited {slowest:.2f}s"
    for r in records(log):
        assert r["comparison"] == {"not_compared": "too_costly", "note": "too costly"}, r
    counts = stats["comparison"]["default/app[0] outbound|80||shadow.local"]
    assert counts == {"not_compared": 3, "too_costly": 3}, counts
