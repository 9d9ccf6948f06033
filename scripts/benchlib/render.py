"""The output: the Markdown tables (figures per point, targets) and the SVG chart.

Contract: the figures table has one row per selected point in POINTS order (a point that did
not run or failed in every round says so in its row), its ratios against the point's own base
(Point.base); the Envoy table sets Envoy's figures beside plain mitmdump's and meshmirror's; the
SVG has one bar per point with figures.
"""

from __future__ import annotations

import math
from typing import Any

from benchlib.figures import fmt, ratio
from benchlib.points import POINTS
from benchlib.targets import TARGET_HEALTHY_RPS, TARGET_NOMIRROR_RPS
from benchlib.timeline import HOOK_EVENTS, SEGMENTS

TABLE_HEADER = "| point | req/s |"
# Other processes' CPU (cores) above which a point's figures are flagged as noisy.
NOISE_CORES = 0.1


def figures_table(aggs: dict[str, dict[str, Any]], not_run: dict[str, str]) -> str:
    head = (
        f"{TABLE_HEADER} x base | closed p50 / p99 / max ms | fixed-rate p50 / p99 / max ms "
        "| p99 x base | errors | mirror recv / sampled | failed / dropped / skipped "
        "| CPU ms/req (util) | peak RSS MB | other CPU |"
    )
    lines = [head, "|" + "---|" * 12]
    for p in POINTS:
        if p.name in not_run:
            lines.append(f"| {p.name} | not run: {not_run[p.name]} |" + " |" * 10)
            continue
        a = aggs.get(p.name)
        if a is None:
            continue
        if "rps" not in a:
            lines.append(f"| {p.name} | failed in every round |" + " |" * 10)
            continue
        base = aggs.get(p.base, {})
        m = a.get("mirror", {})
        recv = f"{m.get('received', 0)} / {m['sampled']}" if "sampled" in m else "-"
        fds = "-"
        if p.proxy == "meshmirror":

            def short(c: dict[str, int]) -> str:
                return ",".join(f"{k}:{v}" for k, v in c.items()) or "0"

            fds = f"{short(m['failed'])} / {short(m['dropped'])} / {short(m['skipped'])}"
            if not m["accounted"]:
                fds += " (UNACCOUNTED)"
            if m.get("grpc_status"):
                fds += f" (grpc-status {short(m['grpc_status'])})"
        lines.append(
            f"| {p.name} | {fmt(a['rps'], 0)} | {fmt(ratio(a['rps'], base.get('rps')))} "
            f"| {fmt(a['closed_p50_ms'])} / {fmt(a['closed_p99_ms'])} "
            f"/ {fmt(a['closed_max_ms'], 0)} "
            f"| {fmt(a['open_p50_ms'])} / {fmt(a['open_p99_ms'])} / {fmt(a['open_max_ms'], 0)} "
            f"| {fmt(ratio(a['open_p99_ms'], base.get('open_p99_ms')))} | {a['errors']} "
            f"| {recv} | {fds} | {fmt(a['cpu_ms_per_req'], 3)} ({fmt(a['cpu_util_closed'])}) "
            f"| {fmt(a['peak_rss_mb'], 0)} | {fmt(a['other_cpu_cores_max'])} |"
        )
    return "\n".join(lines)


# (Envoy point, the mitmproxy point beside it, what the pair compares)
ENGINE_PAIRS = (
    ("envoy", "baseline", "routing only: Envoy vs plain mitmdump"),
    ("envoy", "m0", "routing only: Envoy vs meshmirror at 0%"),
    ("envoy-m100", "m100", "100% mirrored: Envoy vs meshmirror"),
)


