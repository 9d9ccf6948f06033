"""Gateway API -> Istio: HTTPRoutes become VirtualServices, as istiod converts them.

Runs after validation, before compiling: the VirtualServices made here join the Istio ones and go
through the same RouteTable compiler, so routing, mirroring, `meshmirror routes` and `explain`
treat an HTTPRoute exactly like its Istio equivalent.

- Attachment: each `parentRefs` entry naming a Gateway API `Gateway` (sectionName / port select
  listeners; HTTP and HTTPS listeners only; `allowedRoutes` namespaces and kinds are honoured)
  attaches the route to the hostnames it shares with the listeners (the route's `hostnames`
  intersected with each listener's `hostname`; none -> the listener's hostname, or `*`). A parent
  that is a `Service` attaches it to the mesh for that Service's host (GAMMA).
- One VirtualService per (parent, hostname), holding every attached route's rules in Gateway API
  precedence order (Istio `sortHTTPRoutes`: Exact before PathPrefix before RegularExpression,
  longer value first, then a method, more headers, more query parameters; ties keep the order of
  oldest route (creationTimestamp), then `ns/name`, then rule and match order). A rule with
  several matches becomes one Istio route per match, as in Istio.
- PathPrefix is element-wise: the generated VirtualService carries Istio's route-semantics
  annotation, and the compiler then emits Envoy's path_separated_prefix.
- Filters (RequestMirror -> `mirrors[]`, header modifiers, URLRewrite, RequestRedirect) and
  backendRefs: how each becomes Istio's field is listed in rules.py.

Diagnostics about a generated VirtualService point at the HTTPRoute (file, document, YAML path).

This module does the grouping; beside it in `gatewayapi/`, one concern each:

- attach.py: parentRefs -> (parent, hostname) pairs (listeners, allowedRoutes, hostnames).
- rules.py: rule x match -> Istio HTTP route dict (matches, filters, mirrors, backends).
- backends.py: backendRef -> Istio Destination, resolved against the config.
- precedence.py: the Gateway API / Istio sort keys (match rank, route age).
- origin.py: `ConvertedResource`, whose diagnostics point back at the HTTPRoute.

Imports point one way: this module -> rules -> backends / precedence / origin; attach stands alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshmirror.config.gateway_api import (
    ROUTE_SEMANTICS_ANNOTATION,
    ROUTE_SEMANTICS_GATEWAY,
    Gateway,
    HTTPRoute,
)
from meshmirror.config.resources import LoadedResource
from meshmirror.config.virtualservice import VirtualService
from meshmirror.diagnostics import Diagnostic
from meshmirror.gatewayapi.attach import route_attachments
from meshmirror.gatewayapi.backends import ISTIO_GROUP, BackendResolver
from meshmirror.gatewayapi.origin import ConvertedResource
from meshmirror.gatewayapi.precedence import route_age_key
from meshmirror.gatewayapi.rules import RouteEntry, convert_rules
from meshmirror.mesh.registry import Registry, build_registry


@dataclass
class _Group:
    namespace: str
    name: str
    host: str
    gateways: list[str] | None
    entries: list[RouteEntry] = field(default_factory=list)
    routes: set[str] = field(default_factory=set)


def convert_gateway_api(
    resources: Sequence[LoadedResource], registry: Registry | None = None
) -> tuple[list[LoadedResource], list[Diagnostic]]:
    """VirtualServices for every attached HTTPRoute, plus warnings and infos; never raises.
    `registry` is the one built from the same resources, when the caller has it already."""
    routes = [r for r in resources if isinstance(r.obj, HTTPRoute)]
    if not routes:
        return [], []
    diags: list[Diagnostic] = []
    gateways = {r.ref: r for r in resources if isinstance(r.obj, Gateway)}
    if registry is None:
        registry = build_registry(resources)
    ctx = BackendResolver(registry, resources, diags)
    groups: dict[tuple[str, str], _Group] = {}
    for res in sorted(routes, key=route_age_key):
        assert isinstance(res.obj, HTTPRoute)
        entries = convert_rules(res, res.obj, ctx)
        for parent_ref, host in route_attachments(res, res.obj, gateways, ctx.registry, diags):
            key = (parent_ref, host)
            group = groups.get(key)
            if group is None:
                group = _new_group(parent_ref, host, gateways)
                groups[key] = group
            if res.ref in group.routes:
                continue  # attached through two listeners with the same hostname
            group.routes.add(res.ref)
            group.entries.extend(entries)
    out: list[LoadedResource] = []
    for group in groups.values():
        converted = _virtual_service(group)
        if converted is not None:
            out.append(converted)
    return out, diags


def _new_group(parent_ref: str, host: str, gateways: Mapping[str, LoadedResource]) -> _Group:
    ns, _, name = parent_ref.partition("/")
    if parent_ref in gateways:
        return _Group(ns, f"{name}~{host}", host, [parent_ref])
    # A Service parent (the mesh): the VirtualService is named after the Service.
    return _Group(ns, f"{name}~mesh", host, None)


def _virtual_service(group: _Group) -> ConvertedResource | None:
    if not group.entries:
        return None
    # Stable: ties keep route age, ns/name, rule and match order.
    entries = sorted(group.entries, key=lambda e: e.rank)
    spec: dict[str, Any] = {"hosts": [group.host], "http": [e.http for e in entries]}
    if group.gateways:
        spec["gateways"] = group.gateways
    vs = VirtualService.model_validate(
        {
            "apiVersion": f"{ISTIO_GROUP}/v1",
            "kind": "VirtualService",
            "metadata": {
                "name": group.name,
                "namespace": group.namespace,
                "annotations": {ROUTE_SEMANTICS_ANNOTATION: ROUTE_SEMANTICS_GATEWAY},
            },
            "spec": spec,
        }
    )
    first = entries[0].origin.res
    return ConvertedResource(
        obj=vs,
        source=first.source,
        origins=tuple(e.origin for e in entries),
        first=first,
        head_paths={
            ("spec", "hosts"): ("spec", "hostnames"),
            ("spec", "gateways"): ("spec", "parentRefs"),
        },
    )
