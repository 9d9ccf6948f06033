"""Figures over rounds: per point, medians of the rounds' figures, the max of their maxima,
sums of counts; and the small number helpers the tables use.

Contract: `aggregate` of a point whose rounds all failed has only rounds_ok / rounds_failed;
otherwise it has every key the tables and targets read.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from benchlib.points import Point
from benchlib.profile import merge as merge_profile
from benchlib.timeline import merge as merge_timeline


def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


def aggregate(point: Point, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rounds if "closed" in r]
    agg: dict[str, Any] = {"rounds_ok": len(ok), "rounds_failed": len(rounds) - len(ok)}
    if not ok:
        return agg

    def col(section: str, key: str) -> list[float | None]:
        return [r[section].get(key) for r in ok]

    agg.update(
        rps=med(col("closed", "rps")),
        rps_per_round=[r["closed"]["rps"] for r in ok],
        closed_p50_ms=med(col("closed", "p50_ms")),
        closed_p99_ms=med(col("closed", "p99_ms")),
        closed_max_ms=max((v for v in col("closed", "max_ms") if v is not None), default=None),
        open_rate=ok[0]["open"]["rate"],
        open_p50_ms=med(col("open", "p50_ms")),
        open_p99_ms=med(col("open", "p99_ms")),
        open_p99_per_round=[r["open"]["p99_ms"] for r in ok],
        open_max_ms=max((v for v in col("open", "max_ms") if v is not None), default=None),
        errors=sum(r["closed"]["errors"] + r["open"]["errors"] for r in ok),
        requests=sum(r["closed"]["requests"] + r["open"]["requests"] for r in ok),
        cpu_ms_per_req=med([r["cpu_ms_per_req"] for r in ok]),
        cpu_util_closed=med([r["cpu_util_closed"] for r in ok]),
        other_cpu_cores_max=max(r.get("other_cpu_cores", 0.0) for r in ok),
        peak_rss_mb=max(r["peak_rss_mb"] for r in ok),
        rss_growth_mb=max(r["rss_growth_mb"] for r in ok),
    )
    m: dict[str, Any] = {"received": sum(r["mirror"]["received"] for r in ok)}
    if point.mirror and all("sampled" in r["mirror"] for r in ok):
        m["sampled"] = sum(r["mirror"]["sampled"] for r in ok)
    if point.proxy == "meshmirror":
        m["sent"] = sum(r["mirror"]["sent"] for r in ok)
        for key in ("failed", "dropped", "skipped"):
            c: Counter[str] = Counter()
            for r in ok:
                c.update(r["mirror"][key])
            m[key] = dict(c)
        m["accounted"] = all(r["mirror"]["accounted"] for r in ok)
        m["in_flight_at_exit"] = sum(r["mirror"]["in_flight"] for r in ok)
        agrees = [r["mirror"].get("summary_agrees") for r in ok]
        m["summary_line_agrees"] = None if None in agrees else all(agrees)
        if point.grpc:
            g: Counter[str] = Counter()
            for r in ok:
                g.update(r["mirror"].get("grpc_status", {}))
            m["grpc_status"] = dict(g)
    agg["mirror"] = m
    # Calls the clients got answered (2xx from h2load, OK from grpcio) against the calls the
    # primary backend handled: h2load does not read grpc-status, the backend's count does.
    agg["client_ok"] = sum(r.get("client_ok", 0) for r in ok)
    agg["primary_handled"] = sum(r["backend_requests"].get(point.primary, 0) for r in ok)
    if any("envoy_mirror" in r for r in ok):
        e: Counter[str] = Counter()
        for r in ok:
            e.update({k: v for k, v in r.get("envoy_mirror", {}).items() if isinstance(v, int)})
        agg["envoy_mirror"] = dict(e)
    if any("profile" in r for r in ok):
        agg["profile"] = merge_profile([r.get("profile", {}) for r in ok])
    if any("timeline" in r for r in ok):
        agg["timeline"] = merge_timeline([r.get("timeline", {}) for r in ok])
    return agg


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def pair(x: float | None, y: float | None, unit: str = "") -> str:
    return "-" if x is None or y is None else f"{fmt(x)} / {fmt(y)}{unit}"


def fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)
