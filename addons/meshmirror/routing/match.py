"""Request matching: a RequestView against a compiled RouteTable, first match wins (pure).

This module walks the table per request (`match_request`). Beside it in `routing/`:

- request_view.py: `RequestView` (what matching sees of a request).
- matchers.py: the compiled condition types (`StringMatcher`, `HeaderMatcher`, `QueryMatcher`,
  `RouteMatcher`) with the code that evaluates, describes and dumps them.
- compile_match.py: `compile_route_match`, which the route compiler calls once per match block
  to build them.
- explain.py: `explain_request`, the per-condition trace behind `meshmirror explain`.

Semantics follow Envoy's route matching as Istio configures it:

- uri `prefix` tests the start of the raw `:path` (query included), `exact` the path without the
  query, `regex` a full match of the path without the query (RE2); `case_sensitive` (from
  `ignoreUriCase`) applies to prefix/exact only.
- header conditions see multiple values joined with ","; `withoutHeaders` is an inverted header
  condition that treats a missing header as "" unless it is a present-match.
- query parameters are percent-decoded; the first value of a repeated key is the one tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshmirror.routing.request_view import RequestView

if TYPE_CHECKING:
    from meshmirror.routing.table import Route, RouteTable, VirtualHost


@dataclass(frozen=True, slots=True)
class RouteMatch:
    virtual_host: VirtualHost
    route: Route


def match_request(table: RouteTable, req: RequestView) -> RouteMatch | None:
    """The route Envoy would pick: the virtual host for the Host, then the first matching route."""
    vh = table.select_virtual_host(req.authority)
    if vh is None:
        return None
    route = match_route(vh, req)
    return None if route is None else RouteMatch(vh, route)


def match_route(vh: VirtualHost, req: RequestView) -> Route | None:
    """The first route of the virtual host that matches the request."""
    for route in vh.routes:
        if route.matcher.matches(req):
            return route
    return None
