"""Port protocol names (istio `pkg/config/protocol`)."""

from __future__ import annotations

_PROTOCOLS = {
    "tcp": "TCP",
    "udp": "UDP",
    "grpc": "GRPC",
    "grpc-web": "GRPC-Web",
    "http": "HTTP",
    "http_proxy": "HTTP_PROXY",
    "http2": "HTTP2",
    "https": "HTTPS",
    "tls": "TLS",
    "mongo": "Mongo",
    "redis": "Redis",
    "mysql": "MySQL",
}


def istio_protocol(name: str | None) -> str:
    return _PROTOCOLS.get((name or "").lower(), "UnsupportedProtocol")


def is_http(p: str) -> bool:
    return p in ("HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-Web")


def is_tls(p: str) -> bool:
    return p in ("HTTPS", "TLS")


def is_tcp(p: str) -> bool:
    return p in ("TCP", "HTTPS", "TLS", "Mongo", "Redis", "MySQL")
