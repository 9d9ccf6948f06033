"""Pydantic models of the kinds a route's destination host resolves through.

`DestinationRule` (subsets and traffic policy), `ServiceEntry` and `WorkloadEntry` (hosts and
endpoints declared to the mesh) and the Kubernetes `Service`: the inputs the registry turns into
hosts -> endpoints and subsets. Conventions and shared types come from base.py.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from meshmirror.config.base import PortSelector, Resource, Spec

# --- DestinationRule ----------------------------------------------------------------------------


class ClientTLSSettings(Spec):
    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] | None = None
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] | None = None
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: str | None = None


class TCPSettings(Spec):
    max_connections: int | None = None
    connect_timeout: str | None = None
    tcp_keepalive: dict[str, Any] | None = None
    max_connection_duration: str | None = None
    idle_timeout: str | None = None


class HTTPSettings(Spec):
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: str | None = None
    h2_upgrade_policy: str | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: int | None = None


class ConnectionPoolSettings(Spec):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class PortTrafficPolicy(Spec):
    port: PortSelector | None = None
    load_balancer: dict[str, Any] | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: dict[str, Any] | None = None
    tls: ClientTLSSettings | None = None


class TrafficPolicy(Spec):
    load_balancer: dict[str, Any] | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: dict[str, Any] | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy | None] | None = None
    tunnel: dict[str, Any] | None = None
    proxy_protocol: dict[str, Any] | None = None


class Subset(Spec):
    name: str = ""
    labels: dict[str, str] | None = None
    traffic_policy: TrafficPolicy | None = None


class WorkloadSelector(Spec):
    match_labels: dict[str, str] | None = None


class DestinationRuleSpec(Spec):
    host: str = ""
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset | None] | None = None
    export_to: list[str] | None = None
    workload_selector: WorkloadSelector | None = None


# --- ServiceEntry / WorkloadEntry ---------------------------------------------------------------


class ServicePort(Spec):
    number: int = 0
    protocol: str | None = None
    name: str = ""
    target_port: int | None = None


class WorkloadEntrySpec(Spec):
    address: str | None = None
    ports: dict[str, int] | None = None
    labels: dict[str, str] | None = None
    network: str | None = None
    locality: str | None = None
    weight: int | None = None
    service_account: str | None = None


class ServiceEntryWorkloadSelector(Spec):
    labels: dict[str, str] | None = None


class ServiceEntrySpec(Spec):
    hosts: list[str] | None = None
    addresses: list[str] | None = None
    # Null items are kept for validation to answer with Istio's messages.
    ports: list[ServicePort | None] | None = None
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] | None = None
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"] | None = None
    endpoints: list[WorkloadEntrySpec | None] | None = None
    workload_selector: ServiceEntryWorkloadSelector | None = None
    export_to: list[str] | None = None
    subject_alt_names: list[str] | None = None


# --- Kubernetes Service -------------------------------------------------------------------------


class ServicePortK8s(Spec):
    name: str | None = None
    port: int = 0
    target_port: int | str | None = None
    protocol: str | None = None
    app_protocol: str | None = None
    node_port: int | None = None


class KubernetesServiceSpec(Spec):
    ports: list[ServicePortK8s] | None = None
    selector: dict[str, str] | None = None
    type: str | None = None
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    cluster_ips: list[str] | None = Field(default=None, alias="clusterIPs")
    external_name: str | None = None
    session_affinity: str | None = None
    ip_families: list[str] | None = None
    ip_family_policy: str | None = None
    external_traffic_policy: str | None = None
    internal_traffic_policy: str | None = None
    load_balancer_ip: str | None = Field(default=None, alias="loadBalancerIP")
    publish_not_ready_addresses: bool | None = None


# --- resources ----------------------------------------------------------------------------------


class DestinationRule(Resource):
    kind_name: ClassVar[str] = "DestinationRule"
    spec: DestinationRuleSpec = Field(default_factory=DestinationRuleSpec)


class ServiceEntry(Resource):
    kind_name: ClassVar[str] = "ServiceEntry"
    spec: ServiceEntrySpec = Field(default_factory=ServiceEntrySpec)


class WorkloadEntry(Resource):
    kind_name: ClassVar[str] = "WorkloadEntry"
    spec: WorkloadEntrySpec = Field(default_factory=WorkloadEntrySpec)


class KubernetesService(Resource):
    kind_name: ClassVar[str] = "Service"
    spec: KubernetesServiceSpec = Field(default_factory=KubernetesServiceSpec)
