"""The compiled route table: frozen runtime types shaped like Envoy's route configuration.

Built once by `routing.compile.compile_route_table`; per-request matching only reads them.
`RouteTable.to_envoy()` is the route configuration as this proxy serves it, loadable by Envoy as
it is (`RouteConfiguration`): Istio's fields for what meshmirror serves, nothing of its own.
Istio's mesh default retry policy is in it only where the proxy applies it
(`mirror_default_retries=istio`); the route table in words says where Istio would add it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from meshmirror.diagnostics import Path
from meshmirror.hosts import strip_port
from meshmirror.percent import DENOMINATOR_NAMES, percent_text
from meshmirror.protocols import CLIENT, HTTP1, SNIFFED

if TYPE_CHECKING:
    # Types only: the table is built by the compiler and read per request, and the request path
    # must not load the config models (pydantic) or the registry behind them.
    from meshmirror.config.virtualservice import HTTPDirectResponse, HTTPRedirect
    from meshmirror.mesh.clusters import Cluster
    from meshmirror.mesh.registry import Registry
    from meshmirror.policy.cors import CrossOriginPolicy
    from meshmirror.policy.fault import FaultPolicy
    from meshmirror.policy.local_reply import DirectResponsePolicy, RedirectPolicy
    from meshmirror.policy.rewrites import HeaderOps, PathRewrite
    from meshmirror.policy.upstream import UpstreamPolicy
    from meshmirror.routing.matchers import RouteMatcher

_REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}

Action = Literal["route", "redirect", "direct_response", "delegate"]


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
    # The configured share of matched requests that are copied (0..1), for the counters.
    share: float = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        d = self.denominator
        object.__setattr__(self, "share", min(1.0, self.numerator / d) if d > 0 else 0.0)

    @property
    def denominator_name(self) -> str:
        return DENOMINATOR_NAMES.get(self.denominator, str(self.denominator))

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
    # What the route does to the request and the response (policy/), and the primary-side
    # policies that the mitm glue acts on. All compiled by the route compiler, once.
    rewrite: PathRewrite | None = field(default=None, compare=False)
    authority: str | None = None  # rewrite.authority, or headers.request set/add of host
    request_headers: HeaderOps | None = None
    response_headers: HeaderOps | None = None
    fault: FaultPolicy | None = None
    upstream: UpstreamPolicy | None = None  # timeout and retries
    redirect_policy: RedirectPolicy | None = None
    direct_policy: DirectResponsePolicy | None = None
    cors: CrossOriginPolicy | None = None  # Envoy's CORS filter, before the route's action
    # Istio's mesh default retries with the route's timeout, for a forwarding route without
    # `retries`; served only with mirror_default_retries=istio.
    mesh_default_upstream: UpstreamPolicy | None = None

    @property
    def label(self) -> str:
        """`default/httpbin[0]`, `default/httpbin[0.1]` (second match block), `...[0:name]`."""
        idx = str(self.rule_index)
        if self.match_count > 1:
            idx += f".{self.match_index}"
        if self.name:
            idx += f":{self.name}"
        return f"{self.virtual_service}[{idx}]"

    def to_envoy(self, *, default_retries: bool = False) -> dict[str, Any]:
        """This route as Envoy's `Route`, as Istio writes what meshmirror serves of it;
        `default_retries`: whether the proxy applies Istio's mesh default retry policy (only
        then is it in the route)."""
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        out["match"] = self.matcher.to_envoy()
        if self.action == "route":
            action: dict[str, Any] = {}
            own_headers = any(wc.request_headers or wc.response_headers for wc in self.clusters)
            if self.weighted or own_headers:
                # A destination's own `headers` are a weighted cluster's (Envoy applies them
                # before the route's, as meshmirror does), so one destination with headers is
                # a weighted cluster of one.
                action["weighted_clusters"] = {
                    "clusters": [self._cluster_weight(wc) for wc in self.clusters]
                }
            elif self.clusters:
                action["cluster"] = self.clusters[0].cluster.name
            action["timeout"] = self.timeout
            if self.rewrite is not None:
                action.update(self.rewrite.to_envoy())
            if self.authority:
                action["host_rewrite_literal"] = self.authority
            if self.upstream is not None and self.upstream.retries:
                action["retry_policy"] = self.upstream.to_envoy()
            elif self.mesh_default_upstream is not None and default_retries:
                action["retry_policy"] = self.mesh_default_upstream.to_envoy()
            if self.mirrors:
                action["request_mirror_policies"] = [m.to_envoy() for m in self.mirrors]
            out["route"] = action
            _header_ops_to_envoy(out, self.request_headers, self.response_headers)
        elif self.action == "redirect" and self.redirect is not None:
            out["redirect"] = _redirect_to_envoy(self.redirect, self.redirect_policy)
            _header_ops_to_envoy(out, None, self.response_headers)
        elif self.action == "direct_response" and self.direct_response is not None:
            out["direct_response"] = _direct_response_to_envoy(self.direct_response)
            _header_ops_to_envoy(out, None, self.response_headers)
        per_filter: dict[str, Any] = {}
        if self.action == "route" and self.fault is not None:
            per_filter.update(self.fault.to_envoy())
        if self.cors is not None:
            per_filter.update(self.cors.to_envoy())
        if per_filter:
            out["typed_per_filter_config"] = per_filter
        return out

    def _cluster_weight(self, wc: WeightedCluster) -> dict[str, Any]:
        out: dict[str, Any] = {"name": wc.cluster.name, "weight": wc.weight}
        if wc.authority and not self.authority:  # the route's own host rewrite wins
            out["host_rewrite_literal"] = wc.authority
        _header_ops_to_envoy(out, wc.request_headers, wc.response_headers)
        return out

    @property
    def upstream_is_mesh_default(self) -> bool:
        """True when Istio would give this route its mesh default retry policy."""
        explicit = self.upstream is not None and self.upstream.retries
        return not explicit and self.mesh_default_upstream is not None


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    virtual_service: str  # ns/name

    def to_envoy(self, *, default_retries: bool = False) -> dict[str, Any]:
        return {
            "name": self.name,
            "domains": list(self.domains),
            # A root rule's delegate is merged into it when the table is compiled; a route
            # still naming one serves nothing, as in Istio.
            "routes": [
                r.to_envoy(default_retries=default_retries)
                for r in self.routes
                if r.action != "delegate"
            ],
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
    # Whether a route matches on request headers: only then must a request's headers be
    # decoded and indexed for matching.
    reads_headers: bool = field(init=False, compare=False, repr=False)
    # Whether a route changes its primary's response headers (`headers.response` of the route
    # or a destination, CORS): only then does the proxy need the response headers hook.
    rewrites_responses: bool = field(init=False, compare=False, repr=False)
    # Whether a route's destination or mirror may be reached over HTTP/2 (its protocol, or the
    # client's): only then can a gRPC call need its response passed through as it arrives.
    may_speak_http2: bool = field(init=False, compare=False, repr=False)

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
        routes = [r for vh in self.virtual_hosts for r in vh.routes]
        object.__setattr__(self, "reads_headers", any(r.matcher.headers for r in routes))
        rewrites = any(
            r.response_headers is not None
            or r.cors is not None
            or any(wc.response_headers is not None for wc in r.clusters)
            for r in routes
        )
        object.__setattr__(self, "rewrites_responses", rewrites)
        at_gateway = self.gateway is not None
        http2 = any(
            upstream_protocol(c, at_gateway=at_gateway) != HTTP1
            for r in routes
            for c in [*(wc.cluster for wc in r.clusters), *(m.cluster for m in r.mirrors)]
        )
        object.__setattr__(self, "may_speak_http2", http2)

    @property
    def name(self) -> str:
        """The route configuration's name as Istio names it (`http.80` on gateways, `80` in
        the mesh)."""
        return f"http.{self.listener_port}" if self.gateway else str(self.listener_port)

    def upstream_protocol(self, cluster: Cluster) -> str:
        """How this proxy reaches `cluster` (`upstream_protocol`)."""
        return upstream_protocol(cluster, at_gateway=self.gateway is not None)

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

    def to_envoy(self, *, default_retries: bool = False) -> dict[str, Any]:
        """Envoy's route configuration; `default_retries` as in `Route.to_envoy`."""
        return {
            "name": self.name,
            "virtual_hosts": [
                vh.to_envoy(default_retries=default_retries) for vh in self.virtual_hosts
            ],
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
                    f"{m.cluster.name} {percent_text(m.numerator, m.denominator)}"
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


def upstream_protocol(cluster: Cluster, *, at_gateway: bool) -> str:
    """How a proxy reaches `cluster`: `protocols.HTTP1`, `HTTP2` or `CLIENT` (the client's own).
    A port without a protocol is sniffed by Istio: a sidecar keeps the client's protocol, a
    gateway speaks HTTP/1.1 (clients negotiate `h2` with a gateway whatever the service
    speaks)."""
    if cluster.upstream == SNIFFED:
        return HTTP1 if at_gateway else CLIENT
    return cluster.upstream


# --- Envoy dump helpers ------------------------------------------------------------------------


def _redirect_to_envoy(rd: HTTPRedirect, policy: RedirectPolicy | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rd.prefix_rewrite:
        out["prefix_rewrite"] = rd.prefix_rewrite
    elif rd.uri:
        out["path_redirect"] = rd.uri
    if rd.authority:
        out["host_redirect"] = rd.authority
    # `port`, or the listener's for `derivePort: FROM_REQUEST_PORT`, as the policy resolved it.
    port = policy.port if policy is not None else rd.port
    if port:
        out["port_redirect"] = port
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
