"""`--timeline`: where each request's time went, from the proxy's per-request timeline
(`mirror_timeline`) joined with the fixed-rate client's trace by X-Request-Id.

Contract of `analyse`: from one point-round's timeline file and trace file, a JSON-ready dict:
`per_request_us` (means over every request the proxy finished: each hook event's span over the
addon chain, the addon's own time in it, mitmproxy's dispatch beside it), `copies_us` (means of
each stage of a copy), and `slowest` (the fixed-rate requests' segments, median request against
the mean of the slowest 1%, in ms). Segments of a traced request, in order:

    client      intended start -> sent (the load generator was late)
    to_proxy    sent -> mitmproxy read its first bytes (kernel, or the proxy's loop busy)
    proxy_in    -> the `request` event began (parsing, `requestheaders`, scheduling)
    request_ev  the `request` event over the chain (of which `addon`: the addon's own time)
    upstream    -> the primary's response began (connect, send, the backend)
    proxy_out   -> the `response` event began (reading the response, `responseheaders`)
    response_ev the `response` event over the chain
    to_client   -> the client had the whole response (mitmproxy's write, kernel, the client)

and `gc`: how much of the request's time a garbage collection in the proxy overlapped.
`gc` (per point) counts the proxy's collections by generation with their longest pause.
"""

from __future__ import annotations

import bisect
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

SEGMENTS = (
    "client",
    "to_proxy",
    "proxy_in",
    "request_ev",
    "upstream",
    "proxy_out",
    "response_ev",
    "to_client",
)
HOOK_EVENTS = ("requestheaders", "request", "responseheaders", "response")
COPY_STAGES = (
    ("submit", "handoff", "to_pipe"),
    ("handoff", "received", "pipe"),
    ("received", "written", "sender"),
    ("written", "first_byte", "mirror"),
    ("first_byte", "done", "response"),
)
COPY_STAGE_NAMES = tuple(name for _, _, name in COPY_STAGES)


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a killed proxy
    return out


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def _overlap_ms(
    pauses: list[tuple[float, float]], starts: list[float], a: float, b: float
) -> float:
    """Milliseconds of [a, b] covered by the (start, end) pauses, sorted by start."""
    total = 0.0
    i = max(0, bisect.bisect_left(starts, a) - 1)
    while i < len(pauses) and pauses[i][0] < b:
        s, e = pauses[i]
        total += max(0.0, min(b, e) - max(a, s))
        i += 1
    return total * 1e3


def _segments(req: dict[str, Any], trace: tuple[float, float, float]) -> dict[str, float] | None:
    intended, sent, end = trace
    ev = req.get("events", {})
    rq, rs = ev.get("request"), ev.get("response")
    if not (
        rq and rs and rq[1] and rs[1] and req.get("request_start") and req.get("response_start")
    ):
        return None
    points = (
        intended,
        sent,
        req["request_start"],
        rq[0],
        rq[1],
        req["response_start"],
        rs[0],
        rs[1],
        end,
    )
    seg = {name: (points[i + 1] - points[i]) * 1e3 for i, name in enumerate(SEGMENTS)}
    seg["addon"] = sum(v[1] for v in req.get("addon", {}).values()) / 1e3
    seg["total"] = (end - intended) * 1e3
    return seg


def analyse(timeline: Path, trace: Path | None) -> dict[str, Any]:
    records = _lines(timeline)
    requests = [r for r in records if r.get("kind") == "request"]
    copies = [r for r in records if r.get("kind") == "copy"]
    collections = [r for r in records if r.get("kind") == "gc"]
    spans: dict[str, list[float]] = defaultdict(list)
    own: dict[str, list[float]] = defaultdict(list)
    for r in requests:
        events, addon = r.get("events", {}), r.get("addon", {})
        for name in HOOK_EVENTS:
            span = events.get(name)
            if span and span[1]:
                spans[name].append((span[1] - span[0]) * 1e6)
                own[name].append(addon[name][1] if name in addon else 0.0)
    per_request: dict[str, Any] = {}
    for name in HOOK_EVENTS:
        if spans[name]:
            s, o = statistics.fmean(spans[name]), statistics.fmean(own[name])
            per_request[name] = {
                "event": round(s, 2),
                "addon": round(o, 2),
                "rest": round(s - o, 2),
            }
    copy_stages: dict[str, list[float]] = defaultdict(list)
    for c in copies:
        for start, end, name in COPY_STAGES:
            if c.get(start) and c.get(end):
                copy_stages[name].append((c[end] - c[start]) * 1e6)
    out: dict[str, Any] = {
        "requests": len(requests),
        "per_request_us": per_request,
        "copies": len(copies),
        "copies_us": {name: _mean(copy_stages[name]) for name in COPY_STAGE_NAMES},
        "gc": _gc_figures(collections),
    }
    if trace is not None and trace.exists():
        out["slowest"] = _slowest(requests, trace, collections)
    return out


