"""Compile Istio resources into an immutable RouteTable shaped like Envoy's route configuration.

This is Istio's translation (`BuildHTTPRoutesForVirtualService`, `TranslateRoute`,
`TranslateRouteMatch`, `MirrorPercent`) done once at configure time for the one proxy meshmirror
plays: a Gateway or the mesh (a sidecar). Everything is resolved here (short names, ports,
clusters, mirror fractions) so that per-request matching only reads frozen data.
`RouteTable.to_envoy()` dumps what Istio would send Envoy, minus what meshmirror does not serve
(retry policies, decorators).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from meshmirror.diagnostics import Diagnostic, Path, Severity
from meshmirror.durations import parse_duration_ns
from meshmirror.loader import DEFAULT_NAMESPACE, LoadedResource
from meshmirror.match import (
    RequestView,
    RouteMatch,
    RouteMatcher,
    compile_route_match,
    match_request,
    strip_port,
)
from meshmirror.model import (
    Destination,
    Gateway,
    HTTPDirectResponse,
    HTTPMatchRequest,
    HTTPRedirect,
    HTTPRoute,
    HTTPRouteDestination,
    Percent,
    StringMatch,
    VirtualService,
)
from meshmirror.model_gateway_api import (
    ROUTE_SEMANTICS_ANNOTATION,
    ROUTE_SEMANTICS_GATEWAY,
)
from meshmirror.model_gateway_api import Gateway as GatewayAPIGateway
from meshmirror.registry import (
    Cluster,
    Registry,
    build_registry,
    host_matches,
    resolve_short_name,
)
from meshmirror.transform import (
    DirectResponsePolicy,
    FaultPolicy,
    HeaderOps,
    PathRewrite,
    RedirectPolicy,
    UpstreamPolicy,
    compile_direct_response,
    compile_fault,
    compile_header_ops,
    compile_path_rewrite,
    compile_redirect,
    compile_upstream,
)

MESH = "mesh"
HUNDRED = 100
MILLION = 1_000_000
_UINT32_MAX = 0xFFFFFFFF
_DENOMINATOR_NAMES = {HUNDRED: "HUNDRED", 10_000: "TEN_THOUSAND", MILLION: "MILLION"}
_REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}

Action = Literal["route", "redirect", "direct_response", "delegate"]


# --- compiled artefacts -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    cluster: Cluster
    weight: int
    # This destination's `headers` (applied when it is picked) and its authority rewrite.
    request_headers: HeaderOps | None = None
    response_headers: HeaderOps | None = None
    authority: str | None = None


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    """Envoy RequestMirrorPolicy: copy to `cluster` when `random % denominator < numerator`."""

    cluster: Cluster
    numerator: int
    denominator: int
    source_path: Path = ()  # where in the VirtualService it came from, e.g. spec.http[0].mirror

    @property
    def denominator_name(self) -> str:
        return _DENOMINATOR_NAMES.get(self.denominator, str(self.denominator))

    def to_envoy(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster.name,
            "runtime_fraction": {
                "default_value": {
                    "numerator": self.numerator,
                    "denominator": self.denominator_name,
                }
            },
            "trace_sampled": False,
        }


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # Istio's route name: http.name, or http.name + "." + match.name
    virtual_service: str  # ns/name
    rule_index: int
    match_index: int
    matcher: RouteMatcher
    action: Action
    clusters: tuple[WeightedCluster, ...] = ()
    mirrors: tuple[MirrorPolicy, ...] = ()
    weighted: bool = False  # several destinations: Envoy weighted_clusters
    timeout: str = "0s"
    match_count: int = 1  # match blocks of the rule, to label them apart
    redirect: HTTPRedirect | None = field(default=None, compare=False)
    direct_response: HTTPDirectResponse | None = field(default=None, compare=False)
    delegate: str | None = None  # ns/name of the delegate VirtualService (not inlined)
    # What the route does to the request and the response (transform.py), and the primary-side
    # policies primary.py acts on. All compiled here, once.
    rewrite: PathRewrite | None = field(default=None, compare=False)
    authority: str | None = None  # rewrite.authority, or headers.request set/add of host
    request_headers: HeaderOps | None = None
    response_headers: HeaderOps | None = None
    fault: FaultPolicy | None = None
    upstream: UpstreamPolicy | None = None  # timeout and retries
    redirect_policy: RedirectPolicy | None = None
    direct_policy: DirectResponsePolicy | None = None

    @property
    def label(self) -> str:
        """`default/httpbin[0]`, `default/httpbin[0.1]` (second match block), `...[0:name]`."""
        idx = str(self.rule_index)
        if self.match_count > 1:
            idx += f".{self.match_index}"
        if self.name:
            idx += f":{self.name}"
        return f"{self.virtual_service}[{idx}]"

    def to_envoy(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        out["match"] = self.matcher.to_envoy()
        if self.action == "route":
            action: dict[str, Any] = {}
            if self.weighted:
                action["weighted_clusters"] = {
                    "clusters": [
                        {"name": wc.cluster.name, "weight": wc.weight} for wc in self.clusters
                    ]
                }
            elif self.clusters:
                action["cluster"] = self.clusters[0].cluster.name
            action["timeout"] = self.timeout
            if self.rewrite is not None:
                action.update(self.rewrite.to_envoy())
            if self.authority:
                action["host_rewrite_literal"] = self.authority
            if self.upstream is not None and self.upstream.retries:
                action["retry_policy"] = _retry_policy_to_envoy(self.upstream)
            if self.mirrors:
                action["request_mirror_policies"] = [m.to_envoy() for m in self.mirrors]
            out["route"] = action
            _header_ops_to_envoy(out, self.request_headers, self.response_headers)
        elif self.action == "redirect" and self.redirect is not None:
            out["redirect"] = _redirect_to_envoy(self.redirect)
        elif self.action == "direct_response" and self.direct_response is not None:
            out["direct_response"] = _direct_response_to_envoy(self.direct_response)
        elif self.action == "delegate":
            # Istio inlines the delegate's routes; meshmirror does not (yet), so the dump says so.
            out["delegate"] = self.delegate
        return out


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    virtual_service: str  # ns/name

    def to_envoy(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "domains": list(self.domains),
            "routes": [r.to_envoy() for r in self.routes],
        }


class RouteRow(NamedTuple):
    """One line of the human route table (`meshmirror routes`)."""

    virtual_host: str
    domains: str
    route: str
    match: str
    action: str
    destinations: str
    mirrors: str


_HostIndex = tuple[tuple[int, Mapping[str, tuple["VirtualHost", str]]], ...]


@dataclass(frozen=True)
class RouteTable:
    gateway: str | None  # ns/name of the Gateway the proxy acts as; None = the mesh
    listener_port: int
    virtual_hosts: tuple[VirtualHost, ...]
    generation: int = 0
    registry: Registry | None = field(default=None, compare=False, repr=False)
    # Domain indexes, rebuilt by __post_init__ (also after dataclasses.replace).
    _exact: Mapping[str, tuple[VirtualHost, str]] = field(init=False, compare=False, repr=False)
    _suffixes: _HostIndex = field(init=False, compare=False, repr=False)
    _prefixes: _HostIndex = field(init=False, compare=False, repr=False)
    _star: tuple[VirtualHost, str] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        exact: dict[str, tuple[VirtualHost, str]] = {}
        suffixes: dict[int, dict[str, tuple[VirtualHost, str]]] = {}
        prefixes: dict[int, dict[str, tuple[VirtualHost, str]]] = {}
        star: tuple[VirtualHost, str] | None = None
        for vh in self.virtual_hosts:
            for domain in vh.domains:
                d = domain.lower()
                entry = (vh, domain)
                if d == "*":
                    star = star or entry
                elif d.startswith("*"):
                    suffixes.setdefault(len(d) - 1, {}).setdefault(d[1:], entry)
                elif d.endswith("*"):
                    prefixes.setdefault(len(d) - 1, {}).setdefault(d[:-1], entry)
                else:
                    exact.setdefault(d, entry)
        # Longest wildcard first, as Envoy searches.
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(
            self, "_suffixes", tuple(sorted(suffixes.items(), key=lambda kv: -kv[0]))
        )
        object.__setattr__(
            self, "_prefixes", tuple(sorted(prefixes.items(), key=lambda kv: -kv[0]))
        )
        object.__setattr__(self, "_star", star)

    @property
    def name(self) -> str:
        """The route configuration's name as Istio names it (`http.80` on gateways, `80` in
        the mesh)."""
        return f"http.{self.listener_port}" if self.gateway else str(self.listener_port)

    def lookup_host(self, host: str) -> tuple[VirtualHost, str] | None:
        """(virtual host, matched domain) for a lower-case host without port. Envoy's order:
        exact, longest suffix wildcard, longest prefix wildcard, `*`; a wildcard never matches
        the empty string."""
        found = self._exact.get(host)
        if found is not None:
            return found
        n = len(host)
        for length, index in self._suffixes:
            if length < n:
                found = index.get(host[n - length :])
                if found is not None:
                    return found
        for length, index in self._prefixes:
            if length < n:
                found = index.get(host[:length])
                if found is not None:
                    return found
        return self._star

    def select_virtual_host_domain(self, authority: str) -> tuple[VirtualHost, str] | None:
        return self.lookup_host(strip_port(authority).lower())

    def select_virtual_host(self, authority: str) -> VirtualHost | None:
        """The virtual host for a Host/:authority value (port ignored, case-insensitive)."""
        found = self.lookup_host(strip_port(authority).lower())
        return None if found is None else found[0]

    def match(self, request: RequestView) -> RouteMatch | None:
        return match_request(self, request)

    def to_envoy(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "virtual_hosts": [vh.to_envoy() for vh in self.virtual_hosts],
        }

    def describe_rows(self) -> list[RouteRow]:
        rows: list[RouteRow] = []
        for vh in self.virtual_hosts:
            for r in vh.routes:
                if r.action == "route":
                    dests = ", ".join(
                        wc.cluster.name + (f" weight {wc.weight}" if r.weighted else "")
                        for wc in r.clusters
                    )
                elif r.action == "delegate":
                    dests = f"delegate {r.delegate}"
                else:
                    dests = r.action
                mirrors = ", ".join(
                    f"{m.cluster.name} {_percent_text(m.numerator, m.denominator)}"
                    for m in r.mirrors
                )
                rows.append(
                    RouteRow(
                        vh.name,
                        ", ".join(vh.domains),
                        r.label,
                        r.matcher.describe(),
                        r.action,
                        dests,
                        mirrors,
                    )
                )
        return rows


def _percent_text(numerator: int, denominator: int) -> str:
    return f"{numerator * 100 / denominator:.6g}%"


# --- percent conversion (Istio route.go) ------------------------------------------------------


def fraction_of_percentage(value: float) -> tuple[int, int] | None:
    """`translatePercentToFractionalPercent`: v > 0 -> (uint32(v * 10000), MILLION), truncating
    the float product as Go does (0.57 -> 5699); zero, negative or NaN -> no policy."""
    if not (value > 0):
        return None
    product = value * 10000
    numerator = _UINT32_MAX if not math.isfinite(product) else min(int(product), _UINT32_MAX)
    return numerator, MILLION


def mirror_fraction(rule: HTTPRoute) -> tuple[int, int] | None:
    """Istio `MirrorPercent`: mirrorPercentage wins over mirrorPercent; absent -> 100/HUNDRED;
    an explicit 0 -> None (no mirror policy at all)."""
    if rule.mirror_percentage is not None:
        return fraction_of_percentage(rule.mirror_percentage.value)
    if rule.mirror_percent is not None:
        return (rule.mirror_percent, HUNDRED) if rule.mirror_percent > 0 else None
    return HUNDRED, HUNDRED


def mirror_policy_fraction(percentage: Percent | None) -> tuple[int, int] | None:
    """Istio `MirrorPercentByPolicy` for one `mirrors[]` entry."""
    if percentage is None:
        return HUNDRED, HUNDRED
    return fraction_of_percentage(percentage.value)


# --- compiling --------------------------------------------------------------------------------


def compile_route_table(
    resources: Sequence[LoadedResource],
    *,
    gateway: str | None = None,
    listener_port: int = 80,
) -> tuple[RouteTable | None, list[Diagnostic]]:
    """Build the table for the proxy acting as `gateway` (`ns/name`, `name` in the default
    namespace, or `mesh`); by default the only Gateway in the config, or the mesh when there is
    none. Errors (no table) only for an ambiguous or unknown gateway; everything else is a
    warning or info and compiles to something safe."""
    diags: list[Diagnostic] = []
    chosen, error = _choose_gateway(resources, gateway)
    if error is not None:
        return None, [error]
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
        if not _applies(vs.spec.gateways, r.namespace, ctx.current):
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
            fqdns = _bind_to_gateway(r, fqdns, chosen, diags)
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


def _choose_gateway(
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


def _resolve_gateway_name(name: str, namespace: str) -> str:
    if name == MESH or "/" in name:
        return name
    return f"{namespace}/{name}"


def _applies(gateways: Sequence[str] | None, namespace: str, current: str) -> bool:
    """A VirtualService without gateways applies to the mesh only; otherwise it applies to the
    listed gateways (`mesh` included explicitly)."""
    if not gateways:
        return current == MESH
    return any(_resolve_gateway_name(g, namespace) == current for g in gateways)


def _bind_to_gateway(
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
    for i, rule, source in _expand_delegates(r, vs, ctx):
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
        return any(_resolve_gateway_name(g, r.namespace) == ctx.current for g in m.gateways)
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


def _redirect_to_envoy(rd: HTTPRedirect) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rd.uri:
        out["path_redirect"] = rd.uri
    if rd.authority:
        out["host_redirect"] = rd.authority
    if rd.port:
        out["port_redirect"] = rd.port
    if rd.scheme:
        out["scheme_redirect"] = rd.scheme
    code = rd.redirect_code or 301
    if code != 301:  # MOVED_PERMANENTLY is the enum's zero value: omitted from dumps
        out["response_code"] = _REDIRECT_CODES.get(code, str(code))
    return out


def _direct_response_to_envoy(dr: HTTPDirectResponse) -> dict[str, Any]:
    out: dict[str, Any] = {"status": dr.status}
    if dr.body is not None:
        if dr.body.string is not None:
            out["body"] = {"inline_string": dr.body.string}
        elif dr.body.bytes is not None:
            out["body"] = {"inline_bytes": dr.body.bytes}
    return out


# --- route policies: rewrite, headers, fault, timeout, retries, redirect, direct response ---------


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
    if action == "route":
        out["fault"] = compile_fault(rule.fault)
        out["upstream"] = compile_upstream(rule.timeout, rule.retries)
    elif action == "redirect" and rule.redirect is not None:
        out["redirect_policy"] = compile_redirect(rule.redirect, ctx.listener_port)
    elif action == "direct_response" and rule.direct_response is not None:
        out["direct_policy"] = compile_direct_response(rule.direct_response)
    return out


def _header_ops_to_envoy(
    out: dict[str, Any], request: HeaderOps | None, response: HeaderOps | None
) -> None:
    for key, ops in (("request", request), ("response", response)):
        if ops is None:
            continue
        adds = [
            {
                "header": {"key": n.decode(), "value": v.decode("utf-8", "surrogateescape")},
                "append_action": action,
            }
            for items, action in (
                (ops.set, "OVERWRITE_IF_EXISTS_OR_ADD"),
                (ops.add, "APPEND_IF_EXISTS_OR_ADD"),
            )
            for n, v in items
        ]
        if adds:
            out[f"{key}_headers_to_add"] = adds
        if ops.remove:
            out[f"{key}_headers_to_remove"] = sorted(n.decode() for n in ops.remove)


def _retry_policy_to_envoy(policy: UpstreamPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {
        "retry_on": ",".join(sorted(policy.retry_on)),
        "num_retries": policy.retries,
    }
    if policy.per_try_timeout:
        out["per_try_timeout"] = f"{policy.per_try_timeout:g}s"
    if policy.retriable_codes:
        out["retriable_status_codes"] = sorted(policy.retriable_codes)
    return out


# --- delegate VirtualServices (Istio pilot/pkg/model/virtualservice.go) ---------------------------

# Root fields a delegate rule inherits when it leaves them unset (`mergeHTTPRoute`).
_INHERITED = (
    "rewrite",
    "direct_response",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirror_percent",
    "mirror_percentage",
    "cors_policy",
    "mirrors",
    "headers",
)


def _expand_delegates(
    r: LoadedResource, vs: VirtualService, ctx: _Context
) -> list[tuple[int, HTTPRoute, str]]:
    """(rule index, rule, VirtualService ref) per rule, with each root rule naming a `delegate`
    replaced by the delegate's rules merged into it (`mergeHTTPRoutes`): match = root AND
    delegate; unset fields inherited from the root. A delegate rule whose match conflicts with
    the root's is dropped, and so is a root rule whose delegate is not in the config (Istio)."""
    out: list[tuple[int, HTTPRoute, str]] = []
    for i, rule in enumerate(vs.spec.http or ()):
        if rule is None:
            continue
        if rule.delegate is None:
            out.append((i, rule, r.ref))
            continue
        ref = f"{rule.delegate.namespace or r.namespace}/{rule.delegate.name or ''}"
        found = next(
            (
                d
                for d in ctx.resources
                if isinstance(d.obj, VirtualService) and d.ref == ref and not d.obj.spec.hosts
            ),
            None,
        )
        if found is None or not isinstance(found.obj, VirtualService):
            ctx.diags.append(
                r.diag(
                    Severity.WARNING,
                    ("spec", "http", i, "delegate"),
                    f"delegate VirtualService {ref} is not in the config (or has hosts, so it is "
                    "not a delegate); this rule gets no routes",
                )
            )
            continue
        root = _qualify(rule, r.namespace)
        for k, sub in enumerate(found.obj.spec.http or ()):
            if sub is None:
                continue
            merged = merge_http_route(root, _qualify(sub, found.namespace))
            if merged is None:
                ctx.diags.append(
                    found.diag(
                        Severity.WARNING,
                        ("spec", "http", k, "match"),
                        f"delegate rule conflicts with the match of its root {r.ref} "
                        f"(spec.http[{i}]); it is ignored, as Istio ignores it",
                    )
                )
                continue
            out.append((k, merged, found.ref))
    return out


