"""Pydantic models of the Kubernetes Gateway API resources meshmirror reads (GW-TYPES).

`gateway.networking.k8s.io` v1 (and v1beta1, the same schema) `Gateway` and `HTTPRoute`, with the
conventions of base.py: the API's type names, camelCase YAML spellings, strict numbers, unknown
fields rejected. Enumerations the CRD's OpenAPI schema closes (path match types, methods, filter
types) are `Literal`s, so a wrong value is a schema error as `kubectl apply` makes it; the CEL
rules (exclusive fields, ranges, "set iff type") live in validate/gateway_api.py. The class names
clash with Istio's (`Gateway`, `HTTPRoute`): import this module, not its names.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from meshmirror.config.base import Resource, Spec

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_VERSIONS = ("v1", "v1beta1")

PathMatchType = Literal["Exact", "PathPrefix", "RegularExpression"]
HeaderMatchType = Literal["Exact", "RegularExpression"]
HTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
FilterType = Literal[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
    "ExtensionRef",
    "CORS",
]


# --- shared -------------------------------------------------------------------------------------


class ParentReference(Spec):
    group: str | None = None  # default gateway.networking.k8s.io
    kind: str | None = None  # default Gateway
    namespace: str | None = None
    name: str = ""
    section_name: str | None = None
    port: int | None = None


class BackendObjectReference(Spec):
    group: str | None = None  # default "" (core)
    kind: str | None = None  # default Service
    name: str = ""
    namespace: str | None = None
    port: int | None = None


class LocalObjectReference(Spec):
    group: str = ""
    kind: str = ""
    name: str = ""


# --- Gateway ------------------------------------------------------------------------------------


class RouteNamespaces(Spec):
    from_: Literal["All", "Same", "Selector"] | None = Field(default=None, alias="from")
    selector: dict[str, object] | None = None


class RouteGroupKind(Spec):
    group: str | None = None
    kind: str = ""


class AllowedRoutes(Spec):
    namespaces: RouteNamespaces | None = None
    kinds: list[RouteGroupKind] | None = None


class Listener(Spec):
    name: str = ""
    hostname: str | None = None
    port: int = 0
    protocol: str = ""
    tls: dict[str, object] | None = None
    allowed_routes: AllowedRoutes | None = None


class GatewayAddress(Spec):
    type: str | None = None
    value: str = ""


class GatewaySpec(Spec):
    gateway_class_name: str = ""
    listeners: list[Listener] | None = None
    addresses: list[GatewayAddress] | None = None
    infrastructure: dict[str, object] | None = None


# --- HTTPRoute ----------------------------------------------------------------------------------


class HTTPPathMatch(Spec):
    type: PathMatchType = "PathPrefix"
    value: str = "/"


class HTTPHeaderMatch(Spec):
    type: HeaderMatchType = "Exact"
    name: str = ""
    value: str = ""


class HTTPQueryParamMatch(Spec):
    type: HeaderMatchType = "Exact"
    name: str = ""
    value: str = ""


class HTTPRouteMatch(Spec):
    path: HTTPPathMatch | None = None
    headers: list[HTTPHeaderMatch] | None = None
    query_params: list[HTTPQueryParamMatch] | None = None
    method: HTTPMethod | None = None


class HTTPHeader(Spec):
    name: str = ""
    value: str = ""


class HTTPHeaderFilter(Spec):
    set: list[HTTPHeader] | None = None
    add: list[HTTPHeader] | None = None
    remove: list[str] | None = None


class HTTPPathModifier(Spec):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


class HTTPRequestRedirectFilter(Spec):
    scheme: Literal["http", "https"] | None = None
    hostname: str | None = None
    path: HTTPPathModifier | None = None
    port: int | None = None
    status_code: int | None = None  # default 302


class HTTPURLRewriteFilter(Spec):
    hostname: str | None = None
    path: HTTPPathModifier | None = None


class Fraction(Spec):
    numerator: int = 0
    denominator: int = 100


class HTTPRequestMirrorFilter(Spec):
    backend_ref: BackendObjectReference = Field(default_factory=BackendObjectReference)
    percent: int | None = None
    fraction: Fraction | None = None


class HTTPRouteFilter(Spec):
    type: FilterType
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = Field(default=None, alias="urlRewrite")
    extension_ref: LocalObjectReference | None = None
    cors: dict[str, object] | None = None


class HTTPBackendRef(Spec):
    group: str | None = None
    kind: str | None = None
    name: str = ""
    namespace: str | None = None
    port: int | None = None
    weight: int | None = None  # default 1
    filters: list[HTTPRouteFilter] | None = None

    def object_ref(self) -> BackendObjectReference:
        return BackendObjectReference.model_construct(
            group=self.group,
            kind=self.kind,
            name=self.name,
            namespace=self.namespace,
            port=self.port,
        )


class HTTPRouteTimeouts(Spec):
    request: str | None = None
    backend_request: str | None = None


class HTTPRouteRule(Spec):
    name: str | None = None
    matches: list[HTTPRouteMatch] | None = None
    filters: list[HTTPRouteFilter] | None = None
    backend_refs: list[HTTPBackendRef] | None = None
    timeouts: HTTPRouteTimeouts | None = None
    retry: dict[str, object] | None = None
    session_persistence: dict[str, object] | None = None


class HTTPRouteSpec(Spec):
    parent_refs: list[ParentReference] | None = None
    hostnames: list[str] | None = None
    rules: list[HTTPRouteRule] | None = None


# --- resources ----------------------------------------------------------------------------------


class Gateway(Resource):
    kind_name: ClassVar[str] = "Gateway"
    spec: GatewaySpec = Field(default_factory=GatewaySpec)


class HTTPRoute(Resource):
    kind_name: ClassVar[str] = "HTTPRoute"
    spec: HTTPRouteSpec = Field(default_factory=HTTPRouteSpec)


#: Joined with model.KINDS by the loader: keyed by group, so this `Gateway` never meets Istio's.
GATEWAY_API_KINDS: dict[tuple[str, str], tuple[type[Resource], tuple[str, ...]]] = {
    (GATEWAY_API_GROUP, "Gateway"): (Gateway, GATEWAY_API_VERSIONS),
    (GATEWAY_API_GROUP, "HTTPRoute"): (HTTPRoute, GATEWAY_API_VERSIONS),
}

#: Istio marks the VirtualServices it generates from Gateway API routes with this annotation
#: (value "gateway"); route translation then uses Gateway API semantics (element-wise PathPrefix).
ROUTE_SEMANTICS_ANNOTATION = "internal.istio.io/route-semantics"
ROUTE_SEMANTICS_GATEWAY = "gateway"
