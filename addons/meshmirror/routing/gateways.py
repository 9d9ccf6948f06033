"""Which proxy meshmirror plays (a Gateway or the mesh) and which VirtualService hosts and rules
apply to it (Istio's gateway binding)."""

from __future__ import annotations

from collections.abc import Sequence

from meshmirror.config.gateway_api import Gateway as GatewayAPIGateway
from meshmirror.config.istio_gateway import Gateway
from meshmirror.config.resources import DEFAULT_NAMESPACE, LoadedResource
from meshmirror.diagnostics import Diagnostic, Severity
from meshmirror.hosts import host_matches

MESH = "mesh"


def choose_gateway(
    resources: Sequence[LoadedResource], gateway: str | None
) -> tuple[LoadedResource | None, Diagnostic | None]:
    gateways = [r for r in resources if isinstance(r.obj, (Gateway, GatewayAPIGateway))]
    refs = ", ".join(g.ref for g in gateways) or "none"
    if gateway:
        if gateway == MESH:
            return None, None
        ref = gateway if "/" in gateway else f"{DEFAULT_NAMESPACE}/{gateway}"
        for g in gateways:
            if g.ref == ref:
                return g, None
        return None, Diagnostic(
            Severity.ERROR,
            f"gateway {ref!r} is not defined in the config (Gateways defined: {refs}); "
            "name one of them as ns/name, or 'mesh'",
        )
    if not gateways:
        return None, None
    if len(gateways) == 1:
        return gateways[0], None
    return None, Diagnostic(
        Severity.ERROR,
        f"the config defines {len(gateways)} Gateways ({refs}): choose the one this proxy acts "
        "as (mirror_gateway / --gateway, as ns/name, or 'mesh')",
    )


def resolve_gateway_name(name: str, namespace: str) -> str:
    if name == MESH or "/" in name:
        return name
    return f"{namespace}/{name}"


def applies(gateways: Sequence[str] | None, namespace: str, current: str) -> bool:
    """A VirtualService without gateways applies to the mesh only; otherwise it applies to the
    listed gateways (`mesh` included explicitly)."""
    if not gateways:
        return current == MESH
    return any(resolve_gateway_name(g, namespace) == current for g in gateways)


def bind_to_gateway(
    r: LoadedResource,
    hosts: list[tuple[int, str]],
    gw: LoadedResource,
    diags: list[Diagnostic],
) -> list[tuple[int, str]]:
    """Keep the VS hosts the Gateway's servers admit (Istio: a VS host inside a server host is
    kept; a server host inside a VS host, e.g. VS `*`, narrows to the server host)."""
    assert isinstance(gw.obj, Gateway)
    server_hosts: list[str] = []
    for server in gw.obj.spec.servers or ():
        if server is None:
            continue
        for sh in server.hosts or ():
            ns, slash, name = sh.rpartition("/")
            if slash:
                if ns == ".":
                    ns = gw.namespace
                if ns not in ("*", r.namespace):
                    continue
            server_hosts.append(name)
    out: list[tuple[int, str]] = []
    seen: set[str] = set()
    for k, host in hosts:
        bound = False
        for sh in server_hosts:
            effective: str | None = None
            if host_matches(sh, host):
                effective = host
            elif host_matches(host, sh):
                effective = sh
            if effective is not None:
                bound = True
                if effective not in seen:
                    seen.add(effective)
                    out.append((k, effective))
        if not bound:
            diags.append(
                r.diag(
                    Severity.WARNING,
                    ("spec", "hosts", k),
                    f"host {host!r} matches no host of Gateway {gw.ref} "
                    f"({', '.join(server_hosts) or 'no servers'}); it gets no routes",
                )
            )
    return out
