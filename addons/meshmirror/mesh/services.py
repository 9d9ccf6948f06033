"""ServiceEntry and Kubernetes Service resources -> `Service`s with their workloads (pure).

Sources, as istiod reads them:
- ServiceEntry: hosts, ports, `endpoints` (STATIC / DNS), DNS without endpoints resolves the host
  itself, MESH_INTERNAL `workloadSelector` picks WorkloadEntries in the same namespace.
- Kubernetes Service `name.ns.svc.cluster.local`: its `selector` picks WorkloadEntries in the same
  namespace (WorkloadEntries stand in for pods on one machine).

A `Service` knows its ports and workloads and turns them into `Endpoint`s for one port, with
Istio's port precedence. Which service answers a host, and DestinationRule subsets, are the
registry's business (registry.py, destination_rules.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from meshmirror.config.destinations import KubernetesService, ServiceEntry, WorkloadEntrySpec
from meshmirror.config.resources import LoadedResource
from meshmirror.hosts import DOMAIN_SUFFIX, resolve_short_name
from meshmirror.mesh.clusters import Endpoint
from meshmirror.protocols import istio_protocol, kubernetes_port_protocol


@dataclass(frozen=True, slots=True)
class ServicePortInfo:
    number: int
    name: str
    protocol: str  # Istio's canonical name (`protocols.istio_protocol`); UNSUPPORTED when unset
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


# --- building ---------------------------------------------------------------------------------


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


def services_of_entry(
    r: LoadedResource,
    se: ServiceEntry,
    workload_entries: Sequence[tuple[str, WorkloadEntrySpec]],
) -> list[Service]:
    """One `Service` per non-empty host of the ServiceEntry, all sharing its ports and workloads."""
    spec = se.spec
    ports = tuple(
        ServicePortInfo(
            number=p.number,
            name=p.name,
            protocol=istio_protocol(p.protocol),
            target_port=p.target_port or None,
        )
        for p in spec.ports or ()
        if p is not None
    )
    resolution = spec.resolution or "NONE"
    instances: list[_Instance] = []
    self_resolving = False
    if spec.workload_selector is not None:
        instances = _selected(r.namespace, spec.workload_selector.labels or {}, workload_entries)
    elif spec.endpoints:
        if resolution in ("STATIC", "DNS", "DNS_ROUND_ROBIN"):
            instances = [
                i for i in (_instance(e) for e in spec.endpoints if e is not None) if i is not None
            ]
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


def service_of_kubernetes(
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
                protocol=kubernetes_port_protocol(p.port, p.name, p.protocol, p.app_protocol),
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
