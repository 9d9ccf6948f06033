"""Inspection end to end: mirror flows in mitmweb (through its own REST API), the JSONL outcome
log, primary-versus-shadow comparison with ignores, the report (text and HTML rendered by a real
headless browser), `-nr` replay of a recording with comparison and completion before exit, and
`mirror_record` output reopened by mitmproxy's reader."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http, io
from mitmproxy.test import tflow
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from meshmirror.outcomes.log import FIELDS
from tests.e2e.test_proxy import ANY, Client, service_entry, write_config
from tests.support.browser import NO_CHROMIUM, Browser, find_chromium
from tests.support.mitmdump import ADDON, MITMDUMP, Proxy, read_lines
from tests.support.processes import spawn, stop, wait_for
from tests.support.procfs import listening_ports

ROOT = Path(__file__).resolve().parents[2]
MESHMIRROR = [sys.executable, "-m", "meshmirror"]

VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: app
  annotations:
    meshmirror.io/compare: "true"
    meshmirror.io/compare-ignore-json: "/origin"
spec:
  hosts: [app.example.com]
  http:
  - route:
    - destination: {host: primary.local}
    mirror: {host: shadow.local}
"""


def json_handler(payload: Callable[[Request], dict[str, Any]], delay: float = 0.0):  # type: ignore[no-untyped-def]
    def handle(request: Request) -> Response:
        if delay:
            time.sleep(delay)
        return Response(
            json.dumps(payload(request)),
            content_type="application/json",
            headers={"Date": f"t{time.monotonic()}", "X-Request-Id": "differs-per-side"},
        )

    return handle


def primary_payload(request: Request) -> dict[str, Any]:
    return {"path": request.path, "v": 1, "origin": "primary-10.0.0.1"}


def shadow_payload(request: Request) -> dict[str, Any]:
    # /diff is where the new version behaves differently; origin always differs (ignored).
    v = 2 if request.path.startswith("/diff") else 1
    return {"path": request.path, "v": v, "origin": "shadow-10.0.0.2"}


