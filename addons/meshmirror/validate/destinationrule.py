"""DestinationRule and its traffic policies (Istio `ValidateDestinationRule`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshmirror.config.destinations import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    DestinationRule,
    PortTrafficPolicy,
    TrafficPolicy,
)
from meshmirror.diagnostics import Path
from meshmirror.validate.checker import Checker
from meshmirror.validate.destinations import subset_name_error
from meshmirror.validate.names import validate_wildcard_domain


def validate_destination_rule(c: Checker, dr: DestinationRule) -> None:
    spec, sp = dr.spec, ("spec",)
    c.opt(sp + ("host",), validate_wildcard_domain(spec.host), spec.host)
    if spec.traffic_policy is not None:
        _validate_traffic_policy(c, sp + ("trafficPolicy",), spec.traffic_policy)
    names: set[str] = set()
    for i, subset in enumerate(spec.subsets or []):
        p = sp + ("subsets", i)
        if subset is None:
            c.err(p, "subset may not be null")
            continue
        if subset.name in names:
            c.err(p + ("name",), f"duplicate subset names: {subset.name}", subset.name)
        names.add(subset.name)
        c.opt(p + ("name",), subset_name_error(subset.name), subset.name)
        c.labels(p + ("labels",), subset.labels)
        if subset.traffic_policy is not None:
            _validate_traffic_policy(c, p + ("trafficPolicy",), subset.traffic_policy)
    selector = spec.workload_selector
    c.export_to(sp + ("exportTo",), spec.export_to, dr_with_selector=selector is not None)
    if selector is not None:
        c.selector_labels(sp + ("workloadSelector", "matchLabels"), selector.match_labels)
        if not selector.match_labels:
            c.warn(sp + ("workloadSelector",), "workload selector specified without labels")


def _validate_traffic_policy(c: Checker, p: Path, tp: TrafficPolicy) -> None:
    if all(
        getattr(tp, f) is None
        for f in (
            "outlier_detection",
            "connection_pool",
            "load_balancer",
            "tls",
            "port_level_settings",
            "tunnel",
            "proxy_protocol",
        )
    ):
        c.err(p, "traffic policy must have at least one field")
        return
    if tp.tunnel is not None and tp.proxy_protocol is not None:
        c.err(p, "tunnel and proxyProtocol must not be set together")
        return
    _validate_policy_settings(c, p, tp)
    for i, pl in enumerate(tp.port_level_settings or []):
        pp = p + ("portLevelSettings", i)
        if pl is None:
            c.err(pp, "traffic policy may not be null")
            continue
        if pl.port is None:
            c.err(pp, "portTrafficPolicy must have valid port")
        if all(
            getattr(pl, f) is None
            for f in ("outlier_detection", "connection_pool", "load_balancer", "tls")
        ):
            c.err(pp, "port traffic policy must have at least one field")
            continue
        _validate_policy_settings(c, pp, pl)


def _validate_policy_settings(c: Checker, p: Path, tp: TrafficPolicy | PortTrafficPolicy) -> None:
    """The settings a policy and a port-level policy share."""
    _validate_outlier_detection(c, p + ("outlierDetection",), tp.outlier_detection)
    if tp.connection_pool is not None:
        _validate_connection_pool(c, p + ("connectionPool",), tp.connection_pool)
    if tp.tls is not None:
        _validate_client_tls(c, p + ("tls",), tp.tls)


def _validate_outlier_detection(c: Checker, p: Path, od: Mapping[str, Any] | None) -> None:
    # The model keeps outlierDetection as a mapping: read only the typed parts Istio checks.
    if od is None:
        return
    for field in ("baseEjectionTime", "interval"):
        value = od.get(field)
        if isinstance(value, str):
            c.duration(p + (field,), value)
    if od.get("consecutiveErrors"):
        c.warn(
            p + ("consecutiveErrors",),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or "
            "consecutive5xxErrors instead",
        )
    if not od.get("splitExternalLocalOriginErrors") and _positive(
        od.get("consecutiveLocalOriginFailures")
    ):
        c.err(
            p,
            "outlier detection consecutive local origin failures is specified, but split external "
            "local origin errors is set to false",
        )
    for field in ("maxEjectionPercent", "minHealthPercent"):
        value = od.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= 100:
            c.err(p + (field,), f"percentage {value} is not in range 0..100", value)


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _validate_connection_pool(c: Checker, p: Path, cp: ConnectionPoolSettings) -> None:
    if cp.http is None and cp.tcp is None:
        c.err(p, "connection pool must have at least one field")
        return
    if cp.http is not None:
        h, hp = cp.http, p + ("http",)
        for field, attr, text in (
            ("http1MaxPendingRequests", "http1_max_pending_requests", "http1 max pending requests"),
            ("http2MaxRequests", "http2_max_requests", "http2 max requests"),
            (
                "maxRequestsPerConnection",
                "max_requests_per_connection",
                "max requests per connection",
            ),
            ("maxRetries", "max_retries", "max retries"),
            ("maxConcurrentStreams", "max_concurrent_streams", "max concurrent streams"),
        ):
            value = getattr(h, attr)
            if value is not None and value < 0:
                c.err(hp + (field,), f"{text} must be non-negative", value)
        c.duration(hp + ("idleTimeout",), h.idle_timeout)
        if h.h2_upgrade_policy == "UPGRADE" and h.use_client_protocol:
            c.err(hp, "use client protocol must not be true when H2UpgradePolicy is UPGRADE")
    if cp.tcp is not None:
        t, tp = cp.tcp, p + ("tcp",)
        if t.max_connections is not None and t.max_connections < 0:
            c.err(
                tp + ("maxConnections",), "max connections must be non-negative", t.max_connections
            )
        c.duration(tp + ("connectTimeout",), t.connect_timeout)
        c.duration(tp + ("maxConnectionDuration",), t.max_connection_duration)
        # 0s disables the idle timeout, so Istio skips the check for it.
        c.duration(tp + ("idleTimeout",), t.idle_timeout, allow_zero=True)
        for field in ("time", "interval"):
            value = (t.tcp_keepalive or {}).get(field)
            if isinstance(value, str):
                c.duration(tp + ("tcpKeepalive", field), value)


def _validate_client_tls(c: Checker, p: Path, tls: ClientTLSSettings) -> None:
    """Istio `agent.ValidateTLS`."""
    if tls.insecure_skip_verify:
        if tls.mode == "SIMPLE" and (
            tls.ca_certificates or tls.credential_name or tls.subject_alt_names is not None
        ):
            c.err(
                p,
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when "
                "InsecureSkipVerify is set true",
            )
        if tls.mode == "MUTUAL" and (tls.ca_certificates or tls.subject_alt_names is not None):
            c.err(
                p,
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is "
                "set true",
            )
    if tls.mode in ("SIMPLE", "MUTUAL") and tls.credential_name:
        if tls.client_certificate or tls.ca_certificates or tls.private_key or tls.ca_crl:
            c.err(
                p,
                "cannot specify client certificates or CA certificate or CA CRL If "
                "credentialName is set",
            )
        return
    if tls.mode == "MUTUAL":
        if not tls.client_certificate:
            c.err(p, "client certificate required for mutual tls")
        if not tls.private_key:
            c.err(p, "private key required for mutual tls")
