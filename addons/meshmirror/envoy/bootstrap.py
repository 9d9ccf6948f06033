"""A complete static Envoy bootstrap from a compiled route table: the admin endpoint, one
listener, the route configuration and every cluster it names.

`build_bootstrap` is the one entry (`meshmirror envoy`, `meshmirror run --engine envoy`): the
same table the proxy serves, the proxy's options as `settings` read them, and the notes on what
Envoy serves differently or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from meshmirror.config.resources import LoadedResource
from meshmirror.envoy.clusters import Upstream, envoy_clusters, table_clusters
from meshmirror.envoy.listeners import listener
from meshmirror.envoy.routes import route_configuration
from meshmirror.envoy.settings import ExportSettings, Note, resource_notes
from meshmirror.routing.table import RouteTable


@dataclass(frozen=True, slots=True)
class Export:
    bootstrap: dict[str, Any]
    notes: tuple[Note, ...]


def build_bootstrap(
    table: RouteTable,
    resources: Sequence[LoadedResource],
    settings: ExportSettings,
    *,
    listen: tuple[str, int],
    admin: tuple[str, int],
    upstream: Upstream | None,
) -> Export:
    notes = [*settings.notes, *resource_notes(resources), *_cluster_notes(table, upstream)]
    routes = route_configuration(
        table,
        default_retries=settings.default_retries,
        upstream=upstream is not None,
        shadow_suffix=settings.shadow_suffix,
    )
    bootstrap = {
        "admin": {"address": _address(*admin)},
        "static_resources": {
            "listeners": [listener(*listen, routes, edge=table.gateway is not None)],
            "clusters": envoy_clusters(table, upstream),
        },
    }
    return Export(bootstrap, tuple(notes))


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _cluster_notes(table: RouteTable, upstream: Upstream | None) -> list[Note]:
    notes: list[Note] = []
    for cluster, routed in table_clusters(table):
        if not cluster.passthrough:
            continue
        if routed and upstream is None:
            notes.append(
                Note(
                    "warning",
                    f"{cluster.name} has no endpoints in the config and there is no --upstream: "
                    "Envoy answers its requests 503 (meshmirror sends them to its reverse-proxy "
                    "upstream)",
                )
            )
        elif routed and any(
            m.cluster.name == cluster.name
            for vh in table.virtual_hosts
            for r in vh.routes
            for m in r.mirrors
        ):
            notes.append(
                Note(
                    "warning",
                    f"{cluster.name} has no endpoints in the config: Envoy sends its copies to "
                    "the reverse-proxy upstream, where meshmirror skips them (no_endpoints)",
                )
            )
    if upstream is None:
        notes.append(
            Note(
                "warning",
                "no --upstream: Envoy answers 404 to a request no route claims (meshmirror "
                "forwards it to its reverse-proxy upstream)",
            )
        )
    return notes
