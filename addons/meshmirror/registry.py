"""Hosts -> endpoints: the slice of Istio's service registry meshmirror needs (pure).

Sources, as istiod reads them:
- ServiceEntry: hosts, ports, `endpoints` (STATIC / DNS), DNS without endpoints resolves the host
  itself, MESH_INTERNAL `workloadSelector` picks WorkloadEntries in the same namespace.
- Kubernetes Service `name.ns.svc.cluster.local`: its `selector` picks WorkloadEntries in the same
  namespace (WorkloadEntries stand in for pods on one machine).
- DestinationRule: subsets (label filters over the host's endpoints) and client TLS settings.

A `Cluster` is Envoy's `outbound|PORT|SUBSET|HOST`. Its endpoints may be empty: the config gives no
address for it, so the reverse-proxy upstream serves routed requests (`passthrough`), and mirrors
to it are skipped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from meshmirror.loader import LoadedResource
from meshmirror.model import (
    ClientTLSSettings,
    DestinationRule,
    KubernetesService,
    ServiceEntry,
    TrafficPolicy,
    WorkloadEntry,
    WorkloadEntrySpec,
)

DOMAIN_SUFFIX = "cluster.local"


def resolve_short_name(host: str, namespace: str) -> str:
    """Istio `ResolveShortnameToFQDN`: `httpbin` in ns `default` ->
    `httpbin.default.svc.cluster.local`; `*`, IPs and names containing a dot are unchanged."""
    if not host or host == "*" or "." in host or _is_ip(host):
        return host
    return f"{host}.{namespace}.svc.{DOMAIN_SUFFIX}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def cluster_name(port: int, subset: str | None, host: str) -> str:
    """Istio `BuildSubsetKey`: `outbound|80||foo.bar`."""
    return f"outbound|{port}|{subset or ''}|{host}"


def host_matches(pattern: str, host: str) -> bool:
    """Does `pattern` (possibly `*.x` or `*`) cover the concrete or wildcard `host`?
    Istio `host.Name.SubsetOf`: `*.foo.com` covers `a.b.foo.com`, not `foo.com`."""
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]
        if host.startswith("*"):
            return host[1:].endswith(suffix)
        return host.endswith(suffix) and len(host) > len(suffix)
    return pattern == host


# --- runtime types ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    weight: int = 1


@dataclass(frozen=True, slots=True)
class TlsOrigination:
    """Originate TLS to the endpoint (DestinationRule `tls.mode: SIMPLE`, or an HTTPS port).
    `sni` None means "the cluster's host"; `ca_file` None means the system trust store."""

    sni: str | None = None
    ca_file: str | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    host: str
    port: int
    subset: str | None
    endpoints: tuple[Endpoint, ...]
    tls: TlsOrigination | None = None

    @property
    def passthrough(self) -> bool:
        """No endpoints in the config: the reverse-proxy upstream serves this cluster."""
        return not self.endpoints


@dataclass(frozen=True, slots=True)
class ServicePortInfo:
    number: int
    name: str
    protocol: str
    target_port: int | None = None
    target_port_name: str | None = None  # Kubernetes named targetPort


@dataclass(frozen=True, slots=True)
class _Instance:
    """A workload (ServiceEntry endpoint or WorkloadEntry) before a service port is chosen."""

    address: str
    ports: Mapping[str, int] = field(hash=False, compare=False)
    labels: Mapping[str, str] = field(hash=False, compare=False)
    weight: int = 1


@dataclass(frozen=True)
class Service:
    """One host of a ServiceEntry or a Kubernetes Service."""

    host: str
    namespace: str
    kind: str  # "ServiceEntry" | "Service"
    ref: str  # ns/name of the defining resource
    ports: tuple[ServicePortInfo, ...]
    instances: tuple[_Instance, ...]
    resolution: str = "STATIC"
    # DNS resolution without endpoints: the host itself is the endpoint.
    self_resolving: bool = False

    def port(self, number: int) -> ServicePortInfo | None:
        for p in self.ports:
            if p.number == number:
                return p
        return None

    def endpoints_for(self, number: int) -> tuple[Endpoint, ...]:
        sp = self.port(number)
        if self.self_resolving:
            if self.host.startswith("*"):
                return ()
            target = (sp.target_port or sp.number) if sp else number
            return (Endpoint(self.host, target, {}, 1),)
        out: list[Endpoint] = []
        for inst in self.instances:
            out.append(
                Endpoint(inst.address, _endpoint_port(inst, sp, number), inst.labels, inst.weight)
            )
        return tuple(out)


def _endpoint_port(inst: _Instance, sp: ServicePortInfo | None, number: int) -> int:
    """Istio's precedence: endpoint.ports[servicePort.name] > targetPort > port number.
    A Kubernetes named targetPort is looked up in the endpoint's ports too."""
    if sp is None:
        return number
    if sp.name and sp.name in inst.ports:
        return inst.ports[sp.name]
    if sp.target_port_name and sp.target_port_name in inst.ports:
        return inst.ports[sp.target_port_name]
    if sp.target_port:
        return sp.target_port
    return sp.number


