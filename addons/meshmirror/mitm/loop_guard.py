"""The config-time loop guard: mirror endpoints equal to the proxy's own listen address.

A copy sent to the proxy itself would come back as a new request and, without the marker header
that the copy carries, be mirrored again. `find_self_mirrors` finds such endpoints in a compiled
table; `self_mirror_diagnostics` turns them into located errors, which stop a load like any
config error. Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meshmirror.diagnostics import Diagnostic, Severity
from meshmirror.mesh.clusters import Endpoint
from meshmirror.pipeline import ConfigSet
from meshmirror.routing.table import MirrorPolicy, Route, RouteTable

_ANY_HOSTS = frozenset({"", "0.0.0.0", "::", "*"})


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def same_address(endpoint_host: str, listen_host: str) -> bool:
    """Would a connection to `endpoint_host` reach a socket listening on `listen_host`?
    Loopback names are one machine; a wildcard listener accepts any local address we can tell."""
    e = endpoint_host.strip("[]").lower()
    h = listen_host.strip("[]").lower()
    if h in _ANY_HOSTS:
        return _is_loopback(e) or e in _ANY_HOSTS
    if e == h:
        return True
    return _is_loopback(e) and _is_loopback(h)


@dataclass(frozen=True, slots=True)
class SelfMirror:
    route: Route
    policy: MirrorPolicy
    endpoint: Endpoint
    listen: tuple[str, int]


def find_self_mirrors(table: RouteTable, listen: Iterable[tuple[str, int]]) -> list[SelfMirror]:
    """Every (route, mirror policy, endpoint) whose endpoint is one of our listen addresses."""
    addrs = [(h, p) for h, p in listen if p]
    found: list[SelfMirror] = []
    if not addrs:
        return found
    for vh in table.virtual_hosts:
        for route in vh.routes:
            for policy in route.mirrors:
                for ep in policy.cluster.endpoints:
                    for host, port in addrs:
                        if ep.port == port and same_address(ep.address, host):
                            found.append(SelfMirror(route, policy, ep, (host, port)))
                            break
    return found


def self_mirror_diagnostics(cs: ConfigSet, found: Sequence[SelfMirror]) -> list[Diagnostic]:
    """Located errors (file, line, VirtualService, YAML path) for `find_self_mirrors` hits."""
    out: list[Diagnostic] = []
    seen: set[tuple[str, str, str, int]] = set()
    for hit in found:
        route, policy, ep = hit.route, hit.policy, hit.endpoint
        key = (route.virtual_service, str(policy.source_path), ep.address, ep.port)
        if key in seen:
            continue
        seen.add(key)
        res = next(
            (
                r
                for r in cs.resources
                if r.kind == "VirtualService" and r.ref == route.virtual_service
            ),
            None,
        )
        ns, _, name = route.virtual_service.partition("/")
        out.append(
            Diagnostic(
                Severity.ERROR,
                f"mirror endpoint {ep.address}:{ep.port} of {policy.cluster.name} is this "
                f"proxy's own listen address {hit.listen[0] or '*'}:{hit.listen[1]}; every copy "
                "would come back to the proxy",
                source=res.source if res is not None else None,
                kind="VirtualService",
                namespace=ns,
                name=name,
                path=policy.source_path,
                line=res.line_of(policy.source_path) if res is not None else None,
            )
        )
    return out
