"""A release verdict from a report: `--fail-on` conditions over the figures of each rule and mirror.

A condition is `FIGURE OP VALUE`, and the verdict fails when it holds (as a CI gate reads it):

    mismatch_rate > 1%          shadow_error_rate > 0.5%        shadow_p99 > 250ms
    shadow_p99 > 2x primary_p99    sampled < 100

FIGUREs, per (rule, mirror cluster) of the report:
    mismatch_rate       mismatched / compared copies (needs mirror_compare)
    shadow_error_rate   (failed copies + shadow 5xx answers) / sampled
    failed_rate         failed copies / sampled
    grpc_error_rate     (failed copies + answers with a gRPC status other than OK) / sampled,
                        over the copies of gRPC calls (unknown without any)
    shadow_p50/p95/p99, primary_p50/p95/p99     latency of the sent copies and their primaries
    sampled, sent, compared                     counts
VALUE is a number, with `%` (a fraction), `ms` or `s` (seconds; latencies are compared in
seconds), or `N x FIGURE` / `Nx FIGURE` (that many times another figure of the same group).
OP is one of > >= < <= == !=.

A figure without data (nothing compared, no latency) makes its condition unknown: it neither
fails nor passes, and the verdict names it. Pure: no files, no printing.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from meshmirror.outcomes.counters import safe_field
from meshmirror.outcomes.report import GroupStats

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_CONDITION = re.compile(
    r"^\s*(?P<figure>[a-z0-9_]+)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>.+?)\s*$"
)
_NUMBER = re.compile(r"^(?P<n>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>%|ms|s)?$")
_MULTIPLE = re.compile(r"^(?P<n>[0-9]*\.?[0-9]+)\s*x\s*(?P<figure>[a-z0-9_]+)$")
LATENCIES = tuple(f"{side}_p{p}" for side in ("shadow", "primary") for p in (50, 95, 99))
FIGURES = (
    "mismatch_rate",
    "shadow_error_rate",
    "failed_rate",
    "grpc_error_rate",
    *LATENCIES,
    "sampled",
    "sent",
    "compared",
)


class ConditionError(ValueError):
    """A `--fail-on` expression that does not parse; the message says why."""


@dataclass(frozen=True, slots=True)
class Condition:
    text: str
    figure: str
    op: str
    value: float  # seconds for latencies, a fraction for rates
    of: str | None = None  # VALUE is `value x of` (another figure)


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    cluster: str
    condition: Condition
    figure: float | None  # None: no data, the condition is unknown
    limit: float | None
    holds: bool

    def text(self) -> str:
        c = self.condition
        if self.figure is None or self.limit is None:
            return f"{c.text}: unknown (no data)"
        return f"{c.text}: {_show(c.figure, self.figure)} {c.op} {_show(c.figure, self.limit)}"


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    too_few: list[tuple[str, str, int]] = field(default_factory=list)  # (rule, cluster, sampled)

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if f.holds]


def parse_condition(text: str) -> Condition:
    m = _CONDITION.match(text)
    if m is None:
        raise ConditionError(f"{text!r}: expected FIGURE OP VALUE, e.g. 'mismatch_rate > 1%'")
    figure, op, value = m["figure"], m["op"], m["value"]
    _check_figure(text, figure)
    multiple = _MULTIPLE.match(value)
    if multiple is not None:
        _check_figure(text, multiple["figure"])
        if (figure in LATENCIES) != (multiple["figure"] in LATENCIES):
            raise ConditionError(f"{text!r}: compare a latency with a latency, a rate with a rate")
        return Condition(text, figure, op, float(multiple["n"]), multiple["figure"])
    number = _NUMBER.match(value)
    if number is None:
        raise ConditionError(
            f"{text!r}: {value!r} is not a number, a percentage, a duration or Nx FIGURE"
        )
    n, unit = float(number["n"]), number["unit"]
    if figure in LATENCIES:
        if unit not in ("ms", "s"):
            raise ConditionError(f"{text!r}: a latency needs ms or s (e.g. 250ms)")
        n = n / 1000 if unit == "ms" else n
    elif figure.endswith("_rate"):
        if unit in ("ms", "s"):
            raise ConditionError(f"{text!r}: a rate is a fraction or a percentage")
        n = n / 100 if unit == "%" else n
    elif unit is not None:
        raise ConditionError(f"{text!r}: {figure} is a count, without a unit")
    return Condition(text, figure, op, n)


def _check_figure(text: str, figure: str) -> None:
    if figure not in FIGURES:
        raise ConditionError(f"{text!r}: unknown figure {figure!r}; one of {', '.join(FIGURES)}")


def figure_of(g: GroupStats, figure: str) -> float | None:
    """One figure of a group; latencies in seconds, rates as fractions; None: no data."""
    if figure == "mismatch_rate":
        return g.mismatch_rate
    if figure == "grpc_error_rate":
        return g.grpc_error_rate
    if figure in ("shadow_error_rate", "failed_rate"):
        if not g.sampled:
            return None
        failed = sum(g.failed.values())
        if figure == "failed_rate":
            return failed / g.sampled
        errors = sum(n for status, n in g.shadow_status.items() if status.startswith("5"))
        return (failed + errors) / g.sampled
    if figure in LATENCIES:
        side, _, p = figure.partition("_p")
        ms = g.latency(side)[f"p{p}"]
        return None if ms is None else ms / 1000
    return float(getattr(g, figure))


def evaluate(
    groups: Sequence[GroupStats], conditions: Sequence[Condition], min_samples: int = 0
) -> Verdict:
    verdict = Verdict()
    for g in groups:
        if g.sampled < min_samples:
            verdict.too_few.append((g.rule, g.cluster, g.sampled))
            continue
        for c in conditions:
            value = figure_of(g, c.figure)
            limit: float | None = c.value
            if c.of is not None:
                base = figure_of(g, c.of)
                limit = None if base is None else c.value * base
            holds = value is not None and limit is not None and _OPS[c.op](value, limit)
            verdict.findings.append(Finding(g.rule, g.cluster, c, value, limit, holds))
    return verdict


# What XML 1.0 does not allow in a document at all, even as a character reference.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    """`text` with each character XML 1.0 forbids shown as `\\xNN` / `\\uNNNN`."""
    return _NOT_XML.sub(lambda m: _escaped_char(m.group()), text)


def _escaped_char(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _attr(text: str) -> str:
    return quoteattr(_xml_text(text))


def _text(text: str) -> str:
    return escape(_xml_text(text))


def junit_xml(verdict: Verdict, name: str = "meshmirror verdict") -> str:
    """One testcase per rule and mirror (classname the rule, name the mirror cluster), a
    <failure> per condition that holds, the unknown ones as <system-out>. Well-formed XML 1.0
    whatever the names hold: characters it forbids are replaced by their escapes."""
    cases: dict[tuple[str, str], list[Finding]] = {}
    for f in verdict.findings:
        cases.setdefault((f.rule, f.cluster), []).append(f)
    failures = sum(1 for found in cases.values() if any(f.holds for f in found))
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<testsuite name={_attr(name)} tests="{len(cases)}" failures="{failures}">',
    ]
    for (rule, cluster), found in sorted(cases.items()):
        lines.append(f"  <testcase classname={_attr(rule)} name={_attr(cluster)}>")
        for f in found:
            if f.holds:
                lines.append(f"    <failure message={_attr(f.text())}>{_text(f.text())}</failure>")
        unknown = [f.text() for f in found if f.figure is None or f.limit is None]
        if unknown:
            lines.append(f"    <system-out>{_text('; '.join(unknown))}</system-out>")
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"


def _show(figure: str, value: float) -> str:
    if figure in LATENCIES:
        return f"{value * 1000:.1f}ms"
    if figure.endswith("_rate"):
        return f"{value * 100:.2f}%"
    return f"{value:g}"


def verdict_lines(verdict: Verdict, min_samples: int = 0) -> list[tuple[str, str]]:
    """(state, `RULE -> CLUSTER: ...`) per group set aside and per finding; state is TOO FEW,
    FAIL, UNKNOWN or ok. Rule and cluster are escaped as outcome lines escape them."""
    out = [
        ("TOO FEW", f"{_pair(rule, cluster)}: {n} sampled < --min-samples {min_samples}")
        for rule, cluster, n in verdict.too_few
    ]
    for f in verdict.findings:
        state = "FAIL" if f.holds else ("UNKNOWN" if f.figure is None or f.limit is None else "ok")
        out.append((state, f"{_pair(f.rule, f.cluster)}: {f.text()}"))
    return out


def _pair(rule: str, cluster: str) -> str:
    """`RULE -> CLUSTER`, escaped (the names come from the records): a line of its own."""
    return f"{safe_field(rule, keep_spaces=True)} -> {safe_field(cluster, keep_spaces=True)}"
