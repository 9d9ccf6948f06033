"""Smoke test for the benchmark (scripts/bench.py --quick), so that it never rots.

Not a timed test: it asserts that quick runs finish, print the Markdown tables and write a JSON
file with figures for every point asked for: plain mitmdump and meshmirror mirroring 100% to a
healthy mirror (every sampled copy accounted for); Envoy on `meshmirror envoy`'s export, routing
only and mirroring 100%; gRPC over h2c (plain mitmdump with meshmirror's HTTP/2 edges, meshmirror
at 0% and 100% with copies to a second gRPC server). It never installs anything (`--no-install`):
the HTTP load comes from wrk when present, else from the built-in client; the gRPC load needs
h2load, which scripts/setup installs (Debian's nghttp2-client) where it runs as root.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench.py"


def quick_bench(
    out: Path, *extra: str, points: str = "baseline,m100"
) -> subprocess.CompletedProcess[str]:
    """`bench.py --quick` of `points`, its JSON to `out`; asserts it exited 0."""
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--points", points, "--no-install"]
        + ["--no-routing", "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_quick_bench_prints_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    svg = tmp_path / "bench.svg"
    proc = quick_bench(out, "--svg", str(svg))
    assert "| point | req/s |" in proc.stdout
    assert "| target | measured |" in proc.stdout
    assert out.is_file() and svg.read_text().startswith("<svg")

    doc = json.loads(out.read_text())
    assert doc["meta"]["machine"]["nproc"] >= 1
    assert doc["not_run"] == {}, doc["not_run"]
    for name in ("baseline", "m100"):
        agg = doc["points"][name]["aggregate"]
        assert agg["rounds_ok"] == 1, doc["points"][name]["rounds"]
        assert agg["rps"] > 0 and agg["open_p99_ms"] is not None
        assert agg["cpu_ms_per_req"] > 0 and agg["peak_rss_mb"] > 0
    mirror = doc["points"]["m100"]["aggregate"]["mirror"]
    assert mirror["sampled"] > 0
    assert mirror["accounted"], mirror
    # Loopback, healthy mirror, 100%: the backend saw every copy the addon sent.
    assert mirror["received"] >= mirror["sent"] > 0, mirror


def test_quick_bench_with_the_timeline_attributes_the_time(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = quick_bench(out, "--timeline")
    assert "Fixed-rate requests, ms per segment" in proc.stdout
    doc = json.loads(out.read_text())
    base = doc["points"]["baseline"]["aggregate"]["timeline"]
    m100 = doc["points"]["m100"]["aggregate"]["timeline"]
    for name, t in (("baseline", base), ("m100", m100)):
        assert t["requests"] > 0
        # Every fixed-rate request the client completed was found in the proxy's timeline.
        completed = doc["points"][name]["rounds"][0]["open"]["requests"]
        assert t["slowest"]["joined"] == completed > 0
        assert t["slowest"]["count"] >= 1
        assert t["per_request_us"]["request"]["event"] > 0
    # Plain mitmdump has no addon time; meshmirror's is inside the event that ran it.
    assert base["per_request_us"]["request"]["addon"] == 0
    request = m100["per_request_us"]["request"]
    assert 0 < request["addon"] < request["event"]
    # Each copy went through every stage, and the stages took time.
    assert m100["copies"] > 0
    assert all(v is not None and v > 0 for v in m100["copies_us"].values()), m100["copies_us"]


def ran(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """The point's aggregate, asserted to have figures from its one round."""
    agg: dict[str, Any] = doc["points"][name]["aggregate"]
    assert agg["rounds_ok"] == 1, doc["points"][name]["rounds"]
    assert agg["rps"] > 0 and agg["open_p99_ms"] is not None, agg
    assert agg["cpu_ms_per_req"] > 0 and agg["peak_rss_mb"] > 0, agg
    return agg


def test_quick_bench_runs_envoy_beside_meshmirror(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = quick_bench(out, points="m100,envoy,envoy-m100")
    assert "| envoy-m100 / m100 (100% mirrored: Envoy vs meshmirror) |" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["not_run"] == {}, doc["not_run"]
    assert doc["meta"]["machine"]["envoy"].startswith("envoy 1.40")
    assert doc["meta"]["settings"]["envoy_concurrency"] == 1
    plain, mirrored = ran(doc, "envoy"), ran(doc, "envoy-m100")
    # The export of the 0% config only routes: no copy, and no mirror cluster in Envoy's stats
    # (the round's raw reading: a failed read would be {"error": ...}).
    assert plain["mirror"]["received"] == 0
    assert doc["points"]["envoy"]["rounds"][0]["envoy_mirror"] == {}
    # At 100% every request the primary served is copied ("sampled"); the healthy mirror
    # received each copy Envoy saw answered (its counters are read before it stops).
    m, counted = mirrored["mirror"], mirrored["envoy_mirror"]
    assert m["sampled"] >= m["received"] >= counted["upstream_rq_2xx"] > 0, (m, counted)


@pytest.mark.skipif(
    shutil.which("h2load") is None,
    reason="no h2load: scripts/setup installs Debian's nghttp2-client when run as root",
)
def test_quick_bench_runs_the_grpc_points(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = quick_bench(out, points="grpc-baseline,grpc-m0,grpc-m100")
    assert "gRPC points (unary calls over h2c" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["not_run"] == {}, doc["not_run"]
    for name in ("grpc-baseline", "grpc-m0", "grpc-m100"):
        agg = ran(doc, name)
        rnd = doc["points"][name]["rounds"][0]
        assert (rnd["closed"]["tool"], rnd["open"]["tool"]) == ("h2load", "grpcio")
        assert rnd["closed"]["errors"] == rnd["open"]["errors"] == 0, rnd
        # Every call a client got answered was handled by the real gRPC primary (h2load reads
        # no grpc-status; calls still in flight when h2load stopped add to the primary's count).
        assert agg["primary_handled"] >= agg["client_ok"] > 0, agg
    assert doc["points"]["grpc-m0"]["aggregate"]["mirror"]["sampled"] == 0
    m = doc["points"]["grpc-m100"]["aggregate"]["mirror"]
    assert m["accounted"], m
    # Copies went over HTTP/2 to the second grpcio server, which answered each with OK.
    assert m["received"] >= m["sent"] > 0, m
    assert m["grpc_status"] == {"OK": m["sent"]}, m
