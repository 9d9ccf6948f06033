"""Gateway API -> Istio: HTTPRoutes become VirtualServices, as istiod converts them (I-GWCONV).

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
- Filters: RequestMirror -> `mirrors[]` in order (fraction -> 100 * numerator / denominator
  percent; percent -> percent; neither -> 100%); RequestHeaderModifier / ResponseHeaderModifier ->
  `headers`; URLRewrite -> `rewrite`; RequestRedirect -> `redirect`; `timeouts.request` ->
  `timeout`. backendRefs -> `route[]` with their weights; a rule without a usable backend answers
  500 (`directResponse`), as Gateway API requires.
- A mirror whose backendRef cannot be resolved is dropped with a warning; the route is kept.

Diagnostics about a generated VirtualService point at the HTTPRoute (file, document, YAML path).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshmirror.diagnostics import Diagnostic, Path, Severity
from meshmirror.loader import LoadedResource
from meshmirror.model import ServiceEntry, VirtualService
from meshmirror.model_gateway_api import (
    GATEWAY_API_GROUP,
    ROUTE_SEMANTICS_ANNOTATION,
    ROUTE_SEMANTICS_GATEWAY,
    BackendObjectReference,
    Gateway,
    HTTPHeaderFilter,
    HTTPRoute,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRule,
    Listener,
    ParentReference,
)
from meshmirror.registry import DOMAIN_SUFFIX, Registry, build_registry, host_matches

ISTIO_GROUP = "networking.istio.io"
_HTTP_PROTOCOLS = ("HTTP", "HTTPS")
_NO_VALUE: Any = ...


# --- diagnostics that point back at the HTTPRoute -------------------------------------------------


@dataclass(frozen=True)
class RuleOrigin:
    """Where one generated `http[k]` came from: the HTTPRoute, and the HTTPRoute path of each
    sub-path of the Istio route (`("route", 0)` -> `spec.rules[1].backendRefs[0]`)."""

    res: LoadedResource
    paths: Mapping[Path, Path]


@dataclass(frozen=True)
class ConvertedResource(LoadedResource):
    """A VirtualService generated from HTTPRoutes; its diagnostics name the HTTPRoute."""

    origins: tuple[RuleOrigin, ...] = ()
    first: LoadedResource | None = field(default=None, compare=False, repr=False)
    head_paths: Mapping[Path, Path] = field(default_factory=dict, compare=False, repr=False)

    def origin_of(self, path: Path) -> tuple[LoadedResource, Path]:
        """The HTTPRoute resource and path that a VirtualService path stands for."""
        path = tuple(path)
        if len(path) >= 3 and path[:2] == ("spec", "http") and isinstance(path[2], int):
            k = path[2]
            if 0 <= k < len(self.origins):
                origin = self.origins[k]
                return origin.res, _translate(origin.paths, path[3:])
        assert self.first is not None
        return self.first, _translate(self.head_paths, path)

    def line_of(self, path: Path) -> int | None:
        res, translated = self.origin_of(path)
        return res.line_of(translated)

    def diag(
        self,
        severity: Severity,
        path: Path,
        message: str,
        value: object = _NO_VALUE,
        code: str | None = None,
    ) -> Diagnostic:
        res, translated = self.origin_of(path)
        return res.diag(severity, translated, message, value, code)


def _translate(paths: Mapping[Path, Path], sub: Path) -> Path:
    for end in range(len(sub), -1, -1):
        found = paths.get(sub[:end])
        if found is not None:
            return found
    return ()


# --- conversion ---------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One generated Istio HTTP route (one rule x one match) with its precedence key."""

    http: dict[str, Any]
    origin: RuleOrigin
    rank: tuple[int, int, int, int, int]


@dataclass
class _Group:
    namespace: str
    name: str
    host: str
    gateways: list[str] | None
    entries: list[_Entry] = field(default_factory=list)
    routes: set[str] = field(default_factory=set)