def engines_table(aggs: dict[str, dict[str, Any]], settings: dict[str, Any]) -> str:
    """Envoy beside mitmdump and meshmirror on the same config: throughput and CPU per request
    as ratios (Envoy's over ours, ours over Envoy's), fixed-rate p99 side by side, and how busy
    Envoy was in its closed loop (below its worker count, something else was the limit)."""
    rows = [
        (e, m, what)
        for e, m, what in ENGINE_PAIRS
        if "rps" in aggs.get(e, {}) and "rps" in aggs.get(m, {})
    ]
    if not rows:
        return ""
    n = settings.get("envoy_concurrency", 1)
    out = [
        f"Envoy beside mitmproxy (Envoy --concurrency {n}: {n} worker thread(s) against one "
        "mitmproxy event loop, so the ratios are per core at 1):",
        "",
        "| pair | req/s Envoy / ours | Envoy x ours | CPU ms/req Envoy / ours | ours / Envoy "
        "| fixed-rate p99 ms Envoy / ours | Envoy's CPU (cores) |",
        "|---|---|---|---|---|---|---|",
    ]
    for e, m, what in rows:
        ea, ma = aggs[e], aggs[m]
        out.append(
            f"| {e} / {m} ({what}) | {fmt(ea['rps'], 0)} / {fmt(ma['rps'], 0)} "
            f"| {fmt(ratio(ea['rps'], ma['rps']), 1)} "
            f"| {fmt(ea['cpu_ms_per_req'], 3)} / {fmt(ma['cpu_ms_per_req'], 3)} "
            f"| {fmt(ratio(ma['cpu_ms_per_req'], ea['cpu_ms_per_req']), 1)} "
            f"| {fmt(ea['open_p99_ms'])} / {fmt(ma['open_p99_ms'])} "
            f"| {fmt(ea['cpu_util_closed'])} |"
        )
    out += [
        "",
        "Where Envoy's CPU stayed below its worker count, the load generator or the backends "
        "were the limit, not Envoy: its req/s ratio is then a floor, and CPU per request is "
        "the per-core comparison.",
    ]
    if settings.get("loadgen") != "wrk":
        out.append(
            "The closed loop ran on the built-in Python client (no wrk; `scripts/bench "
            "--install` installs it), which saturates far below Envoy."
        )
    return "\n".join(out)


def grpc_lines(aggs: dict[str, dict[str, Any]]) -> str:
    """Per gRPC point: calls the clients got answered against calls the primary handled, and
    the copies by grpc-status."""
    out = []
    for p in POINTS:
        a = aggs.get(p.name, {})
        if not p.grpc or "rps" not in a:
            continue
        line = (
            f"- {p.name}: {a['client_ok']} calls answered (h2load 2xx, grpcio OK), "
            f"{a['primary_handled']} handled by the primary"
        )
        if a["primary_handled"] < a["client_ok"]:
            line += " (FEWER: answers that did not come from the primary)"
        status = a.get("mirror", {}).get("grpc_status")
        if status:
            line += "; copies by grpc-status: " + ", ".join(f"{k} {v}" for k, v in status.items())
        out.append(line)
    return "\n".join(out)


def profile_tables(aggs: dict[str, dict[str, Any]]) -> str:
    """With --profile: per point, the shares of the proxy's samples in meshmirror's code and in
    mitmproxy's hook dispatch, and the top frames by own samples."""
    rows = {n: a["profile"] for n, a in aggs.items() if a.get("profile")}
    if not rows:
        return ""
    out = [
        "Profile (--profile: py-spy, 250 Hz, the proxy process during the closed-loop runs; "
        "share of its samples):",
        "",
        "| point | samples | meshmirror (inclusive) | hook dispatch (own) | top frames (own) |",
        "|---|---|---|---|---|",
    ]
    for name, p in rows.items():
        top = "; ".join(f"{frame} {share:.1%}" for frame, share in p["top"][:6])
        out.append(
            f"| {name} | {p['samples']} | {p['meshmirror_share']:.1%} | "
            f"{p['dispatch_share']:.1%} | {top} |"
        )
    return "\n".join(out)


