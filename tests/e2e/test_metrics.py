"""`mirror_metrics` against a real Prometheus: it scrapes a real mitmdump with the addon under
traffic, and what its query API returns equals what the mirror received; `promtool check
metrics` accepts the exposition.

Prometheus is Debian's `prometheus` package, which scripts/setup installs when it runs as root.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import meshconfig as mc
from tests.support.mitmdump import Proxy
from tests.support.ports import PortTaken, on_picked_port
from tests.support.processes import spawn, stop, wait_for
from tests.support.servers import Recorder

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="no prometheus/promtool: scripts/setup installs Debian's package when run as root",
)
CLUSTER = "outbound|80||shadow.local"


@pytest.fixture
def backends() -> Iterator[tuple[Recorder, Recorder]]:
    primary, mirror = Recorder("ok"), Recorder("ok")
    yield primary, mirror
    primary.close()
    mirror.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return resp.read().decode()


def metrics_port(proxy: Proxy) -> int:
    def found() -> int | None:
        m = re.search(r"Prometheus metrics at http://127\.0\.0\.1:(\d+)/metrics", proxy.output)
        return int(m.group(1)) if m else None

    return wait_for(found, timeout=15, what="the metrics line")


def start_prometheus(tmp_path: Path, target: int) -> tuple[subprocess.Popen[bytes], int]:
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: meshmirror\n    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
    )

    def attempt(port: int) -> tuple[subprocess.Popen[bytes], int]:
        assert PROMETHEUS is not None
        log = (tmp_path / f"prometheus-{port}.log").open("wb")
        proc = spawn(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
            ],
            stdout=log,
        )

        def ready() -> bool:
            if proc.poll() is not None:
                text = (tmp_path / f"prometheus-{port}.log").read_text()
                if "address already in use" in text:
                    raise PortTaken(port)
                raise AssertionError(f"prometheus exited:\n{text[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2):
                    return True
            except OSError:
                return False

        wait_for(ready, timeout=30, what="prometheus to be ready")
        return proc, port

    return on_picked_port(attempt)


def query(port: int, promql: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def value_of(result: list[dict[str, object]]) -> float | None:
    if len(result) != 1:
        return None
    return float(result[0]["value"][1])  # type: ignore[index]


@needs_prometheus
def test_a_real_prometheus_scrapes_what_the_mirror_received(
    tmp_path: Path, backends: tuple[Recorder, Recorder], proxies: Callable[..., Proxy]
) -> None:
    primary, mirror = backends
    se = mc.service_entry("shadow", "shadow.local", mirror.port)
    cfg = mc.mirror_config(tmp_path / "c.yaml", primary.port, {"shadow.local": se})
    proxy = proxies(
        f"http://127.0.0.1:{primary.port}",
        [cfg],
        "mirror_metrics=127.0.0.1:0",
        "mirror_summary_interval=0",
    )
    port = metrics_port(proxy)
    prom, prom_port = start_prometheus(tmp_path, port)
    try:
        n = 30
        conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        with conn:
            for i in range(n):
                conn.sendall(f"GET /m/{i} HTTP/1.1\r\nHost: app.example.com\r\n\r\n".encode())
                reply = b""
                while not reply.endswith(b"ok"):
                    reply += conn.recv(65536)
        wait_for(lambda: mirror.count >= n, timeout=15, what="the copies")
        # The exposition is valid Prometheus text, as promtool reads it.
        text = scrape(port)
        assert PROMTOOL is not None
        check = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr
        sent = f'meshmirror_copies_sent_total{{cluster="{CLUSTER}",status_class="2xx"}}'

        def scraped() -> float | None:
            got = value_of(query(prom_port, sent))
            return got if got == mirror.count else None

        assert wait_for(scraped, timeout=20, what="prometheus to scrape the copies") == n
        matched = value_of(query(prom_port, "sum(meshmirror_requests_matched_total)"))
        sampled = value_of(
            query(prom_port, f'meshmirror_copies_sampled_total{{cluster="{CLUSTER}"}}')
        )
        assert (matched, sampled) == (n, n)
        shadow = value_of(
            query(prom_port, f'meshmirror_shadow_latency_seconds_count{{cluster="{CLUSTER}"}}')
        )
        primary_count = value_of(
            query(prom_port, f'meshmirror_primary_latency_seconds_count{{cluster="{CLUSTER}"}}')
        )
        assert (shadow, primary_count) == (n, n)
        # Same buckets on both sides: a ratio of their quantiles is a query that answers.
        ratio = query(
            prom_port,
            "histogram_quantile(0.99, meshmirror_shadow_latency_seconds_bucket) / "
            "histogram_quantile(0.99, meshmirror_primary_latency_seconds_bucket)",
        )
        assert len(ratio) == 1, ratio
        assert value_of(query(prom_port, "meshmirror_config_generation")) == 1
        # No label carries a path, a Host or a header value.
        assert "/m/" not in text and "app.example.com" not in text
    finally:
        stop(prom)
    proxy.stop()
    counters = mc.last_summary(proxy.lines)[CLUSTER]
    # The exposition agreed with the proxy's own counters.
    assert (counters["matched"], counters["sampled"], counters["sent"]) == (n, n, n)


def test_metrics_serve_only_metrics_and_a_bad_address_is_refused(
    tmp_path: Path, backends: tuple[Recorder, Recorder], proxies: Callable[..., Proxy]
) -> None:
    primary, mirror = backends
    se = mc.service_entry("shadow", "shadow.local", mirror.port)
    cfg = mc.mirror_config(tmp_path / "c.yaml", primary.port, {"shadow.local": se})
    proxy = proxies(f"http://127.0.0.1:{primary.port}", [cfg], "mirror_metrics=127.0.0.1:0")
    port = metrics_port(proxy)
    assert "meshmirror_copies_sampled" in scrape(port)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
    assert e.value.code == 404
    bad = proxies(
        f"http://127.0.0.1:{primary.port}", [cfg], "mirror_metrics=nowhere", expect_failure=True
    )
    assert bad.proc.returncode == 1
    assert "mirror_metrics: expected HOST:PORT" in bad.output and "Traceback" not in bad.output
