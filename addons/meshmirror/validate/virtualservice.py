"""VirtualService: hosts, gateways, the route lists (Istio `ValidateVirtualService`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic.alias_generators import to_snake

from meshmirror.config.virtualservice import HTTPRoute, TCPRoute, TLSRoute, VirtualService
from meshmirror.diagnostics import Path
from meshmirror.golang import go_list, go_quote
from meshmirror.hosts import is_ip
from meshmirror.validate.checker import Checker
from meshmirror.validate.destinations import validate_http_route_destinations
from meshmirror.validate.headers import is_jwt_claim
from meshmirror.validate.httproute import validate_http_route
from meshmirror.validate.names import (
    host_subset_of,
    hosts_match,
    validate_ip_subnet,
    validate_wildcard_domain,
    validate_wildcard_domain_for_gateway_vs,
)
from meshmirror.validate.unreachable import analyze_unreachable_http_rules

#: HTTPRoute fields (CRD spelling) that are parsed and validated but that meshmirror does not act
#: on; each present one gets a warning. Empty: every HTTPRoute field is served (policy/,
#: mitm/primary.py). A field added to the API and not yet served goes here.
NOT_YET_SERVED: tuple[str, ...] = ()


MESH_GATEWAY = "mesh"


def validate_virtual_service(c: Checker, vs: VirtualService) -> None:
    spec = vs.spec
    sp: Path = ("spec",)
    hosts = spec.hosts or []
    gateways = spec.gateways or []
    http = spec.http or []
    is_delegate = not hosts
    if is_delegate:
        if gateways:
            c.err(sp + ("gateways",), "delegate virtual service must have no gateways specified")
        if spec.tls:
            c.err(sp + ("tls",), "delegate virtual service must have no tls route specified")
        if spec.tcp:
            c.err(sp + ("tcp",), "delegate virtual service must have no tcp route specified")

    applies_to_gateway = False
    applies_to_mesh = True
    if gateways:
        c.gateway_names(sp + ("gateways",), gateways)
        applies_to_gateway = MESH_GATEWAY not in gateways
        applies_to_mesh = not applies_to_gateway

    if not applies_to_gateway:
        for i, rule in enumerate(http):
            for j, match in enumerate((rule.match or []) if rule else []):
                if match is None:
                    continue
                for field, hdrs in (
                    ("headers", match.headers),
                    ("withoutHeaders", match.without_headers),
                ):
                    for key in hdrs or {}:
                        if is_jwt_claim(key):
                            c.err(
                                sp + ("http", i, "match", j, field, key),
                                f"JWT claim based routing (key: {key}) is only supported for "
                                f"gateway, found no gateways: {go_list(gateways)}",
                            )

    sni = any(
        m.sni_hosts for t in spec.tls or [] if t is not None for m in t.match or [] if m is not None
    )
    all_hosts_valid = True
    for i, host in enumerate(hosts):
        if applies_to_gateway:
            error = validate_wildcard_domain_for_gateway_vs(sni, host)
        else:
            error = validate_wildcard_domain(host)
        if error:
            if not is_ip(host):
                c.err(sp + ("hosts", i), error, host)
                all_hosts_valid = False
        elif applies_to_mesh and host == "*":
            c.err(
                sp + ("hosts", i),
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                host,
            )
            all_hosts_valid = False
    if all_hosts_valid:
        for i, a in enumerate(hosts):
            for b in hosts[i + 1 :]:
                if hosts_match(a, b):
                    c.err(sp + ("hosts", i), f"duplicate hosts in virtual service: {a} & {b}")

    if not http and not spec.tcp and not spec.tls:
        c.err(sp, "http, tcp or tls must be provided in virtual service")
    for i, rule in enumerate(http):
        p = sp + ("http", i)
        if rule is None:
            c.err(p, "http route may not be null")
            continue
        validate_http_route(c, p, rule, delegate=is_delegate)
        _warn_not_served(c, p, rule)
    # A null tls or tcp route passes Istio's validation without a word (validateTLSRoute and
    # validateTCPRoute return early on nil); it routes nothing.
    for i, tls in enumerate(spec.tls or []):
        if tls is not None:
            _validate_tls_route(c, sp + ("tls", i), tls, hosts, gateways)
    for i, tcp in enumerate(spec.tcp or []):
        if tcp is not None:
            _validate_tcp_route(c, sp + ("tcp", i), tcp)
    for field in ("tcp", "tls"):
        if getattr(spec, field):
            c.warn(
                sp + (field,), f"{field} routes are parsed but not served by meshmirror (HTTP only)"
            )
    c.export_to(sp + ("exportTo",), spec.export_to)
    analyze_unreachable_http_rules(c, sp + ("http",), http)


def _warn_not_served(c: Checker, path: Path, rule: HTTPRoute) -> None:
    for field in NOT_YET_SERVED:
        if getattr(rule, to_snake(field), None) is not None:
            c.warn(path + (field,), f"{field} is parsed but not yet served by meshmirror")


def _validate_tls_route(
    c: Checker, p: Path, tls: TLSRoute, hosts: Sequence[str], gateways: Sequence[str]
) -> None:
    if not tls.match:
        c.err(p, "TLS route must have at least one match condition")
    for j, m in enumerate(tls.match or []):
        mp = p + ("match", j)
        if m is None:
            c.err(mp, "TLS match may not be null")
            continue
        if not m.sni_hosts:
            c.err(mp, "TLS match must have at least one SNI host")
        for k, sni in enumerate(m.sni_hosts or []):
            sp = mp + ("sniHosts", k)
            gateway_bound = bool(gateways) and MESH_GATEWAY not in gateways
            error = (
                validate_wildcard_domain_for_gateway_vs(True, sni)
                if gateway_bound
                else validate_wildcard_domain(sni)
            )
            if error:
                if is_ip(sni):
                    c.warn(
                        sp,
                        f"using an IP address ({go_quote(sni)}) goes against SNI spec and most "
                        "clients do not support this",
                        sni,
                    )
                else:
                    c.err(sp, error, sni)
            elif not any(host_subset_of(sni, h) for h in hosts):
                c.err(
                    sp,
                    f"SNI host {go_quote(sni)} is not a compatible subset of any of the virtual "
                    f"service hosts: [{', '.join(hosts)}]",
                    sni,
                )
        _validate_l4_match(c, mp, m.destination_subnets, m.port, m.source_labels, m.gateways)
    if not tls.route:
        c.err(p, "TLS route is required")
    validate_http_route_destinations(c, p + ("route",), tls.route or [])


def _validate_tcp_route(c: Checker, p: Path, tcp: TCPRoute) -> None:
    for j, m in enumerate(tcp.match or []):
        if m is None:
            c.err(p + ("match", j), "tcp match may not be nil")
            continue
        _validate_l4_match(
            c, p + ("match", j), m.destination_subnets, m.port, m.source_labels, m.gateways
        )
    if not tcp.route:
        c.err(p, "TCP route is required")
    validate_http_route_destinations(c, p + ("route",), tcp.route or [])


def _validate_l4_match(
    c: Checker,
    p: Path,
    subnets: Sequence[str] | None,
    port: int | None,
    source_labels: Mapping[str, str] | None,
    gateways: Sequence[str] | None,
) -> None:
    for i, subnet in enumerate(subnets or []):
        c.opt(p + ("destinationSubnets", i), validate_ip_subnet(subnet), subnet)
    if port:
        c.port(p + ("port",), port)
    c.labels(p + ("sourceLabels",), source_labels)
    c.gateway_names(p + ("gateways",), gateways)