def _qualify(rule: HTTPRoute, namespace: str) -> HTTPRoute:
    """Destination hosts resolved in the rule's own namespace before merging (Istio resolves
    short names per VirtualService before it merges delegates)."""

    def q(d: Destination | None) -> Destination | None:
        if d is None or not d.host:
            return d
        return d.model_copy(update={"host": resolve_short_name(d.host, namespace)})

    update: dict[str, Any] = {}
    if rule.route:
        update["route"] = [
            None if d is None else d.model_copy(update={"destination": q(d.destination)})
            for d in rule.route
        ]
    if rule.mirror is not None:
        update["mirror"] = q(rule.mirror)
    if rule.mirrors:
        update["mirrors"] = [
            None if m is None else m.model_copy(update={"destination": q(m.destination)})
            for m in rule.mirrors
        ]
    return rule.model_copy(update=update) if update else rule


def _joined_name(root: str | None, leaf: str | None) -> str | None:
    if not leaf:
        return root
    return f"{root}-{leaf}" if root else leaf


def merge_http_route(root: HTTPRoute, delegate: HTTPRoute) -> HTTPRoute | None:
    """Istio `mergeHTTPRoute`; None when the delegate's match conflicts with the root's."""
    matches, conflict = merge_match_requests(
        [m for m in root.match or () if m is not None],
        [m for m in delegate.match or () if m is not None],
    )
    if conflict:
        return None
    update: dict[str, Any] = {
        "match": list(matches) or None,
        "name": _joined_name(root.name, delegate.name),
    }
    for f in _INHERITED:
        value = getattr(delegate, f)
        if value is None or (f == "mirrors" and not value):
            update[f] = getattr(root, f)
    return delegate.model_copy(update=update)


