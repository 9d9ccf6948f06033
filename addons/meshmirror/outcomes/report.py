"""`meshmirror report OUTCOMES.jsonl [--html OUT.html]`: what the mirror log says, per rule and
mirror cluster: sampled, sent, failures by class, drops and skips, primary versus shadow latency
(p50 / p95 / p99), mismatch rate and the fields that differ most, each with an example diff.

The HTML is one self-contained file (inline CSS and SVG, no script, no network).
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from meshmirror import grpc
from meshmirror.outcomes.counters import safe_field

_TOP_FIELDS = 10

#: How each side's latency in an outcome record is measured, as the report states it.
LATENCY_MEASURES = (
    (
        "primary",
        "from the request's last byte read from the client to the primary's last response "
        "byte, as mitmproxy stamps them: the proxy's own work on the request is included, and "
        "the connection is mitmproxy's, one per client connection (its connect counts only as "
        "far as it was still under way when the request had been read); for a replayed "
        "recording, the recorded times",
    ),
    (
        "shadow",
        "from the sender taking the copy to the mirror's last response byte, over the sender's "
        "pooled keep-alive connections (a connect included when no idle one was there)",
    ),
)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class GroupStats:
    rule: str
    cluster: str
    matched: int = 0  # the highest `matched` of the group's records: requests the rule matched
    sampled: int = 0
    sent: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    shadow_status: Counter[str] = field(default_factory=Counter)
    # gRPC calls' copies: how many, their answers' gRPC statuses by name, and how many failed
    # or were answered with a status other than OK.
    grpc_sampled: int = 0
    grpc_status: Counter[str] = field(default_factory=Counter)
    grpc_errors: int = 0
    primary_latency: list[float] = field(default_factory=list)
    shadow_latency: list[float] = field(default_factory=list)
    compared: int = 0
    mismatched: int = 0
    fields: Counter[str] = field(default_factory=Counter)
    noise: Counter[str] = field(default_factory=Counter)  # fields removed as learned noise
    not_compared: Counter[str] = field(default_factory=Counter)  # by reason (too_costly, ...)
    examples: dict[str, tuple[str, str]] = field(default_factory=dict)  # field -> (request, diff)

    @property
    def mismatch_rate(self) -> float | None:
        return self.mismatched / self.compared if self.compared else None

    def latency(self, which: str) -> dict[str, float | None]:
        values = self.primary_latency if which == "primary" else self.shadow_latency
        return {f"p{p}": percentile(values, p) for p in (50, 95, 99)}

    @property
    def sampled_share(self) -> float | None:
        """Sampled copies over matched requests (up to the last record), when records say."""
        return self.sampled / self.matched if self.matched else None

    def add(self, rec: dict[str, Any]) -> None:
        self.sampled += 1
        matched = rec.get("matched")
        if isinstance(matched, int) and not isinstance(matched, bool) and matched > self.matched:
            self.matched = matched
        outcome = rec.get("outcome")
        reason = str(rec.get("reason") or "other")
        if outcome == "sent":
            self.sent += 1
            self.shadow_status[str(rec.get("shadow_status"))] += 1
        elif outcome == "failed":
            self.failed[reason] += 1
        elif outcome == "dropped":
            self.dropped[reason] += 1
        elif outcome == "skipped":
            self.skipped[reason] += 1
        if rec.get("grpc") is True:
            self._add_grpc(outcome, rec.get("grpc_status"))
        if isinstance(rec.get("primary_latency_ms"), int | float) and outcome == "sent":
            self.primary_latency.append(float(rec["primary_latency_ms"]))
        if isinstance(rec.get("shadow_latency_ms"), int | float) and outcome == "sent":
            self.shadow_latency.append(float(rec["shadow_latency_ms"]))
        comparison = rec.get("comparison")
        if isinstance(comparison, dict) and comparison.get("not_compared"):
            self.not_compared[str(comparison["not_compared"])] += 1
        if isinstance(comparison, dict) and "match" in comparison:
            self.compared += 1
            self.noise.update(str(n) for n in comparison.get("noise") or ())
            if not comparison["match"]:
                self.mismatched += 1
                examples = comparison.get("examples") or {}
                for name in comparison.get("fields") or ():
                    self.fields[name] += 1
                    if name not in self.examples:
                        where = str(rec.get("request_id") or _request_line(rec))
                        self.examples[name] = (where, str(examples.get(name, "")))

    def _add_grpc(self, outcome: Any, status: Any) -> None:
        self.grpc_sampled += 1
        if isinstance(status, int) and not isinstance(status, bool) and outcome == "sent":
            self.grpc_status[grpc.status_label(status)] += 1
            if status != 0:
                self.grpc_errors += 1
        elif outcome == "failed":
            self.grpc_errors += 1

    @property
    def grpc_error_rate(self) -> float | None:
        """(gRPC copies failed + answered with a status other than OK) / gRPC copies sampled."""
        return self.grpc_errors / self.grpc_sampled if self.grpc_sampled else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "cluster": self.cluster,
            "matched": self.matched or None,
            "sampled": self.sampled,
            "sampled_share": self.sampled_share,
            "sent": self.sent,
            "failed": dict(self.failed),
            "dropped": dict(self.dropped),
            "skipped": dict(self.skipped),
            "shadow_status": dict(self.shadow_status),
            "grpc_sampled": self.grpc_sampled,
            "grpc_status": dict(self.grpc_status),
            "grpc_error_rate": self.grpc_error_rate,
            "latency_ms": {"primary": self.latency("primary"), "shadow": self.latency("shadow")},
            "compared": self.compared,
            "mismatched": self.mismatched,
            "mismatch_rate": self.mismatch_rate,
            "noise_removed": dict(self.noise),
            "not_compared": dict(self.not_compared),
            "top_fields": [
                {"field": f, "count": n, "example": self.examples.get(f, ("", ""))[1]}
                for f, n in self.fields.most_common(_TOP_FIELDS)
            ],
        }


def _request_line(rec: dict[str, Any]) -> str:
    """`GET /path` when the record has no request id (older records: the flow id)."""
    if rec.get("method") and rec.get("path"):
        return f"{rec['method']} {rec['path']}"
    return str(rec.get("flow") or "")


OUTCOMES = frozenset({"sent", "failed", "dropped", "skipped"})

#: Latencies a live report keeps per rule and mirror; past it the oldest half is dropped, so
#: its percentiles describe the recent copies and its memory stays bounded.
LIVE_LATENCIES = 20_000


class GroupedReport:
    """Groups per (rule, mirror cluster), built record by record: by `build_report` from a log,
    and as a running proxy records its copies (`mirror.verdict`, with `max_latencies` set)."""

    def __init__(self, max_latencies: int | None = LIVE_LATENCIES) -> None:
        self.groups: dict[tuple[str, str], GroupStats] = {}
        self.max_latencies = max_latencies

    def add(self, rec: dict[str, Any]) -> None:
        key = (str(rec.get("rule") or "-"), str(rec.get("cluster") or "-"))
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = GroupStats(*key)
        g.add(rec)
        cap = self.max_latencies
        if cap is not None:
            for values in (g.primary_latency, g.shadow_latency):
                if len(values) > cap:
                    del values[: cap // 2]

    def sorted_groups(self) -> list[GroupStats]:
        return [self.groups[k] for k in sorted(self.groups)]


def is_outcome_record(rec: dict[str, Any]) -> bool:
    """A line `mirror_log` wrote: an outcome of its four, a rule and a mirror cluster."""
    return rec.get("outcome") in OUTCOMES and bool(rec.get("rule")) and bool(rec.get("cluster"))


def build_report(records: Iterable[dict[str, Any]]) -> list[GroupStats]:
    """Groups per (rule, mirror cluster) of the records that are outcome records (others are
    left out: `is_outcome_record`)."""
    report = GroupedReport(max_latencies=None)
    for rec in records:
        if is_outcome_record(rec):
            report.add(rec)
    return report.sorted_groups()


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}ms"


def _fmt_counter(c: Counter[str]) -> str:
    return ",".join(f"{_shown(k)}:{v}" for k, v in sorted(c.items())) if c else "0"


def _fmt_rate(g: GroupStats) -> str:
    rate = g.mismatch_rate
    if rate is None:
        return "not compared"
    return f"{rate * 100:.1f}% ({g.mismatched}/{g.compared})"


def _shown(text: str) -> str:
    """A value from the outcome log (a mirror's JSON key, a client's request id, a hand-edited
    line) as the text report prints it: escaped and bounded, so it cannot act on a terminal or
    forge a line (the HTML page escapes for HTML instead)."""
    return safe_field(text, keep_spaces=True)


def render_text(groups: Sequence[GroupStats], out: TextIO, source: str = "") -> None:
    """The report as text. Every value that comes from the records is printed through
    `_shown`."""
    total = sum(g.sampled for g in groups)
    out.write(f"meshmirror report{f' of {source}' if source else ''}: {total} sampled copies\n")
    if not groups:
        out.write("no records\n")
        return
    for g in groups:
        out.write(f"\n{_shown(g.rule)} -> {_shown(g.cluster)}\n")
        share = g.sampled_share
        if share is not None:
            out.write(f"  matched {g.matched}  sampled {share * 100:.3g}%\n")
        out.write(
            f"  sampled {g.sampled}  sent {g.sent}  failed {_fmt_counter(g.failed)}  "
            f"dropped {_fmt_counter(g.dropped)}  skipped {_fmt_counter(g.skipped)}\n"
        )
        if g.shadow_status:
            out.write(f"  shadow status {_fmt_counter(g.shadow_status)}\n")
        if g.grpc_sampled:
            out.write(
                f"  grpc status {_fmt_counter(g.grpc_status)}  errors "
                f"{g.grpc_errors}/{g.grpc_sampled}\n"
            )
        for which in ("primary", "shadow"):
            lat = g.latency(which)
            out.write(
                f"  {which:<8} latency p50 {_fmt_ms(lat['p50'])}  p95 {_fmt_ms(lat['p95'])}  "
                f"p99 {_fmt_ms(lat['p99'])}\n"
            )
        out.write(f"  mismatches {_fmt_rate(g)}\n")
        if g.not_compared:
            out.write(f"  not compared {_fmt_counter(g.not_compared)}\n")
        if g.noise:
            out.write(
                "  learned noise removed: "
                + ", ".join(f"{_shown(name)} ({n})" for name, n in g.noise.most_common(_TOP_FIELDS))
                + "\n"
            )
        for name, n in g.fields.most_common(_TOP_FIELDS):
            where, example = g.examples.get(name, ("", ""))
            out.write(f"    {n:>6}  {_shown(name)}")
            if example:
                out.write(f"   e.g. {_shown(example)}")
            if where:
                out.write(f"  [{_shown(where)}]")
            out.write("\n")
    out.write("\nlatency, as measured:\n")
    for which, how in LATENCY_MEASURES:
        out.write(f"  {which} latency: {how}\n")


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}code{font-size:12px;color:#a33}
.num{text-align:right}.bad{color:#b00}.ok{color:#070}
"""


