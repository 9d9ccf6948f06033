"""Pydantic models of the Istio and Kubernetes resources meshmirror reads.

Classes keep the API's type names (`VirtualService`, `HTTPMatchRequest`, `HTTPMirrorPolicy`) and
fields are spelled in YAML exactly as the CRDs spell them (camelCase through the alias generator;
the deprecated `mirror_percent` spelling is accepted too). Unknown fields in a known kind are
errors, so a typo never passes silently. Numbers are strict: Kubernetes rejects `"50"` where an
integer belongs, and so do we. Semantic rules (ranges, conflicts, regexes) live in the
validate package.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class Spec(BaseModel):
    """Base of every API object below `spec`: camelCase, strict, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=False,
        strict=True,
        frozen=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        # Kubernetes treats `field: null` as an absent field.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


# --- shared -------------------------------------------------------------------------------------


class Percent(Spec):
    value: float = 0.0


class PortSelector(Spec):
    number: int | None = None


class StringMatch(Spec):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class Destination(Spec):
    host: str = ""
    subset: str | None = None
    port: PortSelector | None = None


class HeaderOperations(Spec):
    set: dict[str, str] | None = None
    add: dict[str, str] | None = None
    remove: list[str] | None = None


class Headers(Spec):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


# --- VirtualService -----------------------------------------------------------------------------


class HTTPMatchRequest(Spec):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    # Values may be explicitly null in YAML; validation reports that as Istio does.
    headers: dict[str, StringMatch | None] | None = None
    port: int | None = None
    source_labels: dict[str, str] | None = None
    gateways: list[str] | None = None
    query_params: dict[str, StringMatch | None] | None = None
    ignore_uri_case: bool | None = None
    without_headers: dict[str, StringMatch | None] | None = None
    source_namespace: str | None = None
    stat_prefix: str | None = None


class HTTPRouteDestination(Spec):
    destination: Destination | None = None
    weight: int | None = None
    headers: Headers | None = None


class RouteDestination(Spec):
    destination: Destination | None = None
    weight: int | None = None


class HTTPRedirect(Spec):
    uri: str | None = None
    authority: str | None = None
    port: int | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: int | None = None


class HTTPBody(Spec):
    string: str | None = None
    bytes: str | None = None  # base64, as in the proto's JSON mapping


class HTTPDirectResponse(Spec):
    status: int = 0
    body: HTTPBody | None = None


class Delegate(Spec):
    name: str | None = None
    namespace: str | None = None


class RegexRewrite(Spec):
    match: str | None = None
    rewrite: str | None = None


class HTTPRewrite(Spec):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None


class HTTPRetry(Spec):
    attempts: int | None = None
    per_try_timeout: str | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: str | None = None


class FaultDelay(Spec):
    fixed_delay: str | None = None
    exponential_delay: str | None = None
    percentage: Percent | None = None
    percent: int | None = None


class FaultAbort(Spec):
    http_status: int | None = None
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None


class HTTPFaultInjection(Spec):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class HTTPMirrorPolicy(Spec):
    destination: Destination | None = None
    percentage: Percent | None = None


class CorsPolicy(Spec):
    allow_origins: list[StringMatch] | None = None
    allow_origin: list[str] | None = None
    allow_methods: list[str] | None = None
    allow_headers: list[str] | None = None
    expose_headers: list[str] | None = None
    max_age: str | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: str | None = None


class HTTPRoute(Spec):
    name: str | None = None
    match: list[HTTPMatchRequest | None] | None = None
    route: list[HTTPRouteDestination | None] | None = None
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: str | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percent: int | None = Field(
        default=None, validation_alias=AliasChoices("mirrorPercent", "mirror_percent")
    )
    mirror_percentage: Percent | None = None
    mirrors: list[HTTPMirrorPolicy | None] | None = None
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None


class TLSMatchAttributes(Spec):
    sni_hosts: list[str] | None = None
    destination_subnets: list[str] | None = None
    port: int | None = None
    source_labels: dict[str, str] | None = None
    gateways: list[str] | None = None
    source_namespace: str | None = None


class L4MatchAttributes(Spec):
    destination_subnets: list[str] | None = None
    port: int | None = None
    source_labels: dict[str, str] | None = None
    gateways: list[str] | None = None
    source_namespace: str | None = None


