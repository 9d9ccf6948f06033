"""Hot reload end to end: edit the YAML while traffic flows; a broken edit keeps the last good
table serving and logs every error; fixing it loads the next generation."""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from tests.support import meshconfig as mc
from tests.support.mitmdump import start_proxy
from tests.support.processes import wait_for


@pytest.fixture
def servers() -> Iterator[tuple[HTTPServer, HTTPServer]]:
    primary = HTTPServer(host="127.0.0.1", port=0)
    primary.expect_request("").respond_with_data("primary")
    primary.start()
    mirror = HTTPServer(host="127.0.0.1", port=0)
    mirror.expect_request("").respond_with_data("m")
    mirror.start()
    yield primary, mirror
    primary.stop()
    mirror.stop()


class Traffic:
    """A client thread sending requests until stopped; records every status."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        i = 0
        while not self._stop.is_set():
            conn.request("GET", f"/t?i={i}", headers={"Host": "app.example.com"})
            resp = conn.getresponse()
            resp.read()
            self.statuses.append(resp.status)
            i += 1
            self._stop.wait(0.01)
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)


def test_edit_while_traffic_flows_switches_and_bad_edit_keeps_last_good(
    servers: tuple[HTTPServer, HTTPServer], tmp_path: Path
) -> None:
    primary, mirror = servers
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    cfg = cfg_dir / "app.yaml"
    se = {"shadow.local": mc.service_entry("shadow", "shadow.local", mirror.port)}
    mc.mirror_config(cfg, primary.port, se, percentage=0)
    proxy = start_proxy(
        f"http://127.0.0.1:{primary.port}",
        [cfg_dir],
        "mirror_reload_interval=200ms",
        "mirror_verbosity=each",
        "mirror_summary_interval=0",
    )
    traffic = Traffic(proxy.port)
    try:
        wait_for(lambda: len(traffic.statuses) >= 20, timeout=10)
        assert len(mirror.log) == 0  # generation 1: 0%
        mc.mirror_config(cfg, primary.port, se, percentage=100)
        wait_for(lambda: proxy.log_lines("config generation 2 loaded"), timeout=10)
        wait_for(lambda: len(mirror.log) >= 10, timeout=10)
        assert proxy.log_lines("gen=2")
        assert not [line for line in proxy.log_lines("mirror sent") if "gen=1" in line]

        # A broken edit: two errors in one file; both are logged, generation 2 keeps serving.
        good = cfg.read_text()
        broken = good.replace("percentage: {value: 100}", "percentage: {value: 150}").replace(
            "resolution: STATIC", "resolution: NOPE", 1
        )
        tmp = cfg.with_suffix(".tmp")
        tmp.write_text(broken)
        tmp.replace(cfg)
        wait_for(lambda: proxy.log_lines("config change rejected"), timeout=10)
        rejected = proxy.log_lines("config change rejected")[0]
        m = re.search(r"\((\d+) error\(s\)\)", rejected)
        assert m and int(m.group(1)) >= 2 and "generation 2 keeps serving" in rejected
        assert proxy.log_lines("mirrors[0].percentage"), proxy.log_lines("meshmirror: ")
        assert proxy.log_lines("resolution")
        copies = len(mirror.log)
        wait_for(lambda: len(mirror.log) >= copies + 10, timeout=10)  # still mirroring (gen 2)
        assert not proxy.log_lines("config generation 3")

        # Fixing the config loads generation 3.
        tmp.write_text(good)
        tmp.replace(cfg)
        wait_for(lambda: proxy.log_lines("config generation 3 loaded"), timeout=10)
        wait_for(lambda: proxy.log_lines("gen=3"), timeout=10)
    finally:
        traffic.stop()
        proxy.stop()
    assert traffic.statuses and set(traffic.statuses) == {200}
    summary = mc.last_summary(proxy.lines)["outbound|80||shadow.local"]
    assert mc.accounted(summary) == summary["sampled"]