def _latency_svg(groups: Sequence[GroupStats]) -> str:
    """Grouped horizontal bars: p50/p95/p99 of primary and shadow per rule and mirror."""
    rows: list[tuple[str, str, str, float]] = []
    for g in groups:
        for which in ("primary", "shadow"):
            for p, v in g.latency(which).items():
                if v is not None:
                    rows.append((f"{g.rule} -> {g.cluster}", which, p, v))
    if not rows:
        return '<p id="latency-chart">no latency data</p>'
    top = max(v for *_, v in rows) or 1.0
    bar_h, gap, label_w, width = 14, 4, 330, 900
    colors = {"primary": "#4a7bd0", "shadow": "#d08a2a"}
    parts: list[str] = []
    y = 10
    last_group = ""
    for group, which, p, v in rows:
        if group != last_group:
            parts.append(
                f'<text x="0" y="{y + 11}" font-size="12" font-weight="bold">'
                f"{html.escape(group)}</text>"
            )
            y += bar_h + gap
            last_group = group
        w = max(1.0, (width - label_w - 80) * v / top)
        parts.append(
            f'<text x="10" y="{y + 11}" font-size="11">{which} {p}</text>'
            f'<rect class="bar" x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" '
            f'fill="{colors[which]}"><title>{which} {p}: {v:.1f} ms</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 11}" font-size="11">{v:.1f} ms</text>'
        )
        y += bar_h + gap
    return (
        f'<svg id="latency-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{y + 10}" viewBox="0 0 {width} {y + 10}" role="img" '
        f'aria-label="latency percentiles, primary versus shadow">{"".join(parts)}</svg>'
    )


