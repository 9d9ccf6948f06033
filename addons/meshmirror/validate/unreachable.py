"""`istioctl analyze`-style warnings for HTTP rules that can never match (IST0130 / IST0131)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from meshmirror.config.base import StringMatch
from meshmirror.config.virtualservice import HTTPMatchRequest, HTTPRoute
from meshmirror.diagnostics import Path
from meshmirror.golang import go_quote
from meshmirror.validate.checker import Checker

IST_UNREACHABLE_RULE = "IST0130"  # VirtualServiceUnreachableRule
IST_INEFFECTIVE_MATCH = "IST0131"  # VirtualServiceIneffectiveMatch


def _route_name(rule: HTTPRoute, n: int) -> str:
    return go_quote(rule.name) if rule.name else f"#{n}"


def _match_name(match: HTTPMatchRequest | None, n: int) -> str:
    return go_quote(match.name) if match is not None and match.name else f"#{n}"


def _match_key(match: HTTPMatchRequest | None) -> str:
    """A canonical serialisation of a match without its name, to find duplicates (Istio asJSON)."""
    if match is None:
        return "null"
    data = match.model_dump(by_alias=True, exclude_none=True, exclude={"name"})
    return json.dumps(data, sort_keys=True)


def _exact_or_prefix(sm: StringMatch | None) -> str:
    if sm is None:
        return ""
    if sm.exact:
        return "exact:" + sm.exact
    if sm.prefix:
        return "prefix:" + sm.prefix
    return ""


class _PrefixMatch:
    """Istio `OverlappingMatchValidationForHTTPRoute`: a prefix match reduced for comparison."""

    def __init__(self, rule_n: int, rule_str: str, match_n: int, match: HTTPMatchRequest) -> None:
        assert match.uri is not None and match.uri.prefix
        self.rule_n, self.match_n = rule_n, match_n
        self.route_str = rule_str
        self.match_str = _match_name(match, match_n)
        self.prefix = match.uri.prefix
        self.port = match.port or 0
        self.method = _exact_or_prefix(match.method) or "exact:GET"
        self.authority = _exact_or_prefix(match.authority)
        self.headers = {k: _exact_or_prefix(v) for k, v in (match.headers or {}).items()}
        self.query = {k: _exact_or_prefix(v) for k, v in (match.query_params or {}).items()}
        self.without = {k: _exact_or_prefix(v) for k, v in (match.without_headers or {}).items()}


def _covers(a: _PrefixMatch, b: _PrefixMatch) -> bool:
    """Istio `coveredValidation`: does earlier match `a` catch everything later match `b` does."""
    if not b.prefix.startswith(a.prefix) or a.port != b.port:
        return False
    if a.method != b.method and not a.method.startswith(b.method):
        return False
    if a.authority != b.authority and not a.authority.startswith(b.authority):
        return False
    for am, bm in ((a.headers, b.headers), (a.query, b.query), (a.without, b.without)):
        if len(am) != len(bm):
            return False
        for k, v in am.items():
            if k not in bm or (v != bm[k] and not v.startswith(bm[k])):
                return False
    return True


def analyze_unreachable_http_rules(
    c: Checker, path: Path, rules: Sequence[HTTPRoute | None]
) -> None:
    """Istio `analyzeUnreachableHTTPRules`: warnings, like `istioctl analyze`."""

    def unused(n: int, rule: HTTPRoute, reason: str) -> None:
        c.warn(
            path + (n,),
            f"virtualService rule {_route_name(rule, n)} not used ({reason})",
            code=IST_UNREACHABLE_RULE,
        )

    def ineffective(p: Path, rule_s: str, match_s: str, dup_s: str) -> None:
        c.warn(
            p,
            f"virtualService rule {rule_s} match {match_s} is not used "
            f"(duplicate/overlapping match in rule {dup_s})",
            code=IST_INEFFECTIVE_MATCH,
        )

    seen: dict[str, int] = {}
    empty_match_at = -1
    prefixes: list[_PrefixMatch] = []
    for n, rule in enumerate(rules):
        if rule is None:
            continue
        if not rule.match:
            if empty_match_at >= 0:
                unused(n, rule, "only the last rule can have no matches")
            empty_match_at = n
            continue
        if empty_match_at >= 0:
            # Istio repeats this once per match; once per rule says the same.
            unused(n, rule, "route without matches defined before")
            continue
        duplicates = 0
        for m, match in enumerate(rule.match):
            key = _match_key(match)
            if key in seen:
                dup_n = seen[key]
                dup_rule = rules[dup_n]
                assert dup_rule is not None
                ineffective(
                    path + (n, "match", m),
                    _route_name(rule, n),
                    _match_name(match, m),
                    _route_name(dup_rule, dup_n),
                )
                duplicates += 1
                continue
            seen[key] = n
            if match is not None and match.uri is not None and match.uri.prefix:
                prefixes.append(_PrefixMatch(n, _route_name(rule, n), m, match))
        if duplicates == len(rule.match):
            unused(n, rule, "all matches used by prior rules")
    for i, a in enumerate(prefixes):
        for b in prefixes[i + 1 :]:
            if b.prefix == a.prefix:
                continue  # identical prefixes were handled as duplicates above
            if _covers(a, b):
                ineffective(
                    path + (b.rule_n, "match", b.match_n),
                    b.route_str,
                    f"{b.match_str} of prefix {b.prefix}",
                    f"{a.match_str} of prefix {a.prefix} on {a.route_str}",
                )
