"""DestinationRules: subsets (label filters over a host's endpoints) and client TLS settings (pure).

`rule_info` reads one DestinationRule into the registry's `DestinationRuleInfo`; `tls_origination`
decides, from the rule and subset policies and the service port, whether a cluster originates TLS.
Which rule applies to a host, and merging rules for the same host, are the registry's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meshmirror.config.destinations import (
    ClientTLSSettings,
    DestinationRule,
    HTTPSettings,
    TrafficPolicy,
)
from meshmirror.config.resources import LoadedResource
from meshmirror.hosts import resolve_short_name
from meshmirror.mesh.clusters import TlsOrigination
from meshmirror.mesh.services import Service
from meshmirror.protocols import CLIENT, HTTP1, HTTP2, SNIFFED, UNSUPPORTED, is_http2


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


def tls_origination(
    rule: DestinationRuleInfo | None, port: int, svc: Service | None, sub: SubsetInfo | None
) -> TlsOrigination | None:
    """The TLS a cluster originates: the DestinationRule's client TLS settings for the port (subset
    first), else TLS by default on an HTTPS service port."""
    settings = _tls_settings(_policies(rule, sub), port)
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


def upstream_protocol(
    rule: DestinationRuleInfo | None, port: int, svc: Service | None, sub: SubsetInfo | None
) -> tuple[str, str]:
    """(the port's protocol, the cluster's upstream protocol), in Istio's order: a
    DestinationRule's `useClientProtocol` (subset first, port level first) keeps the client's;
    a GRPC, GRPC-Web or HTTP2 port, or `h2UpgradePolicy: UPGRADE`, is HTTP/2; an HTTP port is
    HTTP/1.1; a port without a protocol is sniffed. An HTTPS port, whose TLS meshmirror
    originates, negotiates with ALPN what the client offered, as the client's own TLS would
    through a sidecar (Istio passes it through)."""
    sp = svc.port(port) if svc is not None else None
    protocol = sp.protocol if sp is not None else ""
    settings = _http_settings(_policies(rule, sub), port)
    if settings is not None and settings.use_client_protocol:
        return protocol, CLIENT
    if is_http2(protocol):
        return protocol, HTTP2
    if settings is not None and settings.h2_upgrade_policy == "UPGRADE":
        return protocol, HTTP2
    if protocol in ("", UNSUPPORTED):
        return protocol, SNIFFED
    if protocol == "HTTPS":
        return protocol, CLIENT
    return protocol, HTTP1


def _policies(rule: DestinationRuleInfo | None, sub: SubsetInfo | None) -> list[TrafficPolicy]:
    policies: list[TrafficPolicy] = []
    if sub is not None and sub.traffic_policy is not None:
        policies.append(sub.traffic_policy)
    if rule is not None and rule.traffic_policy is not None:
        policies.append(rule.traffic_policy)
    return policies


def _http_settings(policies: Sequence[TrafficPolicy], port: int) -> HTTPSettings | None:
    """`connectionPool.http`: subset policy before the top-level one; within each, the
    port-level setting first."""
    for policy in policies:
        for pls in policy.port_level_settings or ():
            if pls is None or pls.port is None or pls.port.number != port:
                continue
            if pls.connection_pool is not None and pls.connection_pool.http is not None:
                return pls.connection_pool.http
        if policy.connection_pool is not None and policy.connection_pool.http is not None:
            return policy.connection_pool.http
    return None


def _tls_settings(policies: Sequence[TrafficPolicy], port: int) -> ClientTLSSettings | None:
    """Subset policy before the top-level one; within each, the port-level setting first."""
    for policy in policies:
        for pls in policy.port_level_settings or ():
            if pls is None:
                continue
            if pls.port is not None and pls.port.number == port and pls.tls is not None:
                return pls.tls
        if policy.tls is not None:
            return policy.tls
    return None


# --- building ---------------------------------------------------------------------------------


def rule_info(r: LoadedResource, dr: DestinationRule) -> DestinationRuleInfo | None:
    """The rule's host (resolved) and its subsets, the first of each name kept; None without a
    host."""
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
