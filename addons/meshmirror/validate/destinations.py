"""Route destinations, mirrors and their percentages (Istio `validateDestination`, ...)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from meshmirror.config.base import Destination, Percent
from meshmirror.config.virtualservice import (
    HTTPMirrorPolicy,
    HTTPRouteDestination,
    RouteDestination,
)
from meshmirror.diagnostics import Path
from meshmirror.golang import go_float
from meshmirror.validate.checker import Checker
from meshmirror.validate.names import (
    destination_host_hint,
    is_dns1123_label,
    validate_wildcard_domain,
)


def check_percent(c: Checker, path: Path, pct: Percent, what: str) -> None:
    """The mirror percentage rule: 0..100, no lower bound like fault injection's 0.0001."""
    value = pct.value
    vp = path + ("value",)
    # Istio's messages state the value ("it has ..."): no `(got ...)` repeats it.
    if math.isnan(value):
        c.err(vp, f"{what} must be a number (it has NaN)")
    elif value > 100:
        c.err(vp, f"{what} must have a max value of 100 (it has {go_float(value)})")
    elif value < 0:
        c.err(vp, f"{what} must have a min value of 0 (it has {go_float(value)})")


def validate_destination(c: Checker, path: Path, d: Destination) -> None:
    """Istio `validateDestination`."""
    if d.host == "*":
        c.err(path + ("host",), "invalid destination host *", d.host)
    else:
        error = validate_wildcard_domain(d.host)
        c.opt(path + ("host",), error and error + destination_host_hint(d.host), d.host)
    if d.subset:
        c.opt(path + ("subset",), subset_name_error(d.subset), d.subset)
    if d.port is not None:
        number = d.port.number if d.port.number is not None else 0
        c.port(path + ("port", "number"), number)


def subset_name_error(name: str) -> str | None:
    if not name:
        return "subset name cannot be empty"
    if not is_dns1123_label(name):
        return f"subset name is invalid: {name}"
    return None


def validate_mirror_policy(c: Checker, path: Path, m: HTTPMirrorPolicy | None) -> None:
    """Istio `validateHTTPMirrors`, one entry."""
    if m is None:
        c.err(path, "mirror cannot be null")
        return
    if m.destination is None:
        c.err(path, "destination is required for mirrors")
        return
    validate_destination(c, path + ("destination",), m.destination)
    if m.percentage is not None:
        check_percent(c, path + ("percentage",), m.percentage, "mirror percentage")


def validate_http_route_destinations(
    c: Checker, path: Path, dests: Sequence[HTTPRouteDestination | RouteDestination | None]
) -> None:
    """Istio `validateHTTPRouteDestinations` / `validateRouteDestinations`."""
    total = 0
    for i, d in enumerate(dests):
        p = path + (i,)
        if d is None:
            c.err(p, "weight may not be nil")
            continue
        if d.destination is None:
            c.err(p, "destination is required")
        else:
            validate_destination(c, p + ("destination",), d.destination)
        if isinstance(d, HTTPRouteDestination):
            c.header_operations(p + ("headers",), d.headers)
        weight = d.weight or 0
        if weight < 0:
            c.err(p + ("weight",), f"weight {weight} < 0", weight)
        total += weight
    if len(dests) > 1 and total == 0:
        c.err(path, "total destination weight = 0")
