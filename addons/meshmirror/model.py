"""Pydantic models of the Istio and Kubernetes resources meshmirror reads: the public face.

Classes keep the API's type names (`VirtualService`, `HTTPMatchRequest`, `HTTPMirrorPolicy`) and
fields are spelled in YAML exactly as the CRDs spell them (camelCase through the alias generator;
the deprecated `mirror_percent` spelling is accepted too). Unknown fields in a known kind are
errors, so a typo never passes silently. Numbers are strict: Kubernetes rejects `"50"` where an
integer belongs, and so do we. Semantic rules (ranges, conflicts, regexes) live in the
validate package.

The models themselves live beside this module, one concern each: model_base.py (the `Spec` and
`Resource` conventions and the shared types), model_virtualservice.py, model_destinations.py
(DestinationRule, ServiceEntry, WorkloadEntry, Kubernetes Service) and model_istio_gateway.py.
This module re-exports them all, so callers import from `meshmirror.model` only, and joins the
kinds into `KINDS`, the table the loader reads.
"""

from __future__ import annotations

from meshmirror.model_base import (
    Destination,
    HeaderOperations,
    Headers,
    ObjectMeta,
    Percent,
    PortSelector,
    Resource,
    Spec,
    StringMatch,
)
from meshmirror.model_destinations import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    DestinationRule,
    DestinationRuleSpec,
    HTTPSettings,
    KubernetesService,
    KubernetesServiceSpec,
    PortTrafficPolicy,
    ServiceEntry,
    ServiceEntrySpec,
    ServiceEntryWorkloadSelector,
    ServicePort,
    ServicePortK8s,
    Subset,
    TCPSettings,
    TrafficPolicy,
    WorkloadEntry,
    WorkloadEntrySpec,
    WorkloadSelector,
)
from meshmirror.model_istio_gateway import (
    Gateway,
    GatewayPort,
    GatewaySpec,
    Server,
    ServerTLSSettings,
)
from meshmirror.model_virtualservice import (
    CorsPolicy,
    Delegate,
    FaultAbort,
    FaultDelay,
    HTTPBody,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPMirrorPolicy,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    HTTPRoute,
    HTTPRouteDestination,
    L4MatchAttributes,
    RegexRewrite,
    RouteDestination,
    TCPRoute,
    TLSMatchAttributes,
    TLSRoute,
    VirtualService,
    VirtualServiceSpec,
)

__all__ = [
    # model_base
    "Destination",
    "HeaderOperations",
    "Headers",
    "ObjectMeta",
    "Percent",
    "PortSelector",
    "Resource",
    "Spec",
    "StringMatch",
    # model_virtualservice
    "CorsPolicy",
    "Delegate",
    "FaultAbort",
    "FaultDelay",
    "HTTPBody",
    "HTTPDirectResponse",
    "HTTPFaultInjection",
    "HTTPMatchRequest",
    "HTTPMirrorPolicy",
    "HTTPRedirect",
    "HTTPRetry",
    "HTTPRewrite",
    "HTTPRoute",
    "HTTPRouteDestination",
    "L4MatchAttributes",
    "RegexRewrite",
    "RouteDestination",
    "TCPRoute",
    "TLSMatchAttributes",
    "TLSRoute",
    "VirtualService",
    "VirtualServiceSpec",
    # model_destinations
    "ClientTLSSettings",
    "ConnectionPoolSettings",
    "DestinationRule",
    "DestinationRuleSpec",
    "HTTPSettings",
    "KubernetesService",
    "KubernetesServiceSpec",
    "PortTrafficPolicy",
    "ServiceEntry",
    "ServiceEntrySpec",
    "ServiceEntryWorkloadSelector",
    "ServicePort",
    "ServicePortK8s",
    "Subset",
    "TCPSettings",
    "TrafficPolicy",
    "WorkloadEntry",
    "WorkloadEntrySpec",
    "WorkloadSelector",
    # model_istio_gateway
    "Gateway",
    "GatewayPort",
    "GatewaySpec",
    "Server",
    "ServerTLSSettings",
    # this module
    "ISTIO_NETWORKING",
    "ISTIO_VERSIONS",
    "KINDS",
    "AnyResource",
]

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
