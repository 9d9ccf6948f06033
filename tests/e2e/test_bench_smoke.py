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


def test_quick_bench_prints_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    svg = tmp_path / "bench.svg"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--points",
            "baseline,m100",
            "--no-install",
            "--no-routing",
            "--out",
            str(out),
            "--svg",
            str(svg),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
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
