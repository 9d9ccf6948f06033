"""The targets, checked against ratios from the same run, with nginx's and Envoy's ratio for
the same measure beside ours where they have one (no target of their own: the issues set none).

Contract: a row is {"target", "value", "limit", "measured", "peer", "verdict"}; the verdict is
"not run" when a figure it needs is missing. gRPC points meet the HTTP points' accounting and
delivery checks; their throughput and latency have no target.
"""

from __future__ import annotations

from typing import Any

from benchlib.figures import fmt, pair, ratio

# Ratios from the same run.
TARGET_HEALTHY_RPS = 0.95
TARGET_NOMIRROR_RPS = 0.98
TARGET_HEALTHY_P99 = 1.15
TARGET_FAULT_RPS = 0.95
TARGET_FAULT_P99 = 1.2
TARGET_DELIVERY = 0.999
TARGET_RSS_GROWTH_MB = 30.0  # our reading of "no growth beyond a few tens of MB"
TARGET_COMPILE_S = 2.0
TARGET_MATCH_US = 20.0


def check(
    name: str, value: float | None, limit: float, op: str, measured: str = "", peer: str = ""
) -> dict[str, Any]:
    if value is None:
        verdict = "not run"
    elif op == ">=":
        verdict = "PASS" if value >= limit else "FAIL"
    else:
        verdict = "PASS" if value <= limit else "FAIL"
    return {
        "target": name,
        "value": value,
        "limit": f"{op} {limit:g}",
        "measured": measured,
        "peer": peer,
        "verdict": verdict,
    }


def peers(*pairs: tuple[str, float | None]) -> str:
    """ "label value" for each peer figure that was measured, joined with "; "."""
    return "; ".join(f"{label} {fmt(v)}" for label, v in pairs if v is not None)


def targets(aggs: dict[str, dict[str, Any]], routing: dict[str, Any], soak_res: Any) -> list[Any]:
    def a(name: str, key: str) -> Any:
        return aggs.get(name, {}).get(key)

    def peer_ratio(key: str, plain: str, mirrored: str) -> tuple[str, float | None]:
        return f"{mirrored}/{plain}", ratio(a(mirrored, key), a(plain, key))

    out: list[dict[str, Any]] = []
    base_rps, base_p99 = a("baseline", "rps"), a("baseline", "open_p99_ms")
    ng_h_rps, ng_h_p99 = a("nginx-m100", "rps"), a("nginx-m100", "open_p99_ms")
    for name, limit in (("nomatch", TARGET_NOMIRROR_RPS), ("m0", TARGET_NOMIRROR_RPS)):
        r = ratio(a(name, "rps"), base_rps)
        out.append(
            check(f"{name}: throughput / baseline", r, limit, ">=", pair(a(name, "rps"), base_rps))
        )
    r = ratio(a("m100", "rps"), base_rps)
    out.append(
        check(
            "m100: throughput / baseline",
            r,
            TARGET_HEALTHY_RPS,
            ">=",
            pair(a("m100", "rps"), base_rps),
            peers(
                peer_ratio("rps", "nginx", "nginx-m100"), peer_ratio("rps", "envoy", "envoy-m100")
            ),
        )
    )
    r = ratio(a("m100", "open_p99_ms"), base_p99)
    out.append(
        check(
            "m100: fixed-rate p99 / baseline p99",
            r,
            TARGET_HEALTHY_P99,
            "<=",
            pair(a("m100", "open_p99_ms"), base_p99, " ms"),
            peers(
                peer_ratio("open_p99_ms", "nginx", "nginx-m100"),
                peer_ratio("open_p99_ms", "envoy", "envoy-m100"),
            ),
        )
    )
    h_rps, h_p99 = a("m100", "rps"), a("m100", "open_p99_ms")
    for name in ("slow100", "silent100", "refused100"):
        peer_rps = peer_p99 = ""
        if name == "slow100":
            peer_rps = f"nginx-slow100/nginx-m100 {fmt(ratio(a('nginx-slow100', 'rps'), ng_h_rps))}"
            peer_p99 = "nginx-slow100/nginx-m100 " + fmt(
                ratio(a("nginx-slow100", "open_p99_ms"), ng_h_p99)
            )
        out.append(
            check(
                f"{name}: throughput / m100",
                ratio(a(name, "rps"), h_rps),
                TARGET_FAULT_RPS,
                ">=",
                pair(a(name, "rps"), h_rps),
                peer_rps,
            )
        )
        out.append(
            check(
                f"{name}: fixed-rate p99 / m100 p99",
                ratio(a(name, "open_p99_ms"), h_p99),
                TARGET_FAULT_P99,
                "<=",
                pair(a(name, "open_p99_ms"), h_p99, " ms"),
                peer_p99,
            )
        )
        out.append(
            check(
                f"{name}: peak RSS growth after warm-up (MB)",
                a(name, "rss_growth_mb"),
                TARGET_RSS_GROWTH_MB,
                "<=",
                pair(a(name, "rss_growth_mb"), a(name, "peak_rss_mb"), " MB (growth / peak)"),
            )
        )
    if soak_res and "growth_mb" in soak_res:
        out.append(
            check(
                f"soak {soak_res['point']} {soak_res['duration_s']:g} s full load: RSS growth (MB)",
                soak_res["growth_mb"],
                TARGET_RSS_GROWTH_MB,
                "<=",
                f"{soak_res['rss_after_warmup_mb']} -> peak {soak_res['peak_rss_mb']} MB, "
                f"second half {soak_res['second_half_growth_mb']} MB",
            )
        )
    for name in (
        "nomatch",
        "m0",
        "m50",
        "m100",
        "m100-loop",
        "slow100",
        "silent100",
        "refused100",
        "grpc-m0",
        "grpc-m100",
    ):
        m = aggs.get(name, {}).get("mirror")
        if m is None:
            continue
        fin = m["sent"] + sum(m["failed"].values()) + sum(m["dropped"].values())
        fin += sum(m["skipped"].values())
        out.append(
            check(
                f"{name}: sent+failed+dropped+skipped = sampled",
                1.0 if m["accounted"] else 0.0,
                1.0,
                ">=",
                f"{fin} = {m['sampled']}",
            )
        )
    for name in ("m50", "m100", "m100-loop", "grpc-m100"):
        m = aggs.get(name, {}).get("mirror")
        if m is None:
            continue
        peer = ""
        if name == "m100":
            delivered = []
            for other in ("nginx-m100", "envoy-m100"):
                if "mirror" in aggs.get(other, {}):
                    om = aggs[other]["mirror"]
                    share = ratio(om["received"], om.get("sampled"))
                    delivered.append(f"{other.split('-')[0]} {fmt(share, 4)}")
            peer = "; ".join(delivered)
        out.append(
            check(
                f"{name}: healthy mirror received / sampled",
                ratio(m["received"], m["sampled"]) if m["sampled"] else None,
                TARGET_DELIVERY,
                ">=",
                f"{m['received']} / {m['sampled']}",
                peer,
            )
        )
    out.append(
        check(
            "routing: compile 10,000 rules over 1,000 hosts (s)",
            routing.get("compile_s"),
            TARGET_COMPILE_S,
            "<=",
            routing.get("status", ""),
        )
    )
    out.append(
        check(
            "routing: median match (us)",
            routing.get("median_match_us"),
            TARGET_MATCH_US,
            "<=",
            routing.get("status", ""),
        )
    )
    return out
