"""Rule translation: each HTTPRoute rule x match becomes one Istio HTTP route (a plain dict).

- Matches: path (Exact / PathPrefix / RegularExpression), headers and query parameters (only the
  first entry with an equivalent name counts), method.
- Filters: RequestMirror -> `mirrors[]` in order (fraction -> 100 * numerator / denominator
  percent; percent -> percent; neither -> 100%); RequestHeaderModifier / ResponseHeaderModifier ->
  `headers`; URLRewrite -> `rewrite`; RequestRedirect -> `redirect` (ReplacePrefixMatch ->
  `prefixRewrite`); `timeouts.request` -> `timeout`. backendRefs -> `route[]` with their
  weights; a rule without a usable backend answers 500 (`directResponse`), as Gateway API
  requires.
- A mirror whose backendRef cannot be resolved is dropped with a warning; the route is kept.

Each generated route carries its `RuleOrigin` (for diagnostics) and its precedence rank; grouping
by parent and building the VirtualService is gatewayapi's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshmirror.config.gateway_api import (
    HTTPHeaderFilter,
    HTTPRoute,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRule,
)
from meshmirror.config.resources import LoadedResource
from meshmirror.diagnostics import Path, Severity
from meshmirror.gatewayapi.backends import BackendResolver
from meshmirror.gatewayapi.origin import RuleOrigin
from meshmirror.gatewayapi.precedence import match_rank


@dataclass
class RouteEntry:
    """One generated Istio HTTP route (one rule x one match) with its precedence key."""

    http: dict[str, Any]
    origin: RuleOrigin
    rank: tuple[int, int, int, int, int]


def convert_rules(res: LoadedResource, route: HTTPRoute, ctx: BackendResolver) -> list[RouteEntry]:
    out: list[RouteEntry] = []
    for i, rule in enumerate(route.spec.rules or ()):
        rule_path: Path = ("spec", "rules", i)
        base, paths = _rule_body(res, rule_path, rule, ctx)
        matches: list[HTTPRouteMatch | None] = list(rule.matches or ()) or [None]
        for j, m in enumerate(matches):
            http = {"name": f"{res.namespace}.{res.name}.{i}.{j}", **base}
            origin_paths = dict(paths)
            if m is not None:
                http["match"] = [_match(m)]
                origin_paths[("match", 0)] = rule_path + ("matches", j)
            out.append(RouteEntry(http, RuleOrigin(res, origin_paths), match_rank(m)))
    return out


def _match(m: HTTPRouteMatch) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind, value = ("PathPrefix", "/") if m.path is None else (m.path.type, m.path.value)
    out["uri"] = {"Exact": {"exact": value}, "PathPrefix": {"prefix": value}}.get(
        kind, {"regex": value}
    )
    headers: dict[str, Any] = {}
    for h in m.headers or ():
        key = h.name.lower()
        if key not in headers:  # "only the first entry with an equivalent name" counts
            headers[key] = {"exact": h.value} if h.type == "Exact" else {"regex": h.value}
    if headers:
        out["headers"] = headers
    params: dict[str, Any] = {}
    for q in m.query_params or ():
        if q.name not in params:
            params[q.name] = {"exact": q.value} if q.type == "Exact" else {"regex": q.value}
    if params:
        out["queryParams"] = params
    if m.method is not None:
        out["method"] = {"exact": m.method}
    return out


def _rule_body(
    res: LoadedResource, rule_path: Path, rule: HTTPRouteRule, ctx: BackendResolver
) -> tuple[dict[str, Any], dict[Path, Path]]:
    """The Istio HTTPRoute fields of a rule (everything but name and match) and the map from
    their paths to the rule's."""
    http: dict[str, Any] = {}
    paths: dict[Path, Path] = {(): rule_path}
    mirrors: list[dict[str, Any]] = []
    redirect = False
    for f, flt in enumerate(rule.filters or ()):
        fp = rule_path + ("filters", f)
        if flt.type == "RequestMirror":
            mirror = _mirror(res, fp, flt, ctx)
            if mirror is not None:
                paths[("mirrors", len(mirrors))] = fp + ("requestMirror",)
                paths[("mirrors", len(mirrors), "destination")] = fp + (
                    "requestMirror",
                    "backendRef",
                )
                mirrors.append(mirror)
        elif flt.type in ("RequestHeaderModifier", "ResponseHeaderModifier"):
            _add_headers(http, flt)
            paths[("headers",)] = fp
        elif flt.type == "URLRewrite" and flt.url_rewrite is not None:
            rewrite = _rewrite(flt)
            if rewrite:
                http["rewrite"] = rewrite
                paths[("rewrite",)] = fp
        elif flt.type == "RequestRedirect" and flt.request_redirect is not None:
            http["redirect"] = _redirect(flt)
            paths[("redirect",)] = fp
            redirect = True
    if mirrors:
        http["mirrors"] = mirrors
    if rule.timeouts is not None:
        timeout = rule.timeouts.request or rule.timeouts.backend_request
        if timeout and timeout not in ("0s", "0ms", "0m", "0h"):
            http["timeout"] = timeout
            paths[("timeout",)] = rule_path + ("timeouts",)
    if redirect:
        return http, paths
    dests: list[dict[str, Any]] = []
    for b, backend in enumerate(rule.backend_refs or ()):
        bp = rule_path + ("backendRefs", b)
        dest, error = ctx.destination(res, bp, backend.object_ref())
        if dest is None:
            ctx.diags.append(
                res.diag(
                    Severity.WARNING,
                    bp,
                    f"backendRef cannot be resolved: {error}; requests it would get are "
                    "answered 500",
                )
            )
            continue
        weight = 1 if backend.weight is None else backend.weight
        if weight == 0:
            continue
        entry: dict[str, Any] = {"destination": dest, "weight": weight}
        headers: dict[str, Any] = {}
        for flt in backend.filters or ():
            if flt.type in ("RequestHeaderModifier", "ResponseHeaderModifier"):
                _add_headers(headers, flt)
        if headers:
            entry["headers"] = headers["headers"]
        paths[("route", len(dests))] = bp
        dests.append(entry)
    if len(dests) == 1:
        dests[0].pop("weight")
    if dests:
        http["route"] = dests
    else:
        http["directResponse"] = {"status": 500}
    return http, paths


