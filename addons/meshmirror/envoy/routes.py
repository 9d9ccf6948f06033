"""The route configuration Envoy serves: the compiled table's own (`RouteTable.to_envoy`), plus
what makes Envoy answer as the meshmirror proxy does around it.

- A Host with a port selects the virtual host of its name (`ignore_port_in_host_matching`), as
  meshmirror selects it; the Host forwarded keeps its port.
- The reverse-proxy upstream: a request no route claims goes there, unchanged and not mirrored
  (a last route of each virtual host, and a last `*` virtual host when none claims `*`).
- `mirror_host_suffix` empty: the copies keep the Host (`disable_shadow_host_suffix_append`).
"""

from __future__ import annotations

from typing import Any

from meshmirror.envoy.clusters import UPSTREAM_CLUSTER
from meshmirror.routing.table import RouteTable

UPSTREAM_ROUTE = "meshmirror.upstream"
UPSTREAM_VIRTUAL_HOST = "meshmirror.upstream"


def route_configuration(
    table: RouteTable,
    *,
    default_retries: bool,
    upstream: bool,
    shadow_suffix: bool = True,
) -> dict[str, Any]:
    """Envoy's `RouteConfiguration` for `table`. `upstream`: whether a cluster for the
    reverse-proxy upstream exists (else a request no route claims gets Envoy's 404);
    `shadow_suffix` False: copies keep the Host."""
    config = table.to_envoy(default_retries=default_retries)
    config["ignore_port_in_host_matching"] = True
    claims_all = False
    for vh, dumped in zip(table.virtual_hosts, config["virtual_hosts"], strict=True):
        claims_all = claims_all or "*" in dumped["domains"]
        served = [r for r in vh.routes if r.action != "delegate"]
        if upstream and not (served and served[-1].matcher.is_catch_all):
            dumped["routes"].append(_upstream_route())
        if not shadow_suffix:
            for route in dumped["routes"]:
                for policy in route.get("route", {}).get("request_mirror_policies", ()):
                    policy["disable_shadow_host_suffix_append"] = True
    if upstream and not claims_all:
        config["virtual_hosts"].append(
            {"name": UPSTREAM_VIRTUAL_HOST, "domains": ["*"], "routes": [_upstream_route()]}
        )
    return config


def _upstream_route() -> dict[str, Any]:
    return {
        "name": UPSTREAM_ROUTE,
        "match": {"prefix": "/"},
        "route": {"cluster": UPSTREAM_CLUSTER, "timeout": "0s"},
    }
