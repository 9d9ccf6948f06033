"""Envoy clusters for a route table: one per destination and mirror, with its endpoints, TLS
origination and upstream HTTP protocol, and one for the reverse-proxy upstream.

Each is Istio's `outbound|PORT|SUBSET|HOST` as meshmirror resolved it (`mesh.clusters.Cluster`):
the endpoints the proxy sends to, TLS as the proxy originates it (DestinationRule `tls` SIMPLE, an
HTTPS port), the upstream protocol as `RouteTable.upstream_protocol` decides it (Envoy's
`HttpProtocolOptions`: HTTP/1.1, HTTP/2, or the client's with `use_downstream_protocol_config`).
A destination without endpoints in the config is served by the reverse-proxy upstream, in
meshmirror as here: its cluster gets the upstream's address.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import certifi

from meshmirror.hosts import is_ip
from meshmirror.mesh.clusters import Cluster, Endpoint
from meshmirror.protocols import CLIENT, HTTP1, HTTP2
from meshmirror.routing.table import RouteTable

#: The cluster of the reverse-proxy upstream (requests no route claims, destinations without
#: endpoints in the config).
UPSTREAM_CLUSTER = "meshmirror|upstream"
# Istio's default connect timeout (meshConfig.connectTimeout).
CONNECT_TIMEOUT = "10s"

_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TLS_CONTEXT = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@dataclass(frozen=True, slots=True)
class Upstream:
    """The reverse-proxy upstream: `mitmdump --mode reverse:URL` (`--upstream URL`), reached
    over HTTP/2 with `mirror_upstream_http2`; else HTTP/1.1 in plain text and the client's
    protocol over TLS, as mitmproxy reaches it."""

    host: str
    port: int
    tls: bool = False
    http2: bool = False

    @property
    def protocol(self) -> str:
        if self.http2:
            return HTTP2
        return CLIENT if self.tls else HTTP1


def table_clusters(table: RouteTable) -> Iterator[tuple[Cluster, bool]]:
    """Every cluster the table's routes name, once, in table order: (cluster, routed), where
    `routed` says a route sends requests to it (not only copies)."""
    seen: dict[str, bool] = {}
    order: list[Cluster] = []
    for vh in table.virtual_hosts:
        for route in vh.routes:
            for cluster, routed in [
                *((wc.cluster, True) for wc in route.clusters),
                *((m.cluster, False) for m in route.mirrors),
            ]:
                if cluster.name not in seen:
                    order.append(cluster)
                    seen[cluster.name] = routed
                else:
                    seen[cluster.name] = seen[cluster.name] or routed
    for cluster in order:
        yield cluster, seen[cluster.name]


def envoy_clusters(table: RouteTable, upstream: Upstream | None) -> list[dict[str, Any]]:
    """The table's clusters, then the reverse-proxy upstream's (when there is one)."""
    out: list[dict[str, Any]] = []
    for cluster, routed in table_clusters(table):
        if cluster.passthrough and routed and upstream is not None:
            out.append(upstream_cluster(upstream, name=cluster.name))
            continue
        out.append(
            cluster_config(
                cluster.name,
                cluster.endpoints,
                table.upstream_protocol(cluster),
                tls=cluster.tls is not None,
                sni=(cluster.tls.sni or cluster.host) if cluster.tls is not None else None,
                ca_file=cluster.tls.ca_file if cluster.tls is not None else None,
                verify=cluster.tls is None or not cluster.tls.insecure_skip_verify,
            )
        )
    if upstream is not None:
        out.append(upstream_cluster(upstream))
    return out


def upstream_cluster(upstream: Upstream, *, name: str = UPSTREAM_CLUSTER) -> dict[str, Any]:
    return cluster_config(
        name,
        (Endpoint(upstream.host, upstream.port),),
        upstream.protocol,
        tls=upstream.tls,
        sni=upstream.host if upstream.tls and not is_ip(upstream.host) else None,
        ca_file=None,
        verify=True,
    )


def cluster_config(
    name: str,
    endpoints: tuple[Endpoint, ...],
    protocol: str,
    *,
    tls: bool,
    sni: str | None,
    ca_file: str | None,
    verify: bool,
) -> dict[str, Any]:
    """One Envoy `Cluster`: STATIC when every address is an IP, else STRICT_DNS (a ServiceEntry
    with DNS resolution); round robin, as meshmirror picks endpoints."""
    static = all(is_ip(e.address) for e in endpoints)
    out: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if static else "STRICT_DNS",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
    }
    if not static:
        out["dns_lookup_family"] = "V4_PREFERRED"
    out["load_assignment"] = {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [_lb_endpoint(e) for e in endpoints]}] if endpoints else [],
    }
    out["typed_extension_protocol_options"] = {_PROTOCOL_OPTIONS: _protocol_options(protocol)}
    if tls:
        out["transport_socket"] = _tls_socket(protocol, sni, ca_file, verify)
    return out


def _lb_endpoint(e: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {
        "endpoint": {"address": {"socket_address": {"address": e.address, "port_value": e.port}}}
    }
    if e.weight != 1:
        out["load_balancing_weight"] = e.weight
    return out


def _protocol_options(protocol: str) -> dict[str, Any]:
    """Istio's cluster protocol options: explicit HTTP/1.1 or HTTP/2, or the client's."""
    out: dict[str, Any] = {"@type": f"type.googleapis.com/{_PROTOCOL_OPTIONS}"}
    if protocol == HTTP2:
        out["explicit_http_config"] = {"http2_protocol_options": {}}
    elif protocol == CLIENT:
        out["use_downstream_protocol_config"] = {
            "http_protocol_options": {},
            "http2_protocol_options": {},
        }
    else:
        out["explicit_http_config"] = {"http_protocol_options": {}}
    return out


def _tls_socket(
    protocol: str, sni: str | None, ca_file: str | None, verify: bool
) -> dict[str, Any]:
    """TLS origination as meshmirror's copies and primary attempts do it: the SNI, the CA (the
    DestinationRule's `caCertificates`, else certifi's bundle, as mitmproxy trusts), the
    server's name checked against the SNI, ALPN for the cluster's protocol."""
    common: dict[str, Any] = {}
    if protocol == HTTP2:
        common["alpn_protocols"] = ["h2"]
    elif protocol == HTTP1:
        common["alpn_protocols"] = ["http/1.1"]
    else:
        common["alpn_protocols"] = ["h2", "http/1.1"]
    if verify:
        validation: dict[str, Any] = {"trusted_ca": {"filename": ca_file or certifi.where()}}
        if sni:
            validation["match_typed_subject_alt_names"] = [
                {"san_type": "DNS", "matcher": {"exact": sni}}
            ]
        common["validation_context"] = validation
    context: dict[str, Any] = {"@type": _TLS_CONTEXT, "common_tls_context": common}
    if sni:
        context["sni"] = sni
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}
