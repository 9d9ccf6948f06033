"""Pydantic models of Istio's `VirtualService`: its HTTP, TLS and TCP routes and their parts.

The largest Istio kind, kept apart so the routing vocabulary (`HTTPRoute`, `HTTPMatchRequest`,
`HTTPMirrorPolicy` and the rest) reads in one place. Conventions and shared types come from
base.py.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AliasChoices, Field

from meshmirror.config.base import Destination, Headers, Percent, Resource, Spec, StringMatch

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
    # Istio 1.31: replaces the matched prefix (Envoy RedirectAction.prefix_rewrite).
    prefix_rewrite: str | None = None


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
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None


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


# Null list items are kept (`X | None`) so that validation answers them with Istio's messages.


class TLSRoute(Spec):
    match: list[TLSMatchAttributes | None] | None = None
    route: list[RouteDestination | None] | None = None


class TCPRoute(Spec):
    match: list[L4MatchAttributes | None] | None = None
    route: list[RouteDestination | None] | None = None


class VirtualServiceSpec(Spec):
    hosts: list[str] | None = None
    gateways: list[str] | None = None
    http: list[HTTPRoute | None] | None = None
    tls: list[TLSRoute | None] | None = None
    tcp: list[TCPRoute | None] | None = None
    export_to: list[str] | None = None


class VirtualService(Resource):
    kind_name: ClassVar[str] = "VirtualService"
    spec: VirtualServiceSpec = Field(default_factory=VirtualServiceSpec)