@dataclass(frozen=True)
class SubsetInfo:
    name: str
    labels: Mapping[str, str]
    traffic_policy: TrafficPolicy | None
    ref: str  # ns/name of the DestinationRule


@dataclass(frozen=True)
class DestinationRuleInfo:
    host: str
    ref: str
    traffic_policy: TrafficPolicy | None
    subsets: Mapping[str, SubsetInfo]


class Registry:
    """Built once from a config set; `cluster()` results are cached per (host, port, subset)."""

    def __init__(
        self,
        services: Mapping[str, Service],
        wildcard_services: Sequence[Service],
        rules: Mapping[str, DestinationRuleInfo],
        wildcard_rules: Sequence[DestinationRuleInfo],
    ) -> None:
        self.services = services
        self.wildcard_services = tuple(wildcard_services)
        self.rules = rules
        self.wildcard_rules = tuple(wildcard_rules)
        self._clusters: dict[tuple[str, int, str | None], Cluster] = {}

    def service(self, host: str) -> Service | None:
        """The service for a concrete host: exact first, then the most specific wildcard host."""
        found = self.services.get(host)
        if found is not None:
            return found
        best: Service | None = None
        for s in self.wildcard_services:
            if host_matches(s.host, host) and (best is None or len(s.host) > len(best.host)):
                best = s
        return best

    def destination_rule(self, host: str) -> DestinationRuleInfo | None:
        found = self.rules.get(host)
        if found is not None:
            return found
        best: DestinationRuleInfo | None = None
        for r in self.wildcard_rules:
            if host_matches(r.host, host) and (best is None or len(r.host) > len(best.host)):
                best = r
        return best

    def subset(self, host: str, name: str) -> SubsetInfo | None:
        rule = self.destination_rule(host)
        return None if rule is None else rule.subsets.get(name)

    def choose_port(self, host: str, number: int | None, listener_port: int) -> int:
        """Istio `GetDestinationCluster`: `port.number` if set; else the service's only port;
        else the listener port."""
        if number:
            return number
        svc = self.service(host)
        if svc is not None and len(svc.ports) == 1:
            return svc.ports[0].number
        return listener_port

    def cluster(self, host: str, port: int, subset: str | None = None) -> Cluster:
        """The cluster for a resolved (FQDN) host and a chosen port. Never fails: an unknown host,
        port or subset yields a cluster without endpoints."""
        subset = subset or None
        key = (host, port, subset)
        found = self._clusters.get(key)
        if found is not None:
            return found
        svc = self.service(host)
        endpoints: tuple[Endpoint, ...] = ()
        if svc is not None and (svc.port(port) is not None or not svc.ports):
            endpoints = svc.endpoints_for(port)
        sub: SubsetInfo | None = None
        if subset is not None:
            sub = self.subset(host, subset)
            if sub is None:
                # Istio builds no such cluster; Envoy drops mirrors to it and 503s routes.
                endpoints = ()
            elif sub.labels:
                want = sub.labels.items()
                endpoints = tuple(e for e in endpoints if want <= e.labels.items())
        cluster = Cluster(
            name=cluster_name(port, subset, host),
            host=host,
            port=port,
            subset=subset,
            endpoints=endpoints,
            tls=self._tls(host, port, svc, sub),
        )
        self._clusters[key] = cluster
        return cluster

    def _tls(
        self, host: str, port: int, svc: Service | None, sub: SubsetInfo | None
    ) -> TlsOrigination | None:
        rule = self.destination_rule(host)
        policies: list[TrafficPolicy] = []
        if sub is not None and sub.traffic_policy is not None:
            policies.append(sub.traffic_policy)
        if rule is not None and rule.traffic_policy is not None:
            policies.append(rule.traffic_policy)
        settings = _tls_settings(policies, port)
        if settings is not None and settings.mode is not None:
            if settings.mode == "SIMPLE":
                return TlsOrigination(
                    sni=settings.sni or None,
                    ca_file=settings.ca_certificates or None,
                    insecure_skip_verify=bool(settings.insecure_skip_verify),
                )
            # DISABLE turns origination off; MUTUAL / ISTIO_MUTUAL need certificates meshmirror
            # does not hold (validation warns), so they fall back to plain text too.
            return None
        sp = svc.port(port) if svc is not None else None
        if sp is not None and sp.protocol == "HTTPS":
            return TlsOrigination()
        return None


