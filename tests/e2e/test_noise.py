"""Noise learning end to end: the example's three real servers (v1 twice, v2 once), a real
mitmdump with its YAML; the baseline teaches the timestamp and id fields as noise, and the
candidate's real change (the price) is what remains, in the outcome log, the report and the
saved noise file."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.mitmdump import ROOT, Proxy
from tests.support.processes import wait_for

sys.path.insert(0, str(ROOT / "scripts"))
import example_servers  # noqa: E402

EXAMPLE = ROOT / "configs" / "examples" / "noise-learning" / "mesh.yaml"
CANDIDATE = "outbound|80||catalog-v2.example.internal"
BASELINE = "outbound|80||catalog-v1-b.example.internal"


@pytest.fixture
def servers() -> Iterator[list[int]]:
    started = example_servers.serve([0, 0, 0])
    yield [s.server_address[1] for s in started]
    for s in started:
        s.shutdown()
        s.server_close()


def test_the_baseline_teaches_the_noise_and_the_candidates_real_change_remains(
    tmp_path: Path, servers: list[int], proxies: Callable[..., Proxy]
) -> None:
    cfg = tmp_path / "mesh.yaml"
    text = EXAMPLE.read_text()
    for default, port in zip((28160, 28161, 28162), servers, strict=True):
        text = text.replace(f"http: {default}", f"http: {port}")
    cfg.write_text(text)
    log = tmp_path / "outcomes.jsonl"
    noise = tmp_path / "noise.json"
    proxy = proxies(
        f"http://127.0.0.1:{servers[0]}",
        [cfg],
        f"mirror_log={log}",
        f"mirror_compare_noise={noise}",
    )
    n = 24
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    for i in range(n):
        # Sequential, so each request's baseline copy is compared before the next one's.
        path = f"/items/{i}" if i % 2 else f"/health/{i}"
        conn.request("GET", path, headers={"Host": "catalog.example.internal"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read()
        want = 2 * (i + 1)
        wait_for(lambda: len(log.read_text().splitlines()) >= want, timeout=10)  # noqa: B023
    conn.close()
    proxy.stop()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    candidate = [r for r in records if r["cluster"] == CANDIDATE]
    assert len(candidate) == n and len([r for r in records if r["cluster"] == BASELINE]) == n
    # Once learned (3 baseline differences), the noise is gone from the candidate's fields and
    # kept in its raw list; its real change stays, and only there.
    late = candidate[6:]
    for r in late:
        c = r["comparison"]
        assert "body:/served_at" not in c.get("fields", []), r
        assert set(c["noise"]) == {"body:/served_at", "body:/trace"}, r
        assert set(c["raw_fields"]) >= {"body:/served_at", "body:/trace"}, r
        if r["path"].startswith("/items/"):
            assert c["match"] is False and c["fields"] == ["body:/price"], r
        else:
            assert c["match"] is True, r
    # The report counts the filtered mismatches and lists the noise it removed.
    report = subprocess.run(
        [sys.executable, "-m", "meshmirror", "report", str(log)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    assert "learned noise removed: body:/served_at" in report.stdout or (
        "learned noise removed: body:/trace" in report.stdout
    ), report.stdout
    # The model was saved at exit, for the next run.
    saved = json.loads(noise.read_text())
    learned = saved["rules"]["default/catalog[0]"]["fields"]
    assert learned["body:/served_at"] == n and learned["body:/trace"] == n
    assert "body:/price" not in learned  # v1 and v1-b agree on prices: not noise
    assert "learned noise loaded" not in proxy.output  # first run: nothing to load

    # A later run starts with what was learned: its very first candidate comparison is filtered.
    log2 = tmp_path / "second.jsonl"
    again = proxies(
        f"http://127.0.0.1:{servers[0]}",
        [cfg],
        f"mirror_log={log2}",
        f"mirror_compare_noise={noise}",
    )
    conn = http.client.HTTPConnection("127.0.0.1", again.port, timeout=10)
    conn.request("GET", "/items/7", headers={"Host": "catalog.example.internal"})
    assert conn.getresponse().read()
    conn.close()
    wait_for(lambda: len(log2.read_text().splitlines()) >= 2, timeout=10)
    again.stop()
    assert "learned noise loaded from" in again.output
    (first,) = [json.loads(x) for x in log2.read_text().splitlines() if CANDIDATE in x]
    assert first["comparison"]["fields"] == ["body:/price"], first