def _mirror(
    res: LoadedResource, fp: Path, flt: HTTPRouteFilter, ctx: BackendResolver
) -> dict[str, Any] | None:
    rm = flt.request_mirror
    if rm is None:
        return None
    bp = fp + ("requestMirror", "backendRef")
    dest, error = ctx.destination(res, bp, rm.backend_ref)
    if dest is None:
        ctx.diags.append(
            res.diag(
                Severity.WARNING,
                bp,
                f"mirror backendRef cannot be resolved: {error}; the mirror is dropped, the "
                "route is kept",
            )
        )
        return None
    out: dict[str, Any] = {"destination": dest}
    fraction = rm.fraction
    percent = mirror_percent(
        rm.percent,
        fraction.numerator if fraction is not None else None,
        fraction.denominator if fraction is not None else None,
    )
    if percent is not None:
        out["percentage"] = {"value": percent}
    return out


def mirror_percent(
    percent: int | None, numerator: int | None, denominator: int | None
) -> float | None:
    """Istio `createMirrorFilter`: fraction -> 100 * numerator / denominator (denominator 0 or
    unset: 100); else percent; neither -> None (100%)."""
    if numerator is not None:
        den = denominator or 100
        return 100.0 * numerator / den
    if percent is not None:
        return float(percent)
    return None


def _header_ops(hf: HTTPHeaderFilter) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    if hf.set:
        ops["set"] = {h.name: h.value for h in hf.set}
    if hf.add:
        ops["add"] = {h.name: h.value for h in hf.add}
    if hf.remove:
        ops["remove"] = list(hf.remove)
    return ops


def _add_headers(target: dict[str, Any], flt: HTTPRouteFilter) -> None:
    headers = target.setdefault("headers", {})
    if flt.request_header_modifier is not None:
        headers["request"] = _header_ops(flt.request_header_modifier)
    if flt.response_header_modifier is not None:
        headers["response"] = _header_ops(flt.response_header_modifier)


def _rewrite(flt: HTTPRouteFilter) -> dict[str, Any]:
    rw = flt.url_rewrite
    assert rw is not None
    out: dict[str, Any] = {}
    if rw.hostname:
        out["authority"] = rw.hostname
    if rw.path is not None:
        if rw.path.type == "ReplaceFullPath" and rw.path.replace_full_path is not None:
            out["uriRegexRewrite"] = {"match": "/.*", "rewrite": rw.path.replace_full_path}
        elif rw.path.replace_prefix_match is not None:
            out["uri"] = rw.path.replace_prefix_match or "/"
    return out


def _redirect(flt: HTTPRouteFilter) -> dict[str, Any]:
    rd = flt.request_redirect
    assert rd is not None
    out: dict[str, Any] = {"redirectCode": rd.status_code or 302}
    if rd.scheme:
        out["scheme"] = rd.scheme
    if rd.hostname:
        out["authority"] = rd.hostname
    if rd.port is not None:
        out["port"] = rd.port
    elif rd.scheme:
        out["derivePort"] = "FROM_PROTOCOL_DEFAULT"
    if rd.path is not None:
        if rd.path.type == "ReplaceFullPath":
            if rd.path.replace_full_path is not None:
                out["uri"] = rd.path.replace_full_path or "/"
        elif rd.path.replace_prefix_match:
            # Istio >= 1.31 (`createRedirectFilter`): the matched prefix is swapped, as Envoy's
            # redirect prefix_rewrite does.
            out["prefixRewrite"] = rd.path.replace_prefix_match
    return out
