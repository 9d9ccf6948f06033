"""Compile Istio resources into an immutable RouteTable shaped like Envoy's route configuration.

This is Istio's translation (`BuildHTTPRoutesForVirtualService`, `TranslateRoute`,
`TranslateRouteMatch`, `MirrorPercent`) done once at configure time for the one proxy meshmirror
plays: a Gateway or the mesh (a sidecar). Everything is resolved here (short names, ports,
clusters, mirror fractions) so that per-request matching only reads frozen data.
The compiled types live in table.py, mirror percentages in mirror_percent.py, gateway choice
and binding in gateways.py and delegate merging in delegates.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshmirror.config.base import Destination
from meshmirror.config.gateway_api import ROUTE_SEMANTICS_ANNOTATION, ROUTE_SEMANTICS_GATEWAY
from meshmirror.config.istio_gateway import Gateway
from meshmirror.config.resources import LoadedResource
from meshmirror.config.virtualservice import (
    HTTPMatchRequest,
    HTTPRoute,
    HTTPRouteDestination,
    VirtualService,
)
from meshmirror.diagnostics import Diagnostic, Path, Severity
from meshmirror.golang import parse_duration_ns
from meshmirror.hosts import resolve_short_name
from meshmirror.mesh.clusters import Cluster
from meshmirror.mesh.registry import Registry, build_registry
from meshmirror.policy.cors import compile_cors
from meshmirror.policy.fault import compile_fault
from meshmirror.policy.local_reply import compile_direct_response, compile_redirect
from meshmirror.policy.rewrites import compile_header_ops, compile_path_rewrite
from meshmirror.policy.upstream import compile_mesh_default, compile_upstream
from meshmirror.routing.compile_match import compile_route_match
from meshmirror.routing.delegates import expand_delegates
from meshmirror.routing.gateways import (
    MESH,
    applies,
    bind_to_gateway,
    choose_gateway,
    resolve_gateway_name,
)
from meshmirror.routing.mirror_percent import mirror_fraction, mirror_policy_fraction
from meshmirror.routing.table import (
    Action,
    MirrorPolicy,
    Route,
    RouteTable,
    VirtualHost,
    WeightedCluster,
)


def compile_route_table(
    resources: Sequence[LoadedResource],
    *,
    gateway: str | None = None,
    listener_port: int = 80,
    registry: Registry | None = None,
) -> tuple[RouteTable | None, list[Diagnostic]]:
    """Build the table for the proxy acting as `gateway` (`ns/name`, `name` in the default
    namespace, or `mesh`); by default the only Gateway in the config, or the mesh when there is
    none. Errors (no table) only for an ambiguous or unknown gateway; everything else is a
    warning or info and compiles to something safe. `registry` is the one built from the same
    resources, when the caller has it already."""
    diags: list[Diagnostic] = []
    chosen, error = choose_gateway(resources, gateway)
    if error is not None:
        return None, [error]
    if registry is None:
        registry = build_registry(resources)
    ctx = _Context(
        registry=registry,
        gateway=chosen.ref if chosen is not None else None,
        gateway_obj=chosen,
        listener_port=listener_port,
        diags=diags,
        resources=resources,
    )
    vhosts: list[VirtualHost] = []
    claimed: dict[str, str] = {}  # lower-case domain -> VS ref that owns it
    for r in resources:
        if not isinstance(r.obj, VirtualService):
            continue
        vs = r.obj
        hosts = [h for h in vs.spec.hosts or () if h]
        if not hosts or not vs.spec.http:
            continue  # a delegate (no hosts) or a TCP/TLS-only VirtualService
        if not applies(vs.spec.gateways, r.namespace, ctx.current):
            diags.append(
                r.diag(
                    Severity.INFO,
                    ("spec", "gateways"),
                    f"VirtualService does not apply to {ctx.current_text}; its routes are not "
                    "used (gateways: " + ", ".join(vs.spec.gateways or [MESH]) + ")",
                )
            )
            continue
        fqdns = [(k, resolve_short_name(h, r.namespace)) for k, h in enumerate(hosts)]
        if chosen is not None and isinstance(chosen.obj, Gateway):
            # Routes converted for a Gateway API Gateway were bound to its listeners already.
            fqdns = bind_to_gateway(r, fqdns, chosen, diags)
        if not fqdns:
            continue
        routes = _compile_routes(r, vs, ctx)
        for k, host in fqdns:
            domains = _domains(host, r.namespace)
            owner = claimed.get(domains[0].lower())
            if owner is not None:
                diags.append(
                    r.diag(
                        Severity.WARNING,
                        ("spec", "hosts", k),
                        f"host {host!r} is already served by VirtualService {owner} (the first "
                        "in config order wins); this VirtualService's routes for it are ignored",
                    )
                )
                continue
            # Alternate short domains another host already claimed are dropped silently: Envoy
            # rejects a route configuration with duplicate domains.
            kept = tuple(d for d in domains if d.lower() not in claimed)
            for d in kept:
                claimed[d.lower()] = r.ref
            vhosts.append(VirtualHost(f"{host}:{listener_port}", kept, routes, r.ref))
    table = RouteTable(
        gateway=ctx.gateway,
        listener_port=listener_port,
        virtual_hosts=tuple(vhosts),
        registry=registry,
    )
    return table, diags


@dataclass
class _Context:
    registry: Registry
    gateway: str | None
    gateway_obj: LoadedResource | None
    listener_port: int
    diags: list[Diagnostic]
    resources: Sequence[LoadedResource] = ()

    @property
    def current(self) -> str:
        return self.gateway or MESH

    @property
    def current_text(self) -> str:
        return f"gateway {self.gateway}" if self.gateway else "the mesh"


def _domains(host: str, namespace: str) -> tuple[str, ...]:
    """The FQDN plus, for `name.ns.svc.cluster.local`, Istio's alternates for a client in the
    VirtualService's namespace (`name`, `name.ns.svc`, `name.ns`) or in another (`name.ns.svc`,
    `name.ns`) (`generateAltVirtualHostsForKubernetesService`)."""
    parts = host.split(".")
    if len(parts) >= 4 and parts[2] == "svc" and parts[0] and parts[1] and "*" not in host:
        name, ns = parts[0], parts[1]
        if ns == namespace:
            return (host, name, f"{name}.{ns}.svc", f"{name}.{ns}")
        return (host, f"{name}.{ns}.svc", f"{name}.{ns}")
    return (host,)


def _compile_routes(r: LoadedResource, vs: VirtualService, ctx: _Context) -> tuple[Route, ...]:
    out: list[Route] = []
    for i, rule, source in expand_delegates(r, vs, ctx.resources, ctx.diags):
        matches: list[HTTPMatchRequest | None] = list(rule.match or ()) or [None]
        action, clusters, weighted, mirrors = _rule_action(r, i, rule, ctx)
        policies = _rule_policies(r, i, rule, action, ctx)
        delegate = None
        if rule.delegate is not None:
            delegate = f"{rule.delegate.namespace or r.namespace}/{rule.delegate.name or ''}"
        catch_all = not rule.match
        annotations = vs.metadata.annotations or {}
        gateway_semantics = annotations.get(ROUTE_SEMANTICS_ANNOTATION) == ROUTE_SEMANTICS_GATEWAY
        for j, m in enumerate(matches):
            if m is not None and not _match_applies(r, i, j, m, ctx):
                continue
            try:
                matcher = compile_route_match(m, gateway_semantics=gateway_semantics)
            except Exception as e:  # validation rejects bad regexes first; never crash here
                ctx.diags.append(
                    r.diag(
                        Severity.ERROR,
                        ("spec", "http", i, "match", j),
                        f"cannot compile match: {e}",
                    )
                )
                continue
            name = rule.name or ""
            if m is not None and m.name:
                name = f"{name}.{m.name}"
            try:
                rewrite = compile_path_rewrite(rule.rewrite, matcher.path_kind, matcher.path_value)
            except Exception as e:  # validation rejects bad rewrite regexes first
                ctx.diags.append(
                    r.diag(
                        Severity.ERROR,
                        ("spec", "http", i, "rewrite", "uriRegexRewrite"),
                        f"cannot compile rewrite: {e}",
                    )
                )
                continue
            if action == "redirect" and rule.redirect is not None:
                # Per match block: a prefixRewrite swaps this block's matched prefix.
                policies["redirect_policy"] = compile_redirect(
                    rule.redirect, ctx.listener_port, matcher.path_kind, matcher.path_value
                )
            out.append(
                Route(
                    name=name,
                    virtual_service=source,
                    rule_index=i,
                    match_index=j,
                    matcher=matcher,
                    action=action,
                    clusters=clusters,
                    mirrors=mirrors,
                    weighted=weighted,
                    timeout=_envoy_timeout(rule.timeout),
                    match_count=len(matches),
                    redirect=rule.redirect if action == "redirect" else None,
                    direct_response=rule.direct_response if action == "direct_response" else None,
                    delegate=delegate if action == "delegate" else None,
                    rewrite=rewrite,
                    **policies,
                )
            )
            # Routes are matched in order: nothing after a catch-all can ever match.
            if matcher.is_catch_all:
                catch_all = True
                break
        if catch_all:
            break
    return tuple(out)


def _match_applies(r: LoadedResource, i: int, j: int, m: HTTPMatchRequest, ctx: _Context) -> bool:
    """Config-time selectors (Istio `sourceMatchHTTP` and the listener-port check)."""
    path: Path = ("spec", "http", i, "match", j)
    if m.port and m.port != ctx.listener_port:
        return False
    if m.gateways:
        return any(resolve_gateway_name(g, r.namespace) == ctx.current for g in m.gateways)
    proxy_labels: Mapping[str, str] = {}
    proxy_namespace = r.namespace  # the mesh: assume a client in the VirtualService's namespace
    if ctx.gateway_obj is not None and isinstance(ctx.gateway_obj.obj, Gateway):
        proxy_labels = ctx.gateway_obj.obj.spec.selector or {}
        proxy_namespace = ctx.gateway_obj.namespace
    if m.source_labels and not (m.source_labels.items() <= proxy_labels.items()):
        ctx.diags.append(
            r.diag(
                Severity.INFO,
                path + ("sourceLabels",),
                f"match block skipped: sourceLabels do not select {ctx.current_text}",
            )
        )
        return False
    if m.source_namespace and m.source_namespace != proxy_namespace:
        ctx.diags.append(
            r.diag(
                Severity.INFO,
                path + ("sourceNamespace",),
                f"match block skipped: sourceNamespace is not {proxy_namespace!r}",
            )
        )
        return False
    return True


def _rule_action(
    r: LoadedResource, i: int, rule: HTTPRoute, ctx: _Context
) -> tuple[Action, tuple[WeightedCluster, ...], bool, tuple[MirrorPolicy, ...]]:
    if rule.redirect is not None:
        return "redirect", (), False, ()
    if rule.direct_response is not None:
        return "direct_response", (), False, ()
    if rule.delegate is not None:
        return "delegate", (), False, ()
    dests = [d for d in rule.route or () if d is not None and d.destination is not None]
    clusters: list[WeightedCluster] = []
    weighted = len(dests) > 1
    if len(dests) == 1:
        assert dests[0].destination is not None
        clusters.append(_weighted(dests[0], _cluster(dests[0].destination, r, ctx), 100))
    else:
        for d in dests:
            # Istio skips weight-0 destinations and passes the others through unnormalised.
            if not d.weight or d.destination is None:
                continue
            clusters.append(_weighted(d, _cluster(d.destination, r, ctx), d.weight))
    mirrors: list[MirrorPolicy] = []
    if rule.mirror is not None and rule.mirror.host:
        frac = mirror_fraction(rule)
        if frac is not None:
            mirrors.append(
                MirrorPolicy(
                    _cluster(rule.mirror, r, ctx), frac[0], frac[1], ("spec", "http", i, "mirror")
                )
            )
    for k, mp in enumerate(rule.mirrors or ()):
        if mp is None or mp.destination is None or not mp.destination.host:
            continue
        frac = mirror_policy_fraction(mp.percentage)
        if frac is not None:
            mirrors.append(
                MirrorPolicy(
                    _cluster(mp.destination, r, ctx),
                    frac[0],
                    frac[1],
                    ("spec", "http", i, "mirrors", k),
                )
            )
    return "route", tuple(clusters), weighted, tuple(mirrors)


def _cluster(dest: Destination, r: LoadedResource, ctx: _Context) -> Cluster:
    host = resolve_short_name(dest.host, r.namespace)
    number = dest.port.number if dest.port is not None else None
    port = ctx.registry.choose_port(host, number, ctx.listener_port)
    return ctx.registry.cluster(host, port, dest.subset)


def _envoy_timeout(text: str | None) -> str:
    """Istio sets `timeout: 0s` (no timeout) when unset; a Go duration becomes protobuf JSON."""
    if not text:
        return "0s"
    try:
        ns = parse_duration_ns(text)
    except ValueError:
        return "0s"
    seconds, frac = divmod(ns, 1_000_000_000)
    if frac == 0:
        return f"{seconds}s"
    if frac % 1_000_000 == 0:
        return f"{seconds}.{frac // 1_000_000:03d}s"
    if frac % 1_000 == 0:
        return f"{seconds}.{frac // 1_000:06d}s"
    return f"{seconds}.{frac:09d}s"


def _weighted(d: HTTPRouteDestination, cluster: Cluster, weight: int) -> WeightedCluster:
    """A destination with its own `headers` (Istio `processWeightedDestination`)."""
    if d.headers is None:
        return WeightedCluster(cluster, weight)
    req, authority = compile_header_ops(d.headers.request)
    resp, _ = compile_header_ops(d.headers.response)
    return WeightedCluster(cluster, weight, req, resp, authority)


def _rule_policies(
    r: LoadedResource, i: int, rule: HTTPRoute, action: Action, ctx: _Context
) -> dict[str, Any]:
    """The per-rule compiled fields of Route (the path rewrite depends on the match: per block)."""
    headers = rule.headers
    req, header_authority = compile_header_ops(headers.request if headers else None)
    resp, _ = compile_header_ops(headers.response if headers else None)
    authority = rule.rewrite.authority if rule.rewrite is not None else None
    out: dict[str, Any] = {
        "authority": authority or header_authority,
        "request_headers": req,
        "response_headers": resp,
    }
    if rule.cors_policy is not None:
        # Istio configures the CORS filter on every route of a rule with a corsPolicy, whatever
        # its action (a redirect's answer gets the CORS headers too).
        try:
            out["cors"] = compile_cors(rule.cors_policy)
        except Exception as e:  # validation rejects bad origin regexes first; never crash here
            ctx.diags.append(
                r.diag(
                    Severity.ERROR,
                    ("spec", "http", i, "corsPolicy"),
                    f"cannot compile corsPolicy: {e}",
                )
            )
    if action == "route":
        out["fault"] = compile_fault(rule.fault)
        out["upstream"] = compile_upstream(rule.timeout, rule.retries)
        out["mesh_default_upstream"] = compile_mesh_default(rule.timeout, rule.retries)
    elif action == "direct_response" and rule.direct_response is not None:
        out["direct_policy"] = compile_direct_response(rule.direct_response)
    return out
