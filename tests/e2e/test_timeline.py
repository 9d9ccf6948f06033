"""`mirror_timeline` end to end: a real mitmdump with the addon writes one line per request and
one per copy, joined by X-Request-Id, with stamps in the order things happened; plain mitmdump
with the standalone timeline addon writes the request lines without addon times."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from tests.e2e.test_proxy import ANY, Client, service_entry, virtual_service, write_config
from tests.support.mitmdump import ADDON, MITMDUMP, Proxy, read_lines
from tests.support.processes import spawn, stop, wait_for

RULES = """
  - match: [{uri: {prefix: /mirrored}}]
    route: [{destination: {host: primary.local}}]
    mirror: {host: shadow.local}
  - route: [{destination: {host: primary.local}}]
"""


def read_timeline(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def lines_by_kind(path: Path, kind: str, count: int) -> list[dict[str, Any]]:
    """Wait until the file holds `count` lines of `kind` (lines are flushed at exit)."""
    lines = [r for r in read_timeline(path) if r["kind"] == kind]
    assert len(lines) == count, lines
    return lines


@pytest.mark.parametrize("sender", ["process", "loop"])
def test_timeline_records_requests_and_copies_in_order(
    tmp_path: Path,
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    proxies: Callable[..., Proxy],
    sender: str,
) -> None:
    httpserver.expect_request(ANY).respond_with_data("primary")
    mirror_server.expect_request(ANY).respond_with_data("mirror")
    cfg = write_config(
        tmp_path,
        service_entry("primary", "primary.local", httpserver.port),
        service_entry("shadow", "shadow.local", mirror_server.port),
        virtual_service(RULES),
    )
    timeline = tmp_path / "timeline.jsonl"
    proxy = proxies(
        httpserver.url_for("/").rstrip("/"),
        [cfg],
        f"mirror_timeline={timeline}",
        f"mirror_sender={sender}",
    )
    client = Client(proxy.port)
    before = time.time()
    for i in range(3):
        status, _, _, _ = client.request("GET", "/mirrored", headers={"X-Request-Id": f"m-{i}"})
        assert status == 200
    status, _, _, _ = client.request("GET", "/plain", headers={"X-Request-Id": "p-0"})
    assert status == 200
    wait_for(lambda: len(mirror_server.log) == 3, 10.0, what="three copies")
    client.close()
    assert proxy.stop() == 0
    after = time.time()

    requests = {r["id"]: r for r in lines_by_kind(timeline, "request", 4)}
    assert sorted(requests) == ["m-0", "m-1", "m-2", "p-0"]
    for rid, r in requests.items():
        assert r["status"] == 200 and r["error"] is None
        assert before <= r["request_start"] <= r["request_end"] <= after
        ev = r["events"]
        assert set(ev) >= {"requestheaders", "request", "responseheaders", "response"}
        # mitmproxy's stamps and the chain's events, in the order they happen.
        stamps = [
            r["request_start"],
            ev["request"][0],
            ev["request"][1],
            r["response_start"],
            r["response_end"],
            ev["response"][0],
            ev["response"][1],
        ]
        assert stamps == sorted(stamps), (rid, stamps)
        entered, own_us = r["addon"]["request"]
        assert ev["request"][0] <= entered <= ev["request"][1]
        # The addon's own time fits inside the event that ran it.
        assert 0 < own_us <= (ev["request"][1] - ev["request"][0]) * 1e6 + 1
        # No response-header rule and no inspection feature: those hooks are not installed.
        assert set(r["addon"]) == {"requestheaders", "request"}
    assert requests["p-0"]["route"] != requests["m-0"]["route"]

    copies = lines_by_kind(timeline, "copy", 3)
    assert sorted(c["id"] for c in copies) == ["m-0", "m-1", "m-2"]
    for c in copies:
        assert (c["cluster"], c["outcome"], c["status"]) == (
            "outbound|80||shadow.local",
            "sent",
            200,
        )
        order = [c[k] for k in ("submit", "handoff", "received", "written", "first_byte", "done")]
        assert all(order), c
        assert order == sorted(order), c
        assert requests[c["id"]]["addon"]["request"][0] <= c["submit"]


def test_a_copy_not_sent_has_its_line_with_the_reason(
    tmp_path: Path, httpserver: HTTPServer, proxies: Callable[..., Proxy]
) -> None:
    httpserver.expect_request(ANY).respond_with_data("primary")
    cfg = write_config(
        tmp_path,
        service_entry("primary", "primary.local", httpserver.port),
        virtual_service(RULES.replace("mirror: {host: shadow.local}", "mirror: {host: nowhere}")),
    )
    timeline = tmp_path / "timeline.jsonl"
    proxy = proxies(httpserver.url_for("/").rstrip("/"), [cfg], f"mirror_timeline={timeline}")
    client = Client(proxy.port)
    client.request("GET", "/mirrored", headers={"X-Request-Id": "n-0"})
    client.close()
    assert proxy.stop() == 0
    (copy,) = lines_by_kind(timeline, "copy", 1)
    assert (copy["id"], copy["outcome"], copy["reason"]) == ("n-0", "skipped", "no_endpoints")


def test_plain_mitmdump_gets_the_timeline_alone(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request(ANY).respond_with_data("primary")
    script = tmp_path / "timeline_addon.py"
    script.write_text(
        "from meshmirror.mitm.timeline import TimelineAddon\n\naddons = [TimelineAddon()]\n"
    )
    timeline = tmp_path / "plain.jsonl"
    cmd = [
        str(MITMDUMP),
        "--mode",
        f"reverse:{httpserver.url_for('/').rstrip('/')}",
        "--listen-host",
        "127.0.0.1",
        "-p",
        "0",
        "-s",
        str(script),
        "--set",
        f"mirror_timeline={timeline}",
    ]
    env = dict(os.environ, PYTHONPATH=str(ADDON.parent), PYTHONUNBUFFERED="1")
    proc = spawn(cmd, stdout=subprocess.PIPE, text=True, env=env)
    proxy = Proxy(proc)
    proxy._reader = read_lines(proc, proxy.lines)
    try:
        proxy.port = wait_for(proxy.listen_port, 30.0, what="mitmdump to listen")
        client = Client(proxy.port)
        client.request("GET", "/x", headers={"X-Request-Id": "plain-1"})
        client.close()
    finally:
        assert stop(proc, 10.0) == 0
    (r,) = lines_by_kind(timeline, "request", 1)
    assert r["id"] == "plain-1" and r["addon"] == {}
    assert r["events"]["request"][0] <= r["events"]["request"][1] <= r["response_start"]


def test_an_unwritable_timeline_is_a_located_startup_error(
    tmp_path: Path, httpserver: HTTPServer, proxies: Callable[..., Proxy]
) -> None:
    cfg = write_config(
        tmp_path,
        service_entry("primary", "primary.local", httpserver.port),
        virtual_service(RULES),
    )
    bad = tmp_path / "missing-dir" / "t.jsonl"
    proxy = proxies(
        httpserver.url_for("/").rstrip("/"),
        [cfg],
        f"mirror_timeline={bad}",
        expect_failure=True,
    )
    assert proxy.proc.returncode != 0
    assert f"meshmirror: mirror_timeline: cannot open {bad}" in proxy.output
    assert "Traceback" not in proxy.output
