"""DestinationRules: subsets (label filters over a host's endpoints) and client TLS settings (pure).

`rule_info` reads one DestinationRule into the registry's `DestinationRuleInfo`; `tls_origination`
decides, from the rule and subset policies and the service port, whether a cluster originates TLS.
Which rule applies to a host, and merging rules for the same host, are the registry's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meshmirror.config.destinations import ClientTLSSettings, DestinationRule, TrafficPolicy
from meshmirror.config.resources import LoadedResource
from meshmirror.hosts import resolve_short_name
from meshmirror.mesh.clusters import TlsOrigination
from meshmirror.mesh.services import Service


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