def _tls_settings(policies: Sequence[TrafficPolicy], port: int) -> ClientTLSSettings | None:
    """Subset policy before the top-level one; within each, the port-level setting first."""
    for policy in policies:
        for pls in policy.port_level_settings or ():
            if pls.port is not None and pls.port.number == port and pls.tls is not None:
                return pls.tls
        if policy.tls is not None:
            return policy.tls
    return None


# --- building ---------------------------------------------------------------------------------


def build_registry(resources: Iterable[LoadedResource]) -> Registry:
    resources = list(resources)
    workload_entries: list[tuple[str, WorkloadEntrySpec]] = [
        (r.namespace, r.obj.spec) for r in resources if isinstance(r.obj, WorkloadEntry)
    ]
    services: dict[str, Service] = {}
    wildcard_services: list[Service] = []
    rules: dict[str, DestinationRuleInfo] = {}
    wildcard_rules: list[DestinationRuleInfo] = []

    def add_service(svc: Service) -> None:
        # The first definition of a host wins (config order), as for VirtualService hosts.
        if svc.host.startswith("*"):
            if all(s.host != svc.host for s in wildcard_services):
                wildcard_services.append(svc)
        elif svc.host not in services:
            services[svc.host] = svc

    for r in resources:
        obj = r.obj
        if isinstance(obj, ServiceEntry):
            for entry_svc in _services_of_entry(r, obj, workload_entries):
                add_service(entry_svc)
        elif isinstance(obj, KubernetesService):
            add_service(_service_of_kubernetes(r, obj, workload_entries))
        elif isinstance(obj, DestinationRule):
            info = _rule_info(r, obj)
            if info is None:
                continue
            existing = (
                next((w for w in wildcard_rules if w.host == info.host), None)
                if info.host.startswith("*")
                else rules.get(info.host)
            )
            if existing is not None:
                # A later rule for the same host only adds subsets it names first.
                merged = dict(info.subsets)
                merged.update(existing.subsets)
                info = DestinationRuleInfo(
                    existing.host, existing.ref, existing.traffic_policy, merged
                )
                if info.host.startswith("*"):
                    wildcard_rules[:] = [info if w.host == info.host else w for w in wildcard_rules]
                else:
                    rules[info.host] = info
            elif info.host.startswith("*"):
                wildcard_rules.append(info)
            else:
                rules[info.host] = info
    return Registry(services, wildcard_services, rules, wildcard_rules)


def _labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return selector.items() <= labels.items()


def _instance(spec: WorkloadEntrySpec) -> _Instance | None:
    if not spec.address:
        return None
    return _Instance(
        address=spec.address,
        ports=dict(spec.ports or {}),
        labels=dict(spec.labels or {}),
        weight=spec.weight or 1,
    )


def _selected(
    namespace: str,
    selector: Mapping[str, str],
    workload_entries: Sequence[tuple[str, WorkloadEntrySpec]],
) -> list[_Instance]:
    out: list[_Instance] = []
    for ns, spec in workload_entries:
        if ns == namespace and _labels_match(selector, spec.labels or {}):
            inst = _instance(spec)
            if inst is not None:
                out.append(inst)
    return out


def _services_of_entry(
    r: LoadedResource,
    se: ServiceEntry,
    workload_entries: Sequence[tuple[str, WorkloadEntrySpec]],
) -> list[Service]:
    spec = se.spec
    ports = tuple(
        ServicePortInfo(
            number=p.number,
            name=p.name,
            protocol=(p.protocol or "").upper(),
            target_port=p.target_port or None,
        )
        for p in spec.ports or ()
    )
    resolution = spec.resolution or "NONE"
    instances: list[_Instance] = []
    self_resolving = False
    if spec.workload_selector is not None:
        instances = _selected(r.namespace, spec.workload_selector.labels or {}, workload_entries)
    elif spec.endpoints:
        if resolution in ("STATIC", "DNS", "DNS_ROUND_ROBIN"):
            instances = [i for i in (_instance(e) for e in spec.endpoints) if i is not None]
    elif resolution in ("DNS", "DNS_ROUND_ROBIN"):
        self_resolving = True
    out: list[Service] = []
    for host in spec.hosts or ():
        if not host:
            continue
        out.append(
            Service(
                host=resolve_short_name(host, r.namespace),
                namespace=r.namespace,
                kind="ServiceEntry",
                ref=r.ref,
                ports=ports,
                instances=tuple(instances),
                resolution=resolution,
                self_resolving=self_resolving,
            )
        )
    return out


def _service_of_kubernetes(
    r: LoadedResource,
    svc: KubernetesService,
    workload_entries: Sequence[tuple[str, WorkloadEntrySpec]],
) -> Service:
    spec = svc.spec
    ports: list[ServicePortInfo] = []
    for p in spec.ports or ():
        tp = p.target_port
        ports.append(
            ServicePortInfo(
                number=p.port,
                name=p.name or "",
                protocol=(p.app_protocol or p.protocol or "").upper(),
                target_port=tp if isinstance(tp, int) and tp > 0 else None,
                target_port_name=tp if isinstance(tp, str) and tp else None,
            )
        )
    host = f"{r.name}.{r.namespace}.svc.{DOMAIN_SUFFIX}"
    instances: list[_Instance] = []
    if (spec.type or "") == "ExternalName" and spec.external_name:
        # The alias resolves to the external name on each service port.
        instances = [_Instance(spec.external_name, {}, {}, 1)]
        ports = [ServicePortInfo(p.number, p.name, p.protocol, p.number, None) for p in ports]
    elif spec.selector:
        instances = _selected(r.namespace, spec.selector, workload_entries)
    return Service(
        host=host,
        namespace=r.namespace,
        kind="Service",
        ref=r.ref,
        ports=tuple(ports),
        instances=tuple(instances),
    )


def _rule_info(r: LoadedResource, dr: DestinationRule) -> DestinationRuleInfo | None:
    spec = dr.spec
    if not spec.host:
        return None
    host = resolve_short_name(spec.host, r.namespace)
    subsets: dict[str, SubsetInfo] = {}
    for s in spec.subsets or ():
        if s is None or not s.name or s.name in subsets:
            continue
        subsets[s.name] = SubsetInfo(s.name, dict(s.labels or {}), s.traffic_policy, r.ref)
    return DestinationRuleInfo(host, r.ref, spec.traffic_policy, subsets)