def timeline_tables(aggs: dict[str, dict[str, Any]]) -> str:
    """With --timeline: per point, the hook events per request (the addon's own time and the
    rest: mitmproxy's dispatch and its other addons), a copy's stages, and the fixed-rate
    requests' segments, median against the slowest 1%."""
    rows = {n: a["timeline"] for n, a in aggs.items() if a.get("timeline")}
    if not rows:
        return ""
    out = [
        "Timeline (--timeline; its own markers cost time per request, so these runs are not "
        "the targets'). Hook events per request, us: the event over the whole addon chain / "
        "the addon's own time in it.",
        "",
        "| point | requests | requestheaders | request | responseheaders | response | addon "
        "total | copy: to pipe / pipe / sender / mirror / response, us |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, t in rows.items():
        per = t["per_request_us"]
        cells = []
        total = 0.0
        for event in HOOK_EVENTS:
            e = per.get(event)
            cells.append(f"{e['event']:.1f} / {e['addon']:.1f}" if e else "-")
            total += e["addon"] if e else 0.0
        stages = " / ".join(fmt(v, 0) for v in t["copies_us"].values()) if t["copies"] else "-"
        out.append(f"| {name} | {t['requests']} | {' | '.join(cells)} | {total:.1f} | {stages} |")
    slow = {n: t["slowest"] for n, t in rows.items() if t.get("slowest")}
    if slow:
        out += [
            "",
            "Fixed-rate requests, ms per segment: median request / mean of the slowest 1% "
            "(client: the load generator late; to_proxy: kernel or the proxy's loop busy before "
            "it read the request; proxy_in: parsing and requestheaders; request_ev: the request "
            "event (addon: the addon's own time in any hook); upstream: the primary and its "
            "backend; proxy_out: reading the response; response_ev; to_client: mitmproxy's "
            "write, kernel, client; gc: a collection in the proxy overlapping the request).",
            "",
            "| point | slowest n | "
            + " | ".join((*SEGMENTS, "addon", "gc", "total"))
            + " | largest | proxy GCs (gen: count, longest ms) |",
            "|---|---|" + "---|" * (len(SEGMENTS) + 5),
        ]
        for name, s in slow.items():
            cells = [
                f"{s['median_ms'][k]:.2f} / {s['slowest_ms'][k]:.2f}"
                for k in (*SEGMENTS, "addon", "gc", "total")
            ]
            dominant = ", ".join(s["dominant_per_round"])
            gcs = ", ".join(
                f"{g}: {f['count']}, {f['max_ms']:.1f}" for g, f in rows[name]["gc"].items()
            )
            out.append(
                f"| {name} | {s['count']} | {' | '.join(cells)} | {dominant} | {gcs or '-'} |"
            )
    return "\n".join(out)


def targets_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| target | measured | value | limit | nginx, Envoy: same measure | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['measured'] or '-'} | {fmt(r['value'], 3)} | {r['limit']} "
            f"| {r['peer'] or '-'} | {r['verdict']} |"
        )
    return "\n".join(lines)


