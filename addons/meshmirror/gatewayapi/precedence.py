"""Gateway API precedence: the sort keys that order generated routes as Istio orders them.

Istio `sortHTTPRoutes`: Exact before PathPrefix before RegularExpression, longer value first, then
a method, more headers, more query parameters; ties keep the order of oldest route
(creationTimestamp), then `ns/name`, then rule and match order. `match_rank` is the per-match key;
`route_age_key` orders the HTTPRoutes before conversion so a stable sort on the rank keeps those
ties. Pure functions, kept together so the whole ordering rule reads in one place.
"""

from __future__ import annotations

import datetime

from meshmirror.config.gateway_api import HTTPRouteMatch
from meshmirror.config.resources import LoadedResource


def route_age_key(res: LoadedResource) -> tuple[bool, float, str]:
    """Oldest first, then `ns/name`: a route without creationTimestamp counts as the newest."""
    created = _timestamp((res.obj.metadata.model_extra or {}).get("creationTimestamp"))
    return (created is None, created or 0.0, res.ref)


def _timestamp(value: object) -> float | None:
    if isinstance(value, datetime.datetime):
        dt = value
    elif isinstance(value, str) and value:
        try:
            dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()


def match_rank(m: HTTPRouteMatch | None) -> tuple[int, int, int, int, int]:
    """Sort key, smallest first (Istio `sortHTTPRoutes`); no matches = PathPrefix "/"."""
    kind, value = (
        ("PathPrefix", "/") if m is None or m.path is None else (m.path.type, m.path.value)
    )
    rank = {"Exact": 3, "PathPrefix": 2, "RegularExpression": 1}[kind]
    if m is None:
        return (-rank, -len(value), 1, 0, 0)
    return (
        -rank,
        -len(value),
        0 if m.method is not None else 1,
        -len(m.headers or ()),
        -len(m.query_params or ()),
    )