def merge_match_requests(
    root: Sequence[HTTPMatchRequest], delegate: Sequence[HTTPMatchRequest]
) -> tuple[list[HTTPMatchRequest], bool]:
    """Istio `mergeHTTPMatchRequests`: every delegate match must fit inside some root match;
    each fitting (root, delegate) pair becomes one merged match. (merged, conflict)."""
    if not root:
        return list(delegate), False
    if not delegate:
        return list(root), False
    out: list[HTTPMatchRequest] = []
    for sub in delegate:
        found = False
        for rm in root:
            if _match_conflict(rm, sub):
                continue
            out.append(_merge_match(rm, sub))
            found = True
        if not found:
            return [], True
    return out, not out


def _merge_match(root: HTTPMatchRequest, leaf: HTTPMatchRequest) -> HTTPMatchRequest:
    update: dict[str, Any] = {"name": _joined_name(root.name, leaf.name)}
    for f in ("uri", "scheme", "method", "authority", "source_namespace", "stat_prefix"):
        if not getattr(leaf, f):
            update[f] = getattr(root, f)
    for f in ("headers", "without_headers", "query_params", "source_labels"):
        merged = {**(getattr(root, f) or {}), **(getattr(leaf, f) or {})}
        update[f] = merged or None
    if not leaf.port:
        update["port"] = root.port
    if not leaf.gateways:
        update["gateways"] = root.gateways
    return leaf.model_copy(update=update)