def svg_chart(aggs: dict[str, dict[str, Any]]) -> str:
    """Two horizontal bar panels: throughput ratio to the baseline, fixed-rate p99 (ms)."""
    rows = [p for p in POINTS if "rps" in aggs.get(p.name, {})]
    bar_h, gap, left, width = 18, 6, 250, 300
    height = 60 + len(rows) * (bar_h + gap)
    total_w = left + width + 60 + 40 + width + 80
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{total_w}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-weight="bold">throughput / own baseline '
        "(closed loop)</text>",
    ]
    x2 = left + width + 100
    parts.append(f'<text x="{x2}" y="20" font-weight="bold">fixed-rate p99 (ms, log scale)</text>')
    p99s = [aggs[p.name].get("open_p99_ms") or 0.0 for p in rows]
    p99_max = max([v for v in p99s if v > 0], default=1.0)
    lo = math.log10(max(0.1, min([v for v in p99s if v > 0], default=0.1)) / 2)
    hi = math.log10(p99_max * 1.2)
    for i, p in enumerate(rows):
        a = aggs[p.name]
        y = 40 + i * (bar_h + gap)
        base = aggs.get(p.base, {}).get("rps")
        r = ratio(a["rps"], base) or 0.0
        w = min(r, 1.2) / 1.2 * width
        color = {"nginx": "#888", "envoy": "#a74", "mitmdump": "#4a7"}.get(p.proxy, "#47a")
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{p.name}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 13}">{r:.2f}</text>')
        v = a.get("open_p99_ms") or 0.0
        pw = 0.0
        if v > 0 and hi > lo:
            pw = max(0.0, (math.log10(v) - lo) / (hi - lo)) * width
        parts.append(f'<rect x="{x2}" y="{y}" width="{pw:.1f}" height="{bar_h}" fill="{color}"/>')
        parts.append(f'<text x="{x2 + pw + 4:.1f}" y="{y + 13}">{v:g}</text>')
    for limit, label in ((TARGET_HEALTHY_RPS, "0.90"), (TARGET_NOMIRROR_RPS, "0.97")):
        x = left + limit / 1.2 * width
        parts.append(
            f'<line x1="{x:.1f}" y1="30" x2="{x:.1f}" y2="{height - 10}" stroke="#c33" '
            'stroke-dasharray="3,3"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{height - 1}" fill="#c33" font-size="10">{label}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def print_report(
    doc: dict[str, Any], aggs: dict[str, dict[str, Any]], results: dict[str, list[dict[str, Any]]]
) -> None:
    """The Markdown report on stdout: the run's line, the figures, NOISE, targets, what did not
    run or failed, and the routing benchmark's own output. `doc` is what the JSON file holds."""
    meta, s, not_run, routing = doc["meta"], doc["meta"]["settings"], doc["not_run"], doc["routing"]
    mach = meta["machine"]
    print(f"## meshmirror benchmark, {meta['started']}\n")
    tools = [mach.get("nginx", "no nginx"), mach.get("wrk", "no wrk")]
    tools += [mach[k] for k in ("h2load", "envoy") if k in mach]
    rates = [
        f"{meta[key]} {unit}/s"
        for key, unit in (("fixed_rate", "req"), ("fixed_rate_grpc", "gRPC calls"))
        if meta.get(key) is not None
    ]
    print(
        f"`{meta['command']}`: {mach.get('nproc')} x {mach.get('cpu_model')}, kernel "
        f"{mach.get('kernel')}, Python {mach.get('python')}, mitmproxy {mach.get('mitmproxy')}, "
        f"{', '.join(tools)}; load: {s['loadgen']}, {s['connections']} connections closed "
        f"loop, fixed rate {' and '.join(rates) or '-'}; {s['rounds']} round(s) of "
        f"{s['duration']:g} s + {s['open_duration']:g} s; medians over rounds, max of max.\n"
    )
    print(figures_table(aggs, not_run))
    noisy = {n: a["other_cpu_cores_max"] for n, a in aggs.items() if a.get("other_cpu_cores_max")}
    noisy = {n: v for n, v in noisy.items() if v > NOISE_CORES}
    if noisy:
        worst = ", ".join(f"{n} {v:.2f}" for n, v in sorted(noisy.items(), key=lambda x: -x[1]))
        print(
            f"\nNOISE: processes outside this run used more than {NOISE_CORES} of a core during "
            f"the closed-loop runs of: {worst} (cores, worst round); compare ratios with care."
        )
    grpc = grpc_lines(aggs)
    if grpc:
        print("\ngRPC points (unary calls over h2c; h2load closed loop, grpcio fixed rate):\n")
        print(grpc)
    engines = engines_table(aggs, s)
    if engines:
        print("\n" + engines)
    print()
    print(targets_table(doc["targets"]))
    for name, reason in not_run.items():
        print(f"\n- {name}: not run: {reason}")
    for name, rs in results.items():
        for r in rs:
            if "error" in r:
                print(f"\n- {name} round {r['round'] + 1}: failed: {r['error']}")
    profiles = profile_tables(aggs)
    if profiles:
        print("\n" + profiles)
    timeline = timeline_tables(aggs)
    if timeline:
        print("\n" + timeline)
    if routing.get("output"):
        print("\nrouting micro-benchmark (scripts/bench_routing.py):\n")
        print("```\n" + routing["output"] + "\n```")
