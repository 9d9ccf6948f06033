"""Cross-resource warnings, like `istioctl analyze`, plus what they mean here.

Validation (the validate package) judges one resource at a time; this module looks across resources:
destinations and mirrors whose host, port or subset nothing in the config defines, and clusters
left without endpoints. Istio's message texts and codes are kept; meshmirror adds what happens to
the traffic (routed requests go to the reverse-proxy upstream; copies are skipped).
"""

from __future__ import annotations

from collections.abc import Sequence

from meshmirror.config.base import Destination
from meshmirror.config.gateway_api import Gateway as GatewayAPIGateway
from meshmirror.config.istio_gateway import Gateway
from meshmirror.config.resources import LoadedResource
from meshmirror.config.virtualservice import VirtualService
from meshmirror.diagnostics import Diagnostic, Path, Severity
from meshmirror.hosts import resolve_short_name
from meshmirror.mesh.registry import Registry, build_registry
from meshmirror.routing.gateways import MESH
from meshmirror.routing.table import RouteTable

IST_REFERENCED_RESOURCE_NOT_FOUND = "IST0101"
IST_PORT_SELECTOR_REQUIRED = "IST0112"


def analyze(
    resources: Sequence[LoadedResource], table: RouteTable | None = None
) -> list[Diagnostic]:
    """Warnings for every VirtualService in the config, or, given the compiled table, for those
    the proxy actually uses (others cannot affect traffic)."""
    registry = table.registry if table is not None and table.registry is not None else None
    if registry is None:
        registry = build_registry(resources)
    listener_port = table.listener_port if table is not None else 80
    used: set[str] | None = None
    if table is not None:
        used = {vh.virtual_service for vh in table.virtual_hosts}
    gateways = {r.ref for r in resources if isinstance(r.obj, (Gateway, GatewayAPIGateway))}
    out: list[Diagnostic] = []
    # Routes that mirror nothing: a config written to mirror that would copy nothing (a set
    # with no route at all, such as the shadow side's own Services, is another matter).
    if (
        table is not None
        and table.virtual_hosts
        and not any(route.mirrors for vh in table.virtual_hosts for route in vh.routes)
    ):
        out.append(
            Diagnostic(
                Severity.WARNING,
                "no route mirrors anything (no VirtualService here has mirror, mirrors or a "
                "non-zero mirrorPercentage): requests are proxied and none is copied",
            )
        )
    for r in resources:
        if not isinstance(r.obj, VirtualService):
            continue
        _check_gateways(r, r.obj, gateways, out)
        if used is not None and r.ref not in used:
            continue
        for i, rule in enumerate(r.obj.spec.http or ()):
            if rule is None:
                continue
            base: Path = ("spec", "http", i)
            for j, rd in enumerate(rule.route or ()):
                if rd is not None and rd.destination is not None:
                    _check(
                        r,
                        base + ("route", j, "destination"),
                        rd.destination,
                        False,
                        registry,
                        listener_port,
                        out,
                    )
            if rule.mirror is not None:
                _check(r, base + ("mirror",), rule.mirror, True, registry, listener_port, out)
            for k, mp in enumerate(rule.mirrors or ()):
                if mp is not None and mp.destination is not None:
                    _check(
                        r,
                        base + ("mirrors", k, "destination"),
                        mp.destination,
                        True,
                        registry,
                        listener_port,
                        out,
                    )
    return out


def _check_gateways(
    r: LoadedResource, vs: VirtualService, gateways: set[str], out: list[Diagnostic]
) -> None:
    for k, g in enumerate(vs.spec.gateways or ()):
        if g == MESH:
            continue
        ref = g if "/" in g else f"{r.namespace}/{g}"
        if ref not in gateways:
            out.append(
                r.diag(
                    Severity.WARNING,
                    ("spec", "gateways", k),
                    f"Referenced gateway not found: {_q(g)}",
                    code=IST_REFERENCED_RESOURCE_NOT_FOUND,
                )
            )


def _q(text: str) -> str:
    """Go's %q for the plain ASCII names that reach here."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check(
    r: LoadedResource,
    path: Path,
    dest: Destination,
    mirror: bool,
    registry: Registry,
    listener_port: int,
    out: list[Diagnostic],
) -> None:
    if not dest.host:
        return
    fqdn = resolve_short_name(dest.host, r.namespace)
    svc = registry.service(fqdn)
    if svc is None:
        if mirror:
            text = (
                f"Referenced mirror host not found: {_q(dest.host)}; copies to it are skipped "
                "(no endpoints in the config)"
            )
        else:
            text = (
                f"Referenced host not found: {_q(dest.host)}; routed requests go to the "
                "reverse-proxy upstream"
            )
        out.append(
            r.diag(Severity.WARNING, path + ("host",), text, code=IST_REFERENCED_RESOURCE_NOT_FOUND)
        )
        return
    number = dest.port.number if dest.port is not None else None
    if number is None and len(svc.ports) > 1:
        ports = "[" + " ".join(str(p.number) for p in svc.ports) + "]"
        out.append(
            r.diag(
                Severity.WARNING,
                path,
                f"This VirtualService routes to a service {_q(dest.host)} that exposes multiple "
                f"ports {ports}. Specifying a port in the destination is required to "
                f"disambiguate. (meshmirror uses the listener port {listener_port})",
                code=IST_PORT_SELECTOR_REQUIRED,
            )
        )
    elif number is not None and svc.ports and svc.port(number) is None:
        out.append(
            r.diag(
                Severity.WARNING,
                path + ("port", "number"),
                f"Referenced host+port not found: {_q(f'{dest.host}:{number}')}",
                code=IST_REFERENCED_RESOURCE_NOT_FOUND,
            )
        )
        return
    if dest.subset:
        if registry.subset(fqdn, dest.subset) is None:
            what = "mirror+subset" if mirror else "host+subset"
            out.append(
                r.diag(
                    Severity.WARNING,
                    path + ("subset",),
                    f"Referenced {what} in destinationrule not found: "
                    f"{_q(f'{dest.host}+{dest.subset}')}",
                    code=IST_REFERENCED_RESOURCE_NOT_FOUND,
                )
            )
            return
    port = registry.choose_port(fqdn, number, listener_port)
    cluster = registry.cluster(fqdn, port, dest.subset)
    if cluster.endpoints:
        return
    where = f"{svc.kind} {svc.ref}"
    if mirror:
        out.append(
            r.diag(
                Severity.WARNING,
                path,
                f"mirror cluster {cluster.name} has no endpoints in the config ({where} "
                "selects none): copies to it are skipped",
            )
        )
    else:
        out.append(
            r.diag(
                Severity.INFO,
                path,
                f"cluster {cluster.name} has no endpoints in the config ({where} selects none): "
                "routed requests go to the reverse-proxy upstream",
            )
        )
