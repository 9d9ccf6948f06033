"""`mirror.stats` as a table: what mitmproxy's console (a grid) and mitmweb (the rows as JSON
arrays in the command bar) both show readably, where one JSON string would be one escaped line.

Pure: a function of the `mirror.stats.json` snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshmirror.outcomes.counters import safe_field

COLUMNS = (
    "mirror cluster",
    "matched",
    "sampled",
    "share (configured)",
    "sent",
    "failed",
    "dropped",
    "skipped",
    "in flight",
    "circuit",
)


def stats_rows(snapshot: Mapping[str, Any]) -> list[list[str]]:
    """A header row, a row per mirror cluster and the total, then a row each for requests not
    mirrored, the config, and comparisons; every row as wide as the header."""
    rows = [list(COLUMNS)]
    for name, c in sorted(snapshot.get("clusters", {}).items()):
        rows.append(_cluster_row(name, c))
    if len(rows) > 2:
        rows.append(_cluster_row("total", snapshot.get("total", {})))
    if len(rows) == 1:
        rows.append(_note("nothing sampled yet"))
    unmatched = snapshot.get("requests_not_mirrored") or {}
    if unmatched:
        rows.append(_note("not mirrored", _pairs(unmatched)))
    reloads = snapshot.get("reloads") or {}
    rows.append(
        _note(
            "config",
            f"generation {snapshot.get('generation', 0)} ({snapshot.get('config', '-')}); "
            f"reloads {reloads.get('loaded', 0)} loaded, {reloads.get('rejected', 0)} rejected",
        )
    )
    for key, counts in sorted((snapshot.get("comparison") or {}).items()):
        rows.append(_note(f"compared {_shown(key)}", _pairs(counts)))
    for rule, learned in sorted((snapshot.get("noise") or {}).items()):
        # Learned fields are a mirror's JSON keys: shown escaped, as outcome lines are.
        fields = ", ".join(_shown(f) for f in learned.get("noise", ())) or "none yet"
        rows.append(
            _note(
                f"noise {_shown(rule)}",
                f"{fields} ({learned.get('baseline_compared', 0)} baseline)",
            )
        )
    return rows


def _cluster_row(name: str, c: Mapping[str, Any]) -> list[str]:
    share = "-"
    if c.get("sampled_percent") is not None:
        share = f"{c['sampled_percent']:.3g}% ({c.get('configured_percent', 0):.4g}%)"
    circuit = c.get("circuit", {}).get("state", "") if name != "total" else ""
    return [
        name,
        str(c.get("matched", 0)),
        str(c.get("sampled", 0)),
        share,
        str(c.get("sent", 0))
        + (f" (grpc {_pairs(c['grpc_status'])})" if c.get("grpc_status") else ""),
        _pairs(c.get("failed") or {}) or "0",
        _pairs(c.get("dropped") or {}) or "0",
        _pairs(c.get("skipped") or {}) or "0",
        str(c.get("in_flight", 0)),
        circuit,
    ]


def _shown(text: str) -> str:
    return safe_field(text, keep_spaces=True)


def _pairs(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))


def _note(label: str, text: str = "") -> list[str]:
    return [label, text] + [""] * (len(COLUMNS) - 2)
