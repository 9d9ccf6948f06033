"""Smoke test for the benchmark (scripts/bench.py --quick), so that it never rots.

Not a timed test: it asserts that a quick run of two points (plain mitmdump and meshmirror
mirroring 100% to a healthy mirror) finishes, prints the Markdown table and writes a JSON file
with figures for both points, and that every sampled copy is accounted for. It never installs
anything (`--no-install`): the load comes from wrk when present, else from the built-in client.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench.py"


def quick_bench(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`bench.py --quick` of baseline and m100, its JSON to `out`; asserts it exited 0."""
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--points", "baseline,m100", "--no-install"]
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