def render_html(
    groups: Sequence[GroupStats],
    source: str = "",
    verdict: Sequence[tuple[str, str]] | None = None,
) -> str:
    """The self-contained page; `verdict`, when conditions were given: (state, line) pairs, state
    FAIL / UNKNOWN / ok / TOO FEW, shown first."""
    esc = html.escape
    total = sum(g.sampled for g in groups)
    body: list[str] = [
        f"<h1>meshmirror report</h1><p>{esc(source)}: {total} sampled copies, "
        f"{len(groups)} rule/mirror pair(s)</p>",
    ]
    if verdict is not None:
        failed = any(state in ("FAIL", "TOO FEW") for state, _ in verdict)
        body.append(
            f"<h2 id='verdict' class='{'bad' if failed else 'ok'}'>Verdict: "
            f"{'FAILED' if failed else 'PASSED'}</h2><ul>"
            + "".join(
                f"<li class='{'bad' if state in ('FAIL', 'TOO FEW') else 'ok'}'>"
                f"{esc(state)}: {esc(line)}</li>"
                for state, line in verdict
            )
            + "</ul>"
        )
    body += [
        "<h2>Latency (ms), primary versus shadow</h2>",
        _latency_svg(groups),
        "<ul id='latency-measures'>"
        + "".join(f"<li>{which} latency: {esc(how)}</li>" for which, how in LATENCY_MEASURES)
        + "</ul>",
        "<h2>Outcomes</h2>",
        "<table id='outcomes'><tr><th>rule</th><th>mirror</th><th>sampled</th><th>sent</th>"
        "<th>failed</th><th>dropped</th><th>skipped</th><th>gRPC status</th>"
        "<th>mismatch rate</th></tr>",
    ]
    for g in groups:
        rate_class = "ok" if not g.mismatched else "bad"
        body.append(
            f"<tr><td>{esc(g.rule)}</td><td>{esc(g.cluster)}</td>"
            f"<td class='num'>{g.sampled}</td><td class='num'>{g.sent}</td>"
            f"<td>{esc(_fmt_counter(g.failed))}</td><td>{esc(_fmt_counter(g.dropped))}</td>"
            f"<td>{esc(_fmt_counter(g.skipped))}</td>"
            f"<td>{esc(_fmt_counter(g.grpc_status)) if g.grpc_sampled else '-'}</td>"
            f"<td class='{rate_class}'>{esc(_fmt_rate(g))}</td></tr>"
        )
    body.append("</table>")
    for g in groups:
        if not g.fields:
            continue
        body.append(f"<h2>Differing fields: {esc(g.rule)} -&gt; {esc(g.cluster)}</h2>")
        body.append("<table><tr><th>field</th><th>count</th><th>example</th><th>request</th></tr>")
        for name, n in g.fields.most_common(_TOP_FIELDS):
            where, example = g.examples.get(name, ("", ""))
            body.append(
                f"<tr><td><code>{esc(name)}</code></td><td class='num'>{n}</td>"
                f"<td><code>{esc(example)}</code></td><td>{esc(where)}</td></tr>"
            )
        body.append("</table>")
    for g in groups:
        if g.noise:
            body.append(
                f"<h2>Learned noise removed: {esc(g.rule)} -&gt; {esc(g.cluster)}</h2><p>"
                + ", ".join(f"<code>{esc(n)}</code> ({c})" for n, c in g.noise.most_common())
                + "</p>"
            )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width'>"
        f"<title>meshmirror report</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