@pytest.fixture
def upstream() -> Iterator[HTTPServer]:
    """The reverse-proxy upstream: serves requests no route claims (none here)."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request(ANY).respond_with_data("from-upstream")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def config(tmp_path: Path, httpserver: HTTPServer, mirror_server: HTTPServer) -> Path:
    httpserver.expect_request(ANY).respond_with_handler(json_handler(primary_payload))
    mirror_server.expect_request(ANY).respond_with_handler(json_handler(shadow_payload))
    return write_config(
        tmp_path,
        service_entry("primary", "primary.local", httpserver.port),
        service_entry("shadow", "shadow.local", mirror_server.port),
        VS,
    )


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- outcome log, comparison, report ------------------------------------------------------------


def test_log_comparison_and_report(
    tmp_path: Path,
    config: Path,
    upstream: HTTPServer,
    proxies: Callable[..., Proxy],
) -> None:
    log = tmp_path / "outcomes.jsonl"
    proxy = proxies(upstream.url_for("/").rstrip("/"), [config], f"mirror_log={log}")
    client = Client(proxy.port)
    for path in ("/same/1", "/same/2", "/diff/1"):
        status, _, body, _ = client.request("GET", path, headers={"X-Request-Id": path})
        assert status == 200 and json.loads(body)["origin"] == "primary-10.0.0.1"
    client.close()
    wait_for(lambda: len(records(log)) == 3)
    by_id = {r["request_id"]: r for r in records(log)}
    same, diff = by_id["/same/1"], by_id["/diff/1"]
    for r in (same, diff):
        assert (r["outcome"], r["primary_status"], r["shadow_status"]) == ("sent", 200, 200)
        assert r["rule"] == "default/app[0]" and r["cluster"] == "outbound|80||shadow.local"
        assert r["primary_latency_ms"] >= 0 and r["shadow_latency_ms"] > 0
        assert r["bytes_sent"] > 0 and r["bytes_received"] > 0 and r["generation"] == 1
        assert r["flow"] and r["endpoint"].startswith("127.0.0.1:")
        assert list(r) == list(FIELDS)  # every field, as the README lists them
    # Date, X-Request-Id (default ignores) and /origin (annotation) differ on both: ignored.
    assert same["comparison"] == {"match": True}
    assert diff["comparison"]["fields"] == ["body:/v"]
    assert diff["comparison"]["examples"] == {"body:/v": "1 != 2"}
    wait_for(lambda: proxy.log_lines("mirror mismatch"))
    (line,) = proxy.log_lines("mirror mismatch")
    assert "rule=default/app[0]" in line and "request_id=/diff/1" in line
    assert "fields=body:/v" in line

    # The report, from the very file the proxy is still writing.
    html_out = tmp_path / "report.html"
    proc = subprocess.run(
        [*MESHMIRROR, "report", str(log), "--html", str(html_out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 sampled copies" in proc.stdout
    assert "mismatches 33.3% (1/3)" in proc.stdout
    assert "1  body:/v   e.g. 1 != 2  [/diff/1]" in proc.stdout
    render_in_browser(html_out, tmp_path)


def render_in_browser(page: Path, tmp_path: Path) -> None:
    """The report page in a real headless Chromium: the SVG chart is in the page's DOM with its
    six bars, the latency notes are there, and it renders to a screenshot."""
    executable = find_chromium()
    if executable is None:
        pytest.skip(NO_CHROMIUM)
    browser = Browser(executable, tmp_path, width=1000, height=700)
    try:
        browser.open(page.as_uri())
        # Six bars: p50/p95/p99, primary and shadow.
        bars = browser.wait(
            "document.readyState === 'complete' && "
            "document.querySelectorAll('svg#latency-chart rect.bar').length",
            what="the latency chart",
        )
        assert bars == 6
        notes = browser.evaluate(
            "[...document.querySelectorAll('#latency-measures li')].map(li => li.textContent)"
        )
        assert [n.split(":")[0] for n in notes] == ["primary latency", "shadow latency"]
        shot = browser.screenshot(tmp_path / "report.png")
        assert len(shot) > 5000
    finally:
        browser.close()


# --- mitmweb: mirror flows through its own REST API ----------------------------------------------


@pytest.fixture
def mitmweb() -> Iterator[Callable[..., tuple[subprocess.Popen[str], list[str]]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
        cmd = [str(MITMDUMP.with_name("mitmweb")), *args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = spawn(cmd, stdout=subprocess.PIPE, text=True, env=env)
        started.append(proc)
        lines: list[str] = []
        read_lines(proc, lines)
        return proc, lines

    yield start
    for proc in started:
        stop(proc)


def test_mirror_flows_in_mitmweb(
    config: Path,
    upstream: HTTPServer,
    mitmweb: Callable[..., tuple[subprocess.Popen[str], list[str]]],
) -> None:
    proc, lines = mitmweb(
        "--mode",
        f"reverse:{upstream.url_for('/').rstrip('/')}",
        "--listen-host",
        "127.0.0.1",
        "-p",
        "0",
        "--web-host",
        "127.0.0.1",
        # Port 0: the web server binds one of its own; it is read from /proc below (mitmweb
        # prints the configured 0 in its URL, not the port it got).
        "--set",
        "web_port=0",
        "--set",
        "web_open_browser=false",
        "-s",
        str(ADDON),
        "--set",
        f"mirror_config={config}",
        "--set",
        "mirror_flows_max=2",
    )

    def started() -> tuple[int, str] | None:
        text = "".join(lines)
        proxy = re.search(r"listening at (?:http://)?127\.0\.0\.1:(\d+)", text)
        # mitmproxy >= 11.1.2 prints the URL with its auth token; 11.0.2 has no token.
        token = re.search(
            r"Web server listening at http://127\.0\.0\.1:\d+/(?:\?token=(\w+))?", text
        )
        if proc.poll() is not None:
            raise AssertionError(f"mitmweb exited ({proc.returncode}):\n{text}")
        return (int(proxy.group(1)), token.group(1) or "") if proxy and token else None

    proxy_port, token = wait_for(started, 30)  # type: ignore[misc]
    # The web server listens before it prints its URL: by now the process has both sockets.
    (web_port,) = listening_ports(proc.pid) - {proxy_port}
    client = Client(proxy_port)
    for path in ("/same/1", "/diff/1", "/same/2"):
        assert client.request("GET", path, headers={"X-Request-Id": path})[0] == 200
    client.close()

    auth = {"Authorization": f"Bearer {token}"} if token else {}

    def get_flows() -> list[dict[str, Any]]:
        req = urllib.request.Request(f"http://127.0.0.1:{web_port}/flows", headers=auth)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def command(name: str) -> Any:
        """What mitmweb's command bar does: POST /commands/NAME, then show the `value`. The POST
        must echo its XSRF cookie in a header, as the browser's page does (tornado compares the
        two; any token of ours serves, under the cookie names of mitmproxy 12 and 11)."""
        xsrf = "meshmirrortest0123456789abcdef"
        req = urllib.request.Request(
            f"http://127.0.0.1:{web_port}/commands/{name}",
            data=json.dumps({"arguments": []}).encode(),
            headers={
                **auth,
                "Content-Type": "application/json",
                "Cookie": f"_mitmproxy_xsrf={xsrf}; _xsrf={xsrf}",
                "X-XSRFToken": xsrf,
            },
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())["value"]

    def settled() -> list[dict[str, Any]] | None:
        flows = get_flows()
        originals = [f for f in flows if not f.get("is_replay")]
        done = len(originals) == 3 and all("mirror outbound" in f["comment"] for f in originals)
        return flows if done else None

    flows = wait_for(settled, 20)
    assert isinstance(flows, list)
    originals = {f["request"]["path"]: f for f in flows if not f.get("is_replay")}
    ghosts = [f for f in flows if f.get("is_replay") == "request"]
    # mirror_flows_max=2: the oldest mirror flow left the view.
    assert len(ghosts) == 2
    for g in ghosts:
        assert g["marked"] == "\u2194"  # mitmweb sends the marker's character
        # The URL mitmweb shows is where the copy went; its Host header is the shadow Host.
        assert g["request"]["pretty_host"] == "127.0.0.1"
        assert ["host", "app.example.com-shadow"] in g["request"]["headers"]
        assert g["response"]["status_code"] == 200
        original = next(o for o in originals.values() if o["id"] in g["comment"])
        assert g["request"]["path"] == original["request"]["path"]
    by_path = {g["request"]["path"]: g for g in ghosts}
    assert "mismatch: body:/v" in by_path["/diff/1"]["comment"]
    assert "body:/v: 1 != 2" in by_path["/diff/1"]["comment"]
    assert by_path["/same/2"]["comment"].endswith(", match")
    assert "sent 200" in originals["/same/1"]["comment"]
    assert "mismatch: body:/v" in originals["/diff/1"]["comment"]
    # An original is marked in the list and names its copy's flow (the one still in view).
    assert all(o["marked"] == "\u25aa" for o in originals.values())
    for g in ghosts:
        assert any(f"(mirror flow {g['id']})" in o["comment"] for o in originals.values())

    # The command bar shows JSON.stringify(value): the stats table's rows, no escaped newlines.
    stats = command("mirror.stats")
    shown = json.dumps(stats, separators=(",", ":"))
    assert shown.startswith('[["mirror cluster","matched","sampled"'), shown
    assert "\\n" not in shown
    (row,) = [r for r in stats if r[0] == "outbound|80||shadow.local"]
    assert row[1:3] == ["3", "3"], stats
    assert json.loads(command("mirror.stats.json"))["total"]["sampled"] == 3


# --- recordings: -nr replay with comparison, pacing, completion and mirror_record ----------------


def write_recording(path: Path, n: int) -> None:
    with open(path, "wb") as fo:
        w = io.FlowWriter(fo)
        for i in range(n):
            kind = "diff" if i % 2 else "same"
            req = http.Request.make(
                "GET",
                f"http://127.0.0.1:1/{kind}/{i}",
                headers={"X-Request-Id": f"rec-{i}"},
            )
            # Recorded through meshmirror (keep_host_header): the client's Host is kept.
            req.headers["Host"] = "app.example.com"
            body = {"path": f"/{kind}/{i}", "v": 1, "origin": "recorded"}
            resp = http.Response.make(200, json.dumps(body), {"Content-Type": "application/json"})
            f = tflow.tflow(req=req, resp=resp)
            w.add(f)


def replay(
    tmp_path: Path,
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    n: int,
    *args: str,
) -> subprocess.CompletedProcess[str]:
    """`mitmdump -nr` of an n-flow recording through the addon (config: primary and shadow on
    the test servers); `args` are more mitmdump arguments."""
    cfg = write_config(
        tmp_path,
        service_entry("primary", "primary.local", httpserver.port),
        service_entry("shadow", "shadow.local", mirror_server.port),
        VS,
    )
    session = tmp_path / "session.mitm"
    write_recording(session, n)
    cmd = [str(MITMDUMP), "-nr", str(session), "-s", str(ADDON), "--set", f"mirror_config={cfg}"]
    cmd += ["--set", "flow_detail=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_replay_recording_compares_waits_and_records(
    tmp_path: Path,
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
) -> None:
    n = 10
    # A slow shadow: the copies are still in flight when the last flow is read.
    mirror_server.expect_request(ANY).respond_with_handler(json_handler(shadow_payload, delay=0.3))
    log = tmp_path / "outcomes.jsonl"
    shadow = tmp_path / "shadow.mitm"
    t0 = time.monotonic()
    proc = replay(
        tmp_path,
        httpserver,
        mirror_server,
        n,
        *("--set", f"mirror_log={log}", "--set", f"mirror_record={shadow}"),
        *("--set", "mirror_replay_rate=25"),
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every copy reached the mirror and was answered before mitmdump exited.
    assert len(mirror_server.log) == n
    assert len(httpserver.log) == 0  # the recorded responses stand in for the primary
    assert elapsed >= (n - 1) / 25  # paced at 25 requests/s
    recs = records(log)
    assert len(recs) == n
    assert all(r["outcome"] == "sent" and r["replay"] is True for r in recs)
    matches = {r["request_id"]: r["comparison"]["match"] for r in recs}
    assert matches == {f"rec-{i}": i % 2 == 0 for i in range(n)}
    with open(shadow, "rb") as fo:
        back = list(io.FlowReader(fo).stream())
    assert len(back) == n
    for f in back:
        assert isinstance(f, http.HTTPFlow) and f.marked == ":left_right_arrow:"
        assert f.is_replay == "request"
        assert f.request.headers["host"] == "app.example.com-shadow"
        assert f.response is not None and f.response.status_code == 200
        assert json.loads(f.response.content or b"")["origin"] == "shadow-10.0.0.2"


def test_hooks_mode_sends_mirror_flows_through_the_addon_chain(
    tmp_path: Path, httpserver: HTTPServer, mirror_server: HTTPServer
) -> None:
    # mirror_flows=hooks: the mirror flows reach every addon, so mitmproxy's own `-w` saves them
    # beside the originals; they are never mirrored again.
    n = 4
    mirror_server.expect_request(ANY).respond_with_handler(json_handler(shadow_payload))
    saved = tmp_path / "saved.mitm"
    proc = replay(
        tmp_path, httpserver, mirror_server, n, "-w", str(saved), "--set", "mirror_flows=hooks"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(mirror_server.log) == n  # one copy each: the mirror flows were not mirrored
    with open(saved, "rb") as fo:
        flows = [f for f in io.FlowReader(fo).stream() if isinstance(f, http.HTTPFlow)]
    ghosts = [f for f in flows if f.marked == ":left_right_arrow:"]
    assert len(ghosts) == n
    assert len(flows) == 2 * n
    for f in ghosts:
        assert f.request.headers["host"] == "app.example.com-shadow"
        assert f.response is not None and f.response.status_code == 200
