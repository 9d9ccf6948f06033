"""Attachment: which (parent, hostname) pairs an HTTPRoute serves, as Gateway API defines them.

Each `parentRefs` entry naming a Gateway API `Gateway` (sectionName / port select listeners; HTTP
and HTTPS listeners only; `allowedRoutes` namespaces and kinds are honoured) attaches the route to
the hostnames it shares with the listeners (the route's `hostnames` intersected with each
listener's `hostname`; none -> the listener's hostname, or `*`). A parent that is a `Service`
attaches it to the mesh for that Service's host (GAMMA). A parent that cannot be used is reported
as a warning and skipped. Kept apart from rule translation: attachment decides *where* a route
applies, gatewayapi_rules decides *what* it does there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meshmirror.config.gateway_api import (
    GATEWAY_API_GROUP,
    Gateway,
    HTTPRoute,
    Listener,
    ParentReference,
)
from meshmirror.config.resources import LoadedResource
from meshmirror.diagnostics import Diagnostic, Path, Severity
from meshmirror.hosts import DOMAIN_SUFFIX, host_matches
from meshmirror.mesh.registry import Registry

_HTTP_PROTOCOLS = ("HTTP", "HTTPS")


def route_attachments(
    res: LoadedResource,
    route: HTTPRoute,
    gateways: Mapping[str, LoadedResource],
    registry: Registry,
    diags: list[Diagnostic],
) -> list[tuple[str, str]]:
    """(parent ns/name, hostname) pairs this route serves."""
    out: list[tuple[str, str]] = []
    for i, ref in enumerate(route.spec.parent_refs or ()):
        path: Path = ("spec", "parentRefs", i)
        group = ref.group if ref.group is not None else GATEWAY_API_GROUP
        kind = ref.kind or "Gateway"
        ns = ref.namespace or res.namespace
        parent = f"{ns}/{ref.name}"
        if group in ("", "core") and kind == "Service":
            host = f"{ref.name}.{ns}.svc.{DOMAIN_SUFFIX}"
            if registry.service(host) is None:
                diags.append(
                    res.diag(
                        Severity.WARNING,
                        path,
                        f"parent Service {parent} is not defined in the config; the route is "
                        "not attached to it",
                    )
                )
                continue
            out.append((parent, host))
            continue
        if group != GATEWAY_API_GROUP or kind != "Gateway":
            diags.append(
                res.diag(
                    Severity.WARNING,
                    path,
                    f"parentRef kind {group}/{kind} is not supported by meshmirror (use a "
                    "Gateway or a Service); the route is not attached to it",
                )
            )
            continue
        gw = gateways.get(parent)
        if gw is None:
            diags.append(
                res.diag(
                    Severity.WARNING,
                    path,
                    f"parent Gateway {parent} is not defined in the config; the route is not "
                    "attached to it",
                )
            )
            continue
        assert isinstance(gw.obj, Gateway)
        hosts = _hosts_on_gateway(res, route, ref, gw, path, diags)
        out.extend((parent, h) for h in hosts)
    return out


def _hosts_on_gateway(
    res: LoadedResource,
    route: HTTPRoute,
    ref: ParentReference,
    gw: LoadedResource,
    path: Path,
    diags: list[Diagnostic],
) -> list[str]:
    assert isinstance(gw.obj, Gateway)
    listeners = [
        ln
        for ln in gw.obj.spec.listeners or ()
        if (ref.section_name is None or ln.name == ref.section_name)
        and (ref.port is None or ln.port == ref.port)
    ]
    if not listeners:
        diags.append(
            res.diag(
                Severity.WARNING,
                path,
                f"no listener of Gateway {gw.ref} matches this parentRef (sectionName "
                f"{ref.section_name or '-'}, port {ref.port or '-'}); the route is not attached",
            )
        )
        return []
    admitting = [ln for ln in listeners if _admits(ln, gw, res, path, diags)]
    if not admitting:
        diags.append(
            res.diag(
                Severity.WARNING,
                path,
                f"no listener of Gateway {gw.ref} admits this HTTPRoute (protocol HTTP/HTTPS and "
                "allowedRoutes); the route is not attached",
            )
        )
        return []
    hosts: list[str] = []
    for ln in admitting:
        for h in _intersect(route.spec.hostnames or [], ln.hostname):
            if h not in hosts:
                hosts.append(h)
    if not hosts:
        diags.append(
            res.diag(
                Severity.WARNING,
                ("spec", "hostnames"),
                f"no hostname of this route matches a listener of Gateway {gw.ref} ("
                + ", ".join(ln.hostname or "*" for ln in admitting)
                + "); the route gets no traffic from it",
            )
        )
    return hosts


def _admits(
    ln: Listener, gw: LoadedResource, res: LoadedResource, path: Path, diags: list[Diagnostic]
) -> bool:
    if ln.protocol not in _HTTP_PROTOCOLS:
        return False
    allowed = ln.allowed_routes
    kinds = allowed.kinds if allowed is not None else None
    if kinds and not any(
        k.kind == "HTTPRoute" and (k.group is None or k.group == GATEWAY_API_GROUP) for k in kinds
    ):
        return False
    namespaces = allowed.namespaces if allowed is not None else None
    mode = (namespaces.from_ if namespaces is not None else None) or "Same"
    if mode == "Same":
        return res.namespace == gw.namespace
    if mode == "Selector":
        diags.append(
            res.diag(
                Severity.INFO,
                path,
                f"listener {ln.name} of Gateway {gw.ref} selects namespaces by label; meshmirror "
                "has no Namespace objects and admits the route",
            )
        )
    return True


def _intersect(route_hosts: Sequence[str], listener_host: str | None) -> list[str]:
    """Gateway API hostname intersection: the more specific of each compatible pair."""
    if not route_hosts:
        return [listener_host or "*"]
    if not listener_host:
        return list(route_hosts)
    out: list[str] = []
    for h in route_hosts:
        if host_matches(listener_host, h):
            out.append(h)
        elif host_matches(h, listener_host):
            out.append(listener_host)
    return out
