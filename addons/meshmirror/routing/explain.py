"""Explaining a match: why a request got (or did not get) a route, for `meshmirror explain`.

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
