"""The listener: an HTTP connection manager with the fault, CORS and router filters, in Istio's
order (the fault filter first, so an abort is answered before CORS and routing), serving the
route configuration inline.

Connection-manager settings are Istio's for what meshmirror plays: paths normalised for
matching (`PATH_NORMALIZATION: BASE`), the client's X-Request-Id kept (meshmirror keeps it, and
the primary and its copies carry it), and, acting as a Gateway, the edge's rules for the
client's address (`use_remote_address`: X-Forwarded-For gets the client's address, client-sent
`x-envoy-*` headers are not trusted).
"""

from __future__ import annotations

from typing import Any

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." + (
    "HttpConnectionManager"
)
HTTP_FILTERS: list[dict[str, Any]] = [
    {
        "name": "envoy.filters.http.fault",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
        },
    },
    {
        "name": "envoy.filters.http.cors",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
    },
    {
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        },
    },
]


def listener(host: str, port: int, route_config: dict[str, Any], *, edge: bool) -> dict[str, Any]:
    """The HTTP listener on `host:port`; `edge`: the proxy acts as a Gateway (Istio's ingress
    gateway settings), else as a sidecar's outbound listener."""
    hcm: dict[str, Any] = {
        "@type": _HCM,
        "stat_prefix": "meshmirror",
        "codec_type": "AUTO",
        "route_config": route_config,
        "http_filters": HTTP_FILTERS,
        "normalize_path": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "preserve_external_request_id": True,
        "use_remote_address": edge,
    }
    if edge:
        # Every client is external: its x-envoy-* headers are not trusted.
        hcm["internal_address_config"] = {"cidr_ranges": []}
    return {
        "name": f"meshmirror_{port}",
        "address": {"socket_address": {"address": host, "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }
