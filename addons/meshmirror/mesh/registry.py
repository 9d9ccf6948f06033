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

This module holds the `Registry` (which service and which DestinationRule answer a host, and the
cached clusters) and `build_registry`. Beside it in `mesh/`, each importable on its own:

    clusters           Cluster / Endpoint / TlsOrigination and `cluster_name` (request-path types)
    services           ServiceEntry / Kubernetes Service / WorkloadEntry -> Service and endpoints
    destination_rules  DestinationRule -> subsets; TLS origination from traffic policies

Host-name rules (the cluster domain, short names, wildcards) are the `hosts` leaf's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from meshmirror.config.destinations import (
    DestinationRule,
    KubernetesService,
    ServiceEntry,
    WorkloadEntry,
    WorkloadEntrySpec,
)
from meshmirror.config.resources import LoadedResource
from meshmirror.hosts import host_matches
from meshmirror.mesh.clusters import Cluster, Endpoint, TlsOrigination, cluster_name
from meshmirror.mesh.destination_rules import (
    DestinationRuleInfo,
    SubsetInfo,
    rule_info,
    tls_origination,
    upstream_protocol,
)
from meshmirror.mesh.services import (
    Service,
    service_of_kubernetes,
    services_of_entry,
)


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
        protocol, upstream = upstream_protocol(self.destination_rule(host), port, svc, sub)
        cluster = Cluster(
            name=cluster_name(port, subset, host),
            host=host,
            port=port,
            subset=subset,
            endpoints=endpoints,
            tls=self._tls(host, port, svc, sub),
            protocol=protocol,
            upstream=upstream,
        )
        self._clusters[key] = cluster
        return cluster

    def _tls(
        self, host: str, port: int, svc: Service | None, sub: SubsetInfo | None
    ) -> TlsOrigination | None:
        return tls_origination(self.destination_rule(host), port, svc, sub)


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
            for entry_svc in services_of_entry(r, obj, workload_entries):
                add_service(entry_svc)
        elif isinstance(obj, KubernetesService):
            add_service(service_of_kubernetes(r, obj, workload_entries))
        elif isinstance(obj, DestinationRule):
            info = rule_info(r, obj)
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