class TLSRoute(Spec):
    match: list[TLSMatchAttributes] | None = None
    route: list[RouteDestination] | None = None


class TCPRoute(Spec):
    match: list[L4MatchAttributes] | None = None
    route: list[RouteDestination] | None = None


class VirtualServiceSpec(Spec):
    hosts: list[str] | None = None
    gateways: list[str] | None = None
    http: list[HTTPRoute | None] | None = None
    tls: list[TLSRoute] | None = None
    tcp: list[TCPRoute] | None = None
    export_to: list[str] | None = None


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
    port_level_settings: list[PortTrafficPolicy] | None = None
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
    ports: list[ServicePort] | None = None
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] | None = None
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"] | None = None
    endpoints: list[WorkloadEntrySpec] | None = None
    workload_selector: ServiceEntryWorkloadSelector | None = None
    export_to: list[str] | None = None
    subject_alt_names: list[str] | None = None


# --- Gateway ------------------------------------------------------------------------------------


class GatewayPort(Spec):
    number: int = 0
    protocol: str = ""
    name: str = ""
    target_port: int | None = None


class ServerTLSSettings(Spec):
    https_redirect: bool | None = None
    mode: str | None = None
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_crl: str | None = None
    credential_name: str | None = None
    credential_names: list[str] | None = None
    tls_certificates: list[dict[str, Any]] | None = None
    subject_alt_names: list[str] | None = None
    verify_certificate_spki: list[str] | None = None
    verify_certificate_hash: list[str] | None = None
    min_protocol_version: str | None = None
    max_protocol_version: str | None = None
    cipher_suites: list[str] | None = None


class Server(Spec):
    port: GatewayPort | None = None
    bind: str | None = None
    hosts: list[str] | None = None
    tls: ServerTLSSettings | None = None
    name: str | None = None
    default_endpoint: str | None = None


class GatewaySpec(Spec):
    servers: list[Server | None] | None = None
    selector: dict[str, str] | None = None


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


class ObjectMeta(BaseModel):
    # Metadata carries many server-set fields (uid, resourceVersion, managedFields...): allow them.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    name: str = ""
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Resource(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)

    kind_name: ClassVar[str] = ""
    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    # `kubectl get -o yaml` output carries a status; it is ignored.
    status: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class VirtualService(Resource):
    kind_name: ClassVar[str] = "VirtualService"
    spec: VirtualServiceSpec = Field(default_factory=VirtualServiceSpec)


class DestinationRule(Resource):
    kind_name: ClassVar[str] = "DestinationRule"
    spec: DestinationRuleSpec = Field(default_factory=DestinationRuleSpec)


class ServiceEntry(Resource):
    kind_name: ClassVar[str] = "ServiceEntry"
    spec: ServiceEntrySpec = Field(default_factory=ServiceEntrySpec)


class WorkloadEntry(Resource):
    kind_name: ClassVar[str] = "WorkloadEntry"
    spec: WorkloadEntrySpec = Field(default_factory=WorkloadEntrySpec)


class Gateway(Resource):
    kind_name: ClassVar[str] = "Gateway"
    spec: GatewaySpec = Field(default_factory=GatewaySpec)


class KubernetesService(Resource):
    kind_name: ClassVar[str] = "Service"
    spec: KubernetesServiceSpec = Field(default_factory=KubernetesServiceSpec)


ISTIO_NETWORKING = "networking.istio.io"
ISTIO_VERSIONS = ("v1alpha3", "v1beta1", "v1")

#: (group, kind) -> (model, accepted versions). The core group is "".
KINDS: dict[tuple[str, str], tuple[type[Resource], tuple[str, ...]]] = {
    (ISTIO_NETWORKING, "VirtualService"): (VirtualService, ISTIO_VERSIONS),
    (ISTIO_NETWORKING, "DestinationRule"): (DestinationRule, ISTIO_VERSIONS),
    (ISTIO_NETWORKING, "ServiceEntry"): (ServiceEntry, ISTIO_VERSIONS),
    (ISTIO_NETWORKING, "WorkloadEntry"): (WorkloadEntry, ISTIO_VERSIONS),
    (ISTIO_NETWORKING, "Gateway"): (Gateway, ISTIO_VERSIONS),
    ("", "Service"): (KubernetesService, ("v1",)),
}

AnyResource = VirtualService | DestinationRule | ServiceEntry | WorkloadEntry | Gateway
