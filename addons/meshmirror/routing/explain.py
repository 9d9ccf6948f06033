"""Explaining a match: why a request got (or did not get) a route, for `meshmirror explain`,
and what a route does besides routing, in words, for `explain` and `routes`.

The slow, talkative twin of `match.match_request`: it walks the same virtual host and routes in
the same order, but records the first failing condition of every route tried. Kept out of
match.py so that the per-request path stays small; only the CLI calls this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshmirror.routing.request_view import RequestView

if TYPE_CHECKING:
    from meshmirror.routing.table import Route, RouteTable, VirtualHost


@dataclass(frozen=True)
class RouteTrial:
    route: Route
    failure: str | None  # None: this route matched


@dataclass(frozen=True)
class Explanation:
    """Why a request got (or did not get) a route: for `meshmirror explain`."""

    host: str
    virtual_host: VirtualHost | None
    domain: str | None  # the domain of the virtual host that matched the Host
    trials: tuple[RouteTrial, ...]
    route: Route | None
    reason: str | None = None  # why no virtual host / no route

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.virtual_host is None:
            out.append(f"virtual host: none ({self.reason})")
            return out
        out.append(
            f"virtual host: {self.virtual_host.name} (Host {self.host!r} matched domain "
            f"{self.domain!r})"
        )
        for t in self.trials:
            if t.failure is None:
                out.append(f"  {t.route.label}: matched ({t.route.matcher.describe()})")
            else:
                out.append(f"  {t.route.label}: no match: {t.failure}")
        if self.route is None and self.reason:
            out.append(f"route: none ({self.reason})")
        return out


def explain_request(table: RouteTable, req: RequestView) -> Explanation:
    found = table.select_virtual_host_domain(req.authority)
    if found is None:
        domains = [d for vh in table.virtual_hosts for d in vh.domains]
        shown = ", ".join(domains[:10]) + (" ..." if len(domains) > 10 else "")
        return Explanation(
            req.host,
            None,
            None,
            (),
            None,
            f"Host {req.host!r} matches no domain ({shown or 'the table is empty'})",
        )
    vh, domain = found
    trials: list[RouteTrial] = []
    for route in vh.routes:
        failure = route.matcher.first_failure(req)
        trials.append(RouteTrial(route, failure))
        if failure is None:
            return Explanation(req.host, vh, domain, tuple(trials), route)
    return Explanation(
        req.host, vh, domain, tuple(trials), None, "no route of the virtual host matched"
    )


def policy_lines(
    route: Route, req: RequestView, path: str, *, default_retries: bool = False
) -> tuple[list[str], bool]:
    """What the matched `route` does with this request besides choosing its destinations:
    (lines, preflight), `preflight` True when the CORS filter answers the request before the
    route's action (nothing else applies then). `path` is the request's path as sent."""
    lines: list[str] = []
    if route.cors is not None:
        preflight = route.cors.preflight_answer(req.method, req.headers)
        if preflight is not None:
            shown = ", ".join(f"{n.decode()}: {v.decode()}" for n, v in preflight) or "none"
            lines.append(
                "cors: a preflight, answered 200 by the proxy (never routed, never mirrored); "
                f"headers {shown}"
            )
            return lines, True
        cors_headers = route.cors.response_headers(req.headers)
        origin = req.headers.get("origin")
        if cors_headers:
            shown = ", ".join(f"{n.decode()}: {v.decode()}" for n, v in cors_headers)
            lines.append(f"cors: the response gets {shown}")
        elif origin:
            lines.append(f"cors: origin {origin!r} is not allowed; the response is unchanged")
    rd = route.redirect_policy
    if rd is not None:
        lines.append(
            f"redirect: {rd.status}, Location: {rd.location(req.scheme, req.authority, path)}"
        )
    retries = retries_text(route, default_retries=default_retries)
    if retries is not None:
        lines.append(f"retries: {retries}")
    return lines, False


def route_policy_lines(route: Route, *, default_retries: bool = False) -> list[str]:
    """The route's redirect, CORS filter and retries in words, for the route table."""
    out: list[str] = []
    if route.redirect_policy is not None:
        out.append(f"redirect {route.redirect_policy.describe()}")
    if route.cors is not None:
        out.append(f"cors: {route.cors.describe()}; preflights answered by the proxy")
    retries = retries_text(route, default_retries=default_retries)
    if retries is not None:
        out.append(f"retries: {retries}")
    return out


def retries_text(route: Route, *, default_retries: bool = False) -> str | None:
    """The route's retry policy in words; None when it has none. `default_retries`: whether the
    proxy applies Istio's mesh default (`mirror_default_retries=istio`)."""
    if route.upstream is not None and route.upstream.retries:
        return route.upstream.describe()
    mesh = route.mesh_default_upstream
    if mesh is None:
        return None
    if default_retries:
        return f"Istio's mesh default, applied (mirror_default_retries=istio): {mesh.describe()}"
    return (
        "not applied by meshmirror (mirror_default_retries=off); Istio would apply its mesh "
        f"default: {mesh.describe()}"
    )