def convert_gateway_api(
    resources: Sequence[LoadedResource],
) -> tuple[list[LoadedResource], list[Diagnostic]]:
    """VirtualServices for every attached HTTPRoute, plus warnings and infos; never raises."""
    routes = [r for r in resources if isinstance(r.obj, HTTPRoute)]
    if not routes:
        return [], []
    diags: list[Diagnostic] = []
    gateways = {r.ref: r for r in resources if isinstance(r.obj, Gateway)}
    ctx = _Resolver(build_registry(resources), resources, diags)
    groups: dict[tuple[str, str], _Group] = {}
    for res in sorted(routes, key=_age_key):
        assert isinstance(res.obj, HTTPRoute)
        entries = _convert_rules(res, res.obj, ctx)
        for parent_ref, host in _attachments(res, res.obj, gateways, ctx.registry, diags):
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


def _age_key(res: LoadedResource) -> tuple[bool, float, str]:
    """Oldest first, then `ns/name`: a route without creationTimestamp counts as the newest."""
    created = _timestamp((res.obj.metadata.model_extra or {}).get("creationTimestamp"))
    return (created is None, created or 0.0, res.ref)


def _timestamp(value: object) -> float | None:
    if isinstance(value, datetime.datetime):
        dt = value
    elif isinstance(value, str) and value:
        try:
            dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()


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


# --- attachment ---------------------------------------------------------------------------------