def _match_conflict(root: HTTPMatchRequest, leaf: HTTPMatchRequest) -> bool:
    """Istio `hasConflict`."""
    for f in ("uri", "scheme", "method", "authority"):
        if _string_match_conflict(getattr(root, f), getattr(leaf, f)):
            return True
    for f in ("headers", "without_headers", "query_params"):
        rmap = getattr(root, f) or {}
        for key, value in (getattr(leaf, f) or {}).items():
            if _string_match_conflict(rmap.get(key), value):
                return True
    if bool(root.ignore_uri_case) != bool(leaf.ignore_uri_case):
        return True
    if root.port and leaf.port and root.port != leaf.port:
        return True
    if root.source_namespace and leaf.source_namespace != root.source_namespace:
        return True
    for key, value in (leaf.source_labels or {}).items():
        if key in (root.source_labels or {}) and (root.source_labels or {})[key] != value:
            return True
    if root.gateways and leaf.gateways:
        if len(root.gateways) < len(leaf.gateways) or not set(leaf.gateways) <= set(root.gateways):
            return True
    return False


def _string_match_conflict(root: StringMatch | None, leaf: StringMatch | None) -> bool:
    """Istio `stringMatchConflict`: the leaf must be a narrower match of the same kind."""
    if root is None or leaf is None:
        return False
    if root.regex and (leaf.regex or leaf.prefix or leaf.exact):
        return True
    if leaf.regex and (root.regex or root.prefix or root.exact):
        return True
    if root.exact:
        return bool(leaf.prefix) or leaf.exact != root.exact
    if root.prefix:
        if leaf.prefix:
            return not leaf.prefix.startswith(root.prefix)
        if leaf.exact:
            return not leaf.exact.startswith(root.prefix)
    return True