def _gc_figures(collections: list[dict[str, Any]]) -> dict[str, Any]:
    by_gen: dict[str, list[float]] = defaultdict(list)
    for c in collections:
        by_gen[str(c.get("generation"))].append(float(c["ms"]))
    return {g: {"count": len(v), "max_ms": round(max(v), 3)} for g, v in sorted(by_gen.items())}


def _slowest(
    requests: list[dict[str, Any]], trace: Path, collections: list[dict[str, Any]]
) -> dict[str, Any]:
    by_id = {r["id"]: r for r in requests if r.get("id")}
    pauses = sorted((c["start"], c["start"] + c["ms"] / 1e3) for c in collections)
    starts = [s for s, _ in pauses]
    rows: list[dict[str, float]] = []
    for line in trace.read_text(encoding="utf-8").splitlines():
        rid, intended, sent, end = json.loads(line)
        req = by_id.get(rid)
        if req is not None:
            seg = _segments(req, (intended, sent, end))
            if seg is not None:
                seg["gc"] = _overlap_ms(pauses, starts, intended, end)
                rows.append(seg)
    if not rows:
        return {"joined": 0}
    rows.sort(key=lambda s: s["total"])
    k = max(1, len(rows) // 100)
    worst = rows[-k:]
    names = (*SEGMENTS, "addon", "gc", "total")
    median = {n: round(statistics.median(r[n] for r in rows), 3) for n in names}
    slow = {n: round(statistics.fmean(r[n] for r in worst), 3) for n in names}
    excess = {n: slow[n] - median[n] for n in SEGMENTS}
    return {
        "joined": len(rows),
        "count": k,
        "median_ms": median,
        "slowest_ms": slow,
        "dominant": max(excess, key=lambda n: excess[n]),
    }


def _merge_gc(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in rounds:
        for g, f in r.items():
            m = out.setdefault(g, {"count": 0, "max_ms": 0.0})
            m["count"] += f["count"]
            m["max_ms"] = max(m["max_ms"], f["max_ms"])
    return dict(sorted(out.items()))


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One point's rounds: per-request means averaged, slowest-1% rows pooled by count."""
    results = [r for r in results if r]
    if not results:
        return {}
    per_request: dict[str, dict[str, float]] = {}
    for name in HOOK_EVENTS:
        rows = [r["per_request_us"][name] for r in results if name in r["per_request_us"]]
        if rows:
            per_request[name] = {
                k: round(statistics.fmean(row[k] for row in rows), 2)
                for k in ("event", "addon", "rest")
            }
    copies_us: dict[str, float | None] = {}
    for name in COPY_STAGE_NAMES:
        vals = [r["copies_us"][name] for r in results if r["copies_us"].get(name) is not None]
        copies_us[name] = round(statistics.fmean(vals), 2) if vals else None
    out: dict[str, Any] = {
        "requests": sum(r["requests"] for r in results),
        "per_request_us": per_request,
        "copies": sum(r["copies"] for r in results),
        "copies_us": copies_us,
        "gc": _merge_gc([r.get("gc", {}) for r in results]),
    }
    slow = [r["slowest"] for r in results if r.get("slowest", {}).get("joined")]
    if slow:
        names = (*SEGMENTS, "addon", "gc", "total")
        weights = [s["count"] for s in slow]
        out["slowest"] = {
            "joined": sum(s["joined"] for s in slow),
            "count": sum(weights),
            "median_ms": {
                n: round(statistics.median(s["median_ms"][n] for s in slow), 3) for n in names
            },
            "slowest_ms": {
                n: round(
                    sum(s["slowest_ms"][n] * w for s, w in zip(slow, weights, strict=True))
                    / sum(weights),
                    3,
                )
                for n in names
            },
            "dominant_per_round": [s["dominant"] for s in slow],
        }
    return out
