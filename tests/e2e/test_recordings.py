"""Recorded sessions: `mitmdump -nr recording.mitm` mirrors every recorded request and exits only
when every copy is done."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from mitmproxy import io
from mitmproxy.test import tflow, tutils
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.e2e.test_proxy import requests_of, service_entry, virtual_service, write_config
from tests.support.mitmdump import ADDON, MITMDUMP


def write_recording(path: Path, n: int) -> None:
    with path.open("wb") as fh:
        writer = io.FlowWriter(fh)
        for i in range(n):
            f = tflow.tflow(
                req=tutils.treq(
                    host="10.9.9.9",
                    port=80,
                    path=f"/rec/{i}?x=1",
                    method=b"POST",
                    content=f"body-{i}".encode(),
                    headers=[(b"host", b"app.example.com"), (b"content-type", b"text/plain")],
                ),
                resp=True,
            )
            writer.add(f)


def test_nr_recording_mirrors_every_request_before_exit(
    tmp_path: Path, mirror_server: HTTPServer
) -> None:
    def slow(req: Request) -> Response:
        time.sleep(0.2)  # each copy takes a while: exit must still wait for all of them
        return Response("m")

    mirror_server.expect_request(re.compile(".*")).respond_with_handler(slow)
    n = 8
    rec = tmp_path / "session.mitm"
    write_recording(rec, n)
    cfg = write_config(
        tmp_path,
        service_entry("shadow", "shadow.local", mirror_server.port),
        virtual_service(
            "  - route:\n    - destination: {host: primary.local}\n"
            "    mirror: {host: shadow.local}\n"
        ),
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [
            str(MITMDUMP),
            "-nr",
            str(rec),
            "-s",
            str(ADDON),
            "--set",
            f"mirror_config={cfg}",
            "--set",
            "flow_detail=0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # every copy arrived before mitmdump returned
    got = requests_of(mirror_server)
    assert len(got) == n, proc.stdout
    assert sorted(r.path for r in got) == sorted(f"/rec/{i}" for i in range(n))
    assert all(r.headers["Host"] == "app.example.com-shadow" for r in got)
    assert {r.get_data() for r in got} == {f"body-{i}".encode() for i in range(n)}
    assert "matched=8 sampled=8 (100%, configured 100%) sent=8" in proc.stdout
    assert time.monotonic() - t0 < 60


def _replay(rec: Path, cfg: Path, *options: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(MITMDUMP), "-nr", str(rec), "-s", str(ADDON), "--set", f"mirror_config={cfg}"]
    for o in ("flow_detail=0", "mirror_seed=20261126", *options):
        cmd += ["--set", o]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_replay_sample_all_mirrors_every_recorded_request_whatever_the_percentage(
    tmp_path: Path, mirror_server: HTTPServer
) -> None:
    mirror_server.expect_request(re.compile(".*")).respond_with_data("m")
    n = 20
    rec = tmp_path / "session.mitm"
    write_recording(rec, n)
    cfg = write_config(
        tmp_path,
        service_entry("shadow", "shadow.local", mirror_server.port),
        virtual_service(
            "  - route:\n    - destination: {host: primary.local}\n"
            "    mirror: {host: shadow.local}\n    mirrorPercentage: {value: 50}\n"
        ),
    )
    sampled = _replay(rec, cfg)
    assert sampled.returncode == 0, sampled.stdout + sampled.stderr
    first = len(requests_of(mirror_server))
    assert 0 < first < n  # the rule's 50%, as live traffic
    everything = _replay(rec, cfg, "mirror_replay_sample=all")
    assert everything.returncode == 0, everything.stdout + everything.stderr
    assert len(requests_of(mirror_server)) - first == n
    assert f"matched={n} sampled={n} (100%, configured 50%)" in everything.stdout


def test_a_recording_without_the_clients_host_is_warned_about(
    tmp_path: Path, mirror_server: HTTPServer
) -> None:
    mirror_server.expect_request(re.compile(".*")).respond_with_data("m")
    rec = tmp_path / "rewritten.mitm"
    with rec.open("wb") as fh:
        writer = io.FlowWriter(fh)
        for i in range(3):
            # What reverse mode records without keep_host_header: the upstream's address.
            req = tutils.treq(
                host="127.0.0.1",
                port=18080,
                path=f"/r/{i}",
                headers=[(b"host", b"127.0.0.1:18080")],
            )
            writer.add(tflow.tflow(req=req, resp=True))
    cfg = write_config(
        tmp_path,
        service_entry("shadow", "shadow.local", mirror_server.port),
        virtual_service(
            "  - route:\n    - destination: {host: primary.local}\n"
            "    mirror: {host: shadow.local}\n"
        ),
    )
    done = _replay(rec, cfg)
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = [line for line in done.stdout.splitlines() if "without keep_host_header" in line]
    assert len(warnings) == 1, done.stdout
    assert "Host 127.0.0.1:18080" in warnings[0]


def write_har(path: Path, n: int) -> None:
    """A HAR as a browser or `mitmdump --set hardump=` writes it: the URL and the Host header
    name the same host, and there is no separate server address to compare them with."""
    entries = [
        {
            "startedDateTime": f"2026-11-25T21:42:{i:02d}.000Z",
            "time": 3.5,
            "request": {
                "method": "GET",
                "url": f"http://app.example.com/har/{i}",
                "httpVersion": "HTTP/1.1",
                "headers": [{"name": "Host", "value": "app.example.com"}],
                "queryString": [],
                "headersSize": -1,
                "bodySize": 0,
            },
            "response": {
                "status": 200,
                "statusText": "OK",
                "httpVersion": "HTTP/1.1",
                "headers": [{"name": "Content-Type", "value": "text/plain"}],
                "content": {"size": 7, "mimeType": "text/plain", "text": "primary"},
                "redirectURL": "",
                "headersSize": -1,
                "bodySize": 7,
            },
            "cache": {},
            "timings": {"send": 0, "wait": 3.5, "receive": 0},
        }
        for i in range(n)
    ]
    path.write_text(json.dumps({"log": {"version": "1.2", "entries": entries}}))


def test_a_har_recording_replays_without_a_false_warning(
    tmp_path: Path, mirror_server: HTTPServer
) -> None:
    mirror_server.expect_request(re.compile(".*")).respond_with_data("m")
    n = 4
    har = tmp_path / "session.har"
    write_har(har, n)
    cfg = write_config(
        tmp_path,
        service_entry("shadow", "shadow.local", mirror_server.port),
        virtual_service(
            "  - route:\n    - destination: {host: primary.local}\n"
            "    mirror: {host: shadow.local}\n"
        ),
    )
    done = _replay(har, cfg)
    assert done.returncode == 0, done.stdout + done.stderr
    got = requests_of(mirror_server)
    assert sorted(r.path for r in got) == sorted(f"/har/{i}" for i in range(n))
    assert all(r.headers["Host"] == "app.example.com-shadow" for r in got)
    # Every request matched its rule: nothing to warn about.
    assert "without keep_host_header" not in done.stdout + done.stderr, done.stdout
    assert f"matched={n} sampled={n} (100%, configured 100%) sent={n}" in done.stdout
