"""HTTP/2 clients (over TLS, as mitmproxy's reverse mode offers h2) are mirrored as HTTP/1.1 with
Host taken from :authority. The client is the real curl with nghttp2 shipped with the machine."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from pytest_httpserver import HTTPServer

from tests.e2e.test_proxy import requests_of, service_entry, virtual_service, write_config
from tests.support.mitmdump import Proxy
from tests.support.processes import wait_for


def test_h2_client_is_mirrored_as_http1_with_authority_as_host(
    tmp_path: Path,
    httpserver: HTTPServer,
    mirror_server: HTTPServer,
    proxies: Callable[..., Proxy],
) -> None:
    httpserver.expect_request(re.compile(".*")).respond_with_data("primary-h2")
    mirror_server.expect_request(re.compile(".*")).respond_with_data("m")
    cfg = write_config(
        tmp_path,
        service_entry("primary", "primary.local", httpserver.port),
        service_entry("shadow", "shadow.local", mirror_server.port),
        virtual_service(
            "  - route:\n    - destination: {host: primary.local}\n"
            "    mirror: {host: shadow.local}\n"
        ),
    )
    proxy = proxies(httpserver.url_for("/").rstrip("/"), [cfg])
    authority = f"app.example.com:{proxy.port}"
    out = subprocess.run(
        [
            "curl",
            "-sk",
            "--http2",
            "--max-time",
            "20",
            "--resolve",
            f"{authority}:127.0.0.1",
            "-H",
            "Cookie: a=1",
            "-H",
            "Cookie: b=2",
            "-w",
            "\\n%{http_version}",
            f"https://{authority}/h2/path?q=1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    body, version = out.stdout.rsplit("\n", 1)
    assert (body, version) == ("primary-h2", "2"), out.stdout + out.stderr
    wait_for(lambda: len(mirror_server.log) == 1)
    copy = requests_of(mirror_server)[0]
    assert copy.environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert copy.headers["Host"] == f"app.example.com-shadow:{proxy.port}"
    assert copy.full_path == "/h2/path?q=1"
    assert copy.headers["Cookie"] == "a=1; b=2"