def _attachments(
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


# --- rules --------------------------------------------------------------------------------------


@dataclass
class _Resolver:
    registry: Registry
    resources: Sequence[LoadedResource]
    diags: list[Diagnostic]
    _warned_cross_ns: set[tuple[str, Path]] = field(default_factory=set)

    def destination(
        self, res: LoadedResource, path: Path, ref: BackendObjectReference
    ) -> tuple[dict[str, Any] | None, str | None]:
        """(Istio Destination, None) or (None, why it cannot be resolved)."""
        group = ref.group or ""
        kind = ref.kind or "Service"
        ns = ref.namespace or res.namespace
        if ns != res.namespace and (res.ref, path) not in self._warned_cross_ns:
            self._warned_cross_ns.add((res.ref, path))
            self.diags.append(
                res.diag(
                    Severity.WARNING,
                    path,
                    f"cross-namespace backendRef to {ns}/{ref.name}: Kubernetes requires a "
                    "ReferenceGrant, which meshmirror does not model; the reference is allowed",
                )
            )
        host: str
        if group in ("", "core") and kind == "Service":
            host = f"{ref.name}.{ns}.svc.{DOMAIN_SUFFIX}"
            if self.registry.service(host) is None:
                return None, f"Service {ns}/{ref.name} is not defined in the config"
        elif group == ISTIO_GROUP and kind == "Hostname":
            host = ref.name
        elif group == ISTIO_GROUP and kind == "ServiceEntry":
            found = next(
                (
                    r
                    for r in self.resources
                    if isinstance(r.obj, ServiceEntry)
                    and r.namespace == ns
                    and r.name == ref.name
                    and r.obj.spec.hosts
                ),
                None,
            )
            if found is None:
                return None, f"ServiceEntry {ns}/{ref.name} is not defined in the config"
            assert isinstance(found.obj, ServiceEntry)
            host = (found.obj.spec.hosts or [""])[0]
        else:
            return None, (
                f"backendRef kind {group or 'core'}/{kind} is not supported (Service, or "
                f"{ISTIO_GROUP} Hostname / ServiceEntry)"
            )
        dest: dict[str, Any] = {"host": host}
        if ref.port is not None:
            dest["port"] = {"number": ref.port}
        return dest, None


def _convert_rules(res: LoadedResource, route: HTTPRoute, ctx: _Resolver) -> list[_Entry]:
    out: list[_Entry] = []
    for i, rule in enumerate(route.spec.rules or ()):
        rule_path: Path = ("spec", "rules", i)
        base, paths = _rule_body(res, rule_path, rule, ctx)
        matches: list[HTTPRouteMatch | None] = list(rule.matches or ()) or [None]
        for j, m in enumerate(matches):
            http = {"name": f"{res.namespace}.{res.name}.{i}.{j}", **base}
            origin_paths = dict(paths)
            if m is not None:
                http["match"] = [_match(m)]
                origin_paths[("match", 0)] = rule_path + ("matches", j)
            out.append(_Entry(http, RuleOrigin(res, origin_paths), _rank(m)))
    return out


def _rank(m: HTTPRouteMatch | None) -> tuple[int, int, int, int, int]:
    """Sort key, smallest first (Istio `sortHTTPRoutes`); no matches = PathPrefix "/"."""
    kind, value = (
        ("PathPrefix", "/") if m is None or m.path is None else (m.path.type, m.path.value)
    )
    rank = {"Exact": 3, "PathPrefix": 2, "RegularExpression": 1}[kind]
    if m is None:
        return (-rank, -len(value), 1, 0, 0)
    return (
        -rank,
        -len(value),
        0 if m.method is not None else 1,
        -len(m.headers or ()),
        -len(m.query_params or ()),
    )


def _match(m: HTTPRouteMatch) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind, value = ("PathPrefix", "/") if m.path is None else (m.path.type, m.path.value)
    out["uri"] = {"Exact": {"exact": value}, "PathPrefix": {"prefix": value}}.get(
        kind, {"regex": value}
    )
    headers: dict[str, Any] = {}
    for h in m.headers or ():
        key = h.name.lower()
        if key not in headers:  # "only the first entry with an equivalent name" counts
            headers[key] = {"exact": h.value} if h.type == "Exact" else {"regex": h.value}
    if headers:
        out["headers"] = headers
    params: dict[str, Any] = {}
    for q in m.query_params or ():
        if q.name not in params:
            params[q.name] = {"exact": q.value} if q.type == "Exact" else {"regex": q.value}
    if params:
        out["queryParams"] = params
    if m.method is not None:
        out["method"] = {"exact": m.method}
    return out


def _rule_body(
    res: LoadedResource, rule_path: Path, rule: HTTPRouteRule, ctx: _Resolver
) -> tuple[dict[str, Any], dict[Path, Path]]:
    """The Istio HTTPRoute fields of a rule (everything but name and match) and the map from
    their paths to the rule's."""
    http: dict[str, Any] = {}
    paths: dict[Path, Path] = {(): rule_path}
    mirrors: list[dict[str, Any]] = []
    redirect = False
    for f, flt in enumerate(rule.filters or ()):
        fp = rule_path + ("filters", f)
        if flt.type == "RequestMirror":
            mirror = _mirror(res, fp, flt, ctx)
            if mirror is not None:
                paths[("mirrors", len(mirrors))] = fp + ("requestMirror",)
                paths[("mirrors", len(mirrors), "destination")] = fp + (
                    "requestMirror",
                    "backendRef",
                )
                mirrors.append(mirror)
        elif flt.type in ("RequestHeaderModifier", "ResponseHeaderModifier"):
            _add_headers(http, flt)
            paths[("headers",)] = fp
        elif flt.type == "URLRewrite" and flt.url_rewrite is not None:
            rewrite = _rewrite(flt)
            if rewrite:
                http["rewrite"] = rewrite
                paths[("rewrite",)] = fp
        elif flt.type == "RequestRedirect" and flt.request_redirect is not None:
            http["redirect"] = _redirect(flt)
            paths[("redirect",)] = fp
            redirect = True
    if mirrors:
        http["mirrors"] = mirrors
    if rule.timeouts is not None:
        timeout = rule.timeouts.request or rule.timeouts.backend_request
        if timeout and timeout not in ("0s", "0ms", "0m", "0h"):
            http["timeout"] = timeout
            paths[("timeout",)] = rule_path + ("timeouts",)
    if redirect:
        return http, paths
    dests: list[dict[str, Any]] = []
    for b, backend in enumerate(rule.backend_refs or ()):
        bp = rule_path + ("backendRefs", b)
        dest, error = ctx.destination(res, bp, backend.object_ref())
        if dest is None:
            ctx.diags.append(
                res.diag(
                    Severity.WARNING,
                    bp,
                    f"backendRef cannot be resolved: {error}; requests it would get are "
                    "answered 500",
                )
            )
            continue
        weight = 1 if backend.weight is None else backend.weight
        if weight == 0:
            continue
        entry: dict[str, Any] = {"destination": dest, "weight": weight}
        headers: dict[str, Any] = {}
        for flt in backend.filters or ():
            if flt.type in ("RequestHeaderModifier", "ResponseHeaderModifier"):
                _add_headers(headers, flt)
        if headers:
            entry["headers"] = headers["headers"]
        paths[("route", len(dests))] = bp
        dests.append(entry)
    if len(dests) == 1:
        dests[0].pop("weight")
    if dests:
        http["route"] = dests
    else:
        http["directResponse"] = {"status": 500}
    return http, paths


def _mirror(
    res: LoadedResource, fp: Path, flt: HTTPRouteFilter, ctx: _Resolver
) -> dict[str, Any] | None:
    rm = flt.request_mirror
    if rm is None:
        return None
    bp = fp + ("requestMirror", "backendRef")
    dest, error = ctx.destination(res, bp, rm.backend_ref)
    if dest is None:
        ctx.diags.append(
            res.diag(
                Severity.WARNING,
                bp,
                f"mirror backendRef cannot be resolved: {error}; the mirror is dropped, the "
                "route is kept",
            )
        )
        return None
    out: dict[str, Any] = {"destination": dest}
    fraction = rm.fraction
    percent = mirror_percent(
        rm.percent,
        fraction.numerator if fraction is not None else None,
        fraction.denominator if fraction is not None else None,
    )
    if percent is not None:
        out["percentage"] = {"value": percent}
    return out


def mirror_percent(
    percent: int | None, numerator: int | None, denominator: int | None
) -> float | None:
    """Istio `createMirrorFilter`: fraction -> 100 * numerator / denominator (denominator 0 or
    unset: 100); else percent; neither -> None (100%)."""
    if numerator is not None:
        den = denominator or 100
        return 100.0 * numerator / den
    if percent is not None:
        return float(percent)
    return None


def _header_ops(hf: HTTPHeaderFilter) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    if hf.set:
        ops["set"] = {h.name: h.value for h in hf.set}
    if hf.add:
        ops["add"] = {h.name: h.value for h in hf.add}
    if hf.remove:
        ops["remove"] = list(hf.remove)
    return ops


def _add_headers(target: dict[str, Any], flt: HTTPRouteFilter) -> None:
    headers = target.setdefault("headers", {})
    if flt.request_header_modifier is not None:
        headers["request"] = _header_ops(flt.request_header_modifier)
    if flt.response_header_modifier is not None:
        headers["response"] = _header_ops(flt.response_header_modifier)


def _rewrite(flt: HTTPRouteFilter) -> dict[str, Any]:
    rw = flt.url_rewrite
    assert rw is not None
    out: dict[str, Any] = {}
    if rw.hostname:
        out["authority"] = rw.hostname
    if rw.path is not None:
        if rw.path.type == "ReplaceFullPath" and rw.path.replace_full_path is not None:
            out["uriRegexRewrite"] = {"match": "/.*", "rewrite": rw.path.replace_full_path}
        elif rw.path.replace_prefix_match is not None:
            out["uri"] = rw.path.replace_prefix_match or "/"
    return out


def _redirect(flt: HTTPRouteFilter) -> dict[str, Any]:
    rd = flt.request_redirect
    assert rd is not None
    out: dict[str, Any] = {"redirectCode": rd.status_code or 302}
    if rd.scheme:
        out["scheme"] = rd.scheme
    if rd.hostname:
        out["authority"] = rd.hostname
    if rd.port is not None:
        out["port"] = rd.port
    elif rd.scheme:
        out["derivePort"] = "FROM_PROTOCOL_DEFAULT"
    if rd.path is not None:
        value = (
            rd.path.replace_full_path
            if rd.path.type == "ReplaceFullPath"
            else rd.path.replace_prefix_match
        )
        if value is not None:
            out["uri"] = value or "/"
    return out
