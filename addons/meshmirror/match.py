"""Request matching: a RequestView against a compiled RouteTable, first match wins (pure).

This module walks the table per request (`match_request`) and is the package's public face for
matching: the pieces live in their own modules and are re-exported here.

- request_view.py: `RequestView` (what matching sees of a request) and `strip_port`.
- matchers.py: the compiled condition types (`StringMatcher`, `HeaderMatcher`, `QueryMatcher`,
  `RouteMatcher`) with the code that evaluates, describes and dumps them.
- match_compile.py: `compile_route_match`, which routes.py calls once per match block to build
  them, and `compile_regex` (RE2).
- explain.py: `explain_request`, the per-condition trace behind `meshmirror explain`.

Semantics follow Envoy's route matching as Istio configures it (spec 1.3-1.4):

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

from meshmirror.explain import Explanation, RouteTrial, explain_request
from meshmirror.match_compile import (
    CATCH_ALL,
    compile_regex,
    compile_route_match,
    compile_string_match,
)
from meshmirror.matchers import (
    HeaderMatcher,
    PathKind,
    QueryMatcher,
    RouteMatcher,
    StringKind,
    StringMatcher,
)
from meshmirror.request_view import RequestView, strip_port

if TYPE_CHECKING:
    from meshmirror.table import Route, RouteTable, VirtualHost

__all__ = [
    "CATCH_ALL",
    "Explanation",
    "HeaderMatcher",
    "PathKind",
    "QueryMatcher",
    "RequestView",
    "RouteMatch",
    "RouteMatcher",
    "RouteTrial",
    "StringKind",
    "StringMatcher",
    "compile_regex",
    "compile_route_match",
    "compile_string_match",
    "explain_request",
    "match_request",
    "strip_port",
]


@dataclass(frozen=True, slots=True)
class RouteMatch:
    virtual_host: VirtualHost
    route: Route


def match_request(table: RouteTable, req: RequestView) -> RouteMatch | None:
    """The route Envoy would pick: the virtual host for the Host, then the first matching route."""
    vh = table.select_virtual_host(req.authority)
    if vh is None:
        return None
    for route in vh.routes:
        if route.matcher.matches(req):
            return RouteMatch(vh, route)
    return None
