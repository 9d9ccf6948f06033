"""report.py and `meshmirror report`: aggregation, percentiles, text and self-contained HTML."""

from __future__ import annotations

import html
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from meshmirror.outcomes.report import (
    LATENCY_MEASURES,
    GroupStats,
    build_report,
    percentile,
    render_html,
    render_text,
)


def rec(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "rule": "default/app[0]",
        "cluster": "outbound|80||shadow.local",
        "outcome": "sent",
        "reason": None,
        "primary_status": 200,
        "primary_latency_ms": 10.0,
        "shadow_status": 200,
        "shadow_latency_ms": 20.0,
        "comparison": {"match": True},
        "request_id": "r",
    }
    base.update(kw)
    return base


RECORDS = [
    rec(primary_latency_ms=float(i), shadow_latency_ms=float(2 * i)) for i in range(1, 101)
] + [
    rec(
        comparison={
            "match": False,
            "fields": ["status", "body:/v"],
            "examples": {"status": "200 != 500", "body:/v": "1 != 2"},
        },
        shadow_status=500,
        request_id="bad-1",
    ),
    rec(
        comparison={"match": False, "fields": ["body:/v"], "examples": {"body:/v": "1 != 3"}},
        request_id="bad-2",
    ),
    rec(
        outcome="failed",
        reason="refused",
        shadow_status=None,
        shadow_latency_ms=1.0,
        comparison=None,
    ),
    rec(
        outcome="dropped",
        reason="overflow",
        shadow_status=None,
        shadow_latency_ms=None,
        comparison=None,
    ),
    rec(
        outcome="skipped",
        reason="body_too_large",
        shadow_status=None,
        shadow_latency_ms=None,
        comparison=None,
    ),
    rec(cluster="outbound|80||other.local", comparison=None),
]


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([], 50, None),
        ([5.0], 99, 5.0),
        ([3.0, 1.0, 2.0], 50, 2.0),
        ([float(i) for i in range(1, 101)], 95, 95.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
    ],
)
def test_percentile(values: list[float], p: float, expected: float | None) -> None:
    assert percentile(values, p) == expected


def test_groups_counts_latency_and_top_fields() -> None:
    groups = build_report(RECORDS)
    assert [(g.rule, g.cluster) for g in groups] == [
        ("default/app[0]", "outbound|80||other.local"),
        ("default/app[0]", "outbound|80||shadow.local"),
    ]
    g = groups[1].to_dict()
    assert (g["sampled"], g["sent"]) == (105, 102)
    assert (g["failed"], g["dropped"], g["skipped"]) == (
        {"refused": 1},
        {"overflow": 1},
        {"body_too_large": 1},
    )
    # 1..100 ms plus the two mismatching records at 10 ms: nearest rank of 102 values.
    assert g["latency_ms"]["primary"] == {"p50": 49.0, "p95": 95.0, "p99": 99.0}
    assert g["latency_ms"]["shadow"]["p99"] == 198.0
    assert (g["compared"], g["mismatched"]) == (102, 2)
    assert g["top_fields"][0] == {"field": "body:/v", "count": 2, "example": "1 != 2"}
    assert g["top_fields"][1]["field"] == "status"


def test_text_report() -> None:
    out = io.StringIO()
    render_text(build_report(RECORDS), out, "o.jsonl")
    text = out.getvalue()
    assert "meshmirror report of o.jsonl: 106 sampled copies" in text
    assert "default/app[0] -> outbound|80||shadow.local" in text
    assert "failed refused:1  dropped overflow:1  skipped body_too_large:1" in text
    assert "primary  latency p50 49.0ms  p95 95.0ms  p99 99.0ms" in text
    assert "mismatches 2.0% (2/102)" in text
    assert "2  body:/v   e.g. 1 != 2  [bad-1]" in text


def test_html_is_self_contained_with_an_svg_chart() -> None:
    page = render_html(build_report(RECORDS), "o.jsonl")
    assert page.startswith("<!DOCTYPE html>")
    assert '<svg id="latency-chart"' in page and page.count('class="bar"') == 12
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert "<code>body:/v</code>" in page


def test_the_report_says_how_each_latency_was_measured() -> None:
    out = io.StringIO()
    render_text(build_report(RECORDS), out, "o.jsonl")
    text = out.getvalue()
    page = render_html(build_report(RECORDS), "o.jsonl")
    for which, how in LATENCY_MEASURES:
        assert f"  {which} latency: {how}\n" in text
        assert f"<li>{which} latency: {html.escape(how)}</li>" in page
    assert [which for which, _ in LATENCY_MEASURES] == ["primary", "shadow"]
    assert "mitmproxy" in LATENCY_MEASURES[0][1] and "pooled" in LATENCY_MEASURES[1][1]


def test_cli_report(tmp_path: Path) -> None:
    log = tmp_path / "o.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n{partial")
    html_out = tmp_path / "r.html"
    proc = subprocess.run(
        [sys.executable, "-m", "meshmirror", "report", str(log), "--html", str(html_out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "106 sampled copies" in proc.stdout
    assert html_out.read_text().startswith("<!DOCTYPE html>")
    missing = subprocess.run(
        [sys.executable, "-m", "meshmirror", "report", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "nope.jsonl" in missing.stderr


def test_grpc_copies_are_counted_by_status_with_their_error_rate() -> None:
    records = [
        rec(grpc=True, grpc_status=0),
        rec(grpc=True, grpc_status=0),
        rec(grpc=True, grpc_status=14),
        rec(grpc=True, outcome="failed", reason="protocol", shadow_status=None, grpc_status=None),
        rec(grpc=False, grpc_status=None),  # an HTTP request of the same rule
        rec(grpc=True, grpc_status=True),  # not a status: never counted as one
    ]
    [g] = build_report(records)
    assert (g.grpc_sampled, g.grpc_errors) == (5, 2)
    assert g.grpc_status == Counter({"OK": 2, "UNAVAILABLE": 1})
    assert g.grpc_error_rate == 0.4
    out = io.StringIO()
    render_text([g], out)
    assert "  grpc status OK:2,UNAVAILABLE:1  errors 2/5\n" in out.getvalue()
    assert "<td>OK:2,UNAVAILABLE:1</td>" in render_html([g])
    [plain] = build_report([rec()])
    assert plain.grpc_error_rate is None
    assert "grpc status" not in render_text_of(plain)


def render_text_of(g: GroupStats) -> str:
    out = io.StringIO()
    render_text([g], out)
    return out.getvalue()


def test_the_text_report_escapes_what_records_hold() -> None:
    forged = "k\n\nverdict:\n  ok       PASSED\u202e"
    records = [
        rec(
            rule="default/app[0]\x1b[2J",
            comparison={"match": False, "fields": [f"body:/{forged}"], "examples": {}},
            request_id="r\x07\n",
            reason=None,
        ),
        rec(outcome="failed", reason="refused\nFORGED", comparison=None),
    ]
    out = io.StringIO()
    render_text(build_report(records), out)
    text = out.getvalue()
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "default/app[0]\\x1b[2J -> outbound|80||shadow.local" in text
    assert "body:/k\\x0a\\x0averdict:\\x0a  ok       PASSED\\u202e" in text
    assert "[r\\x07\\x0a]" in text and "refused\\x0aFORGED:1" in text
    assert not [line for line in text.splitlines() if line.startswith(("  ok", "FORGED"))]
