"""Port protocol names and what they mean for the wire (Istio `pkg/config/protocol`).

`istio_protocol` gives Istio's canonical name for a ServiceEntry or Gateway port protocol;
`kubernetes_port_protocol` reads a Kubernetes Service port the way istiod does (appProtocol,
then the port name's prefix, then well-known ports). The upstream protocol a cluster speaks is
decided from these names by `mesh.destination_rules.upstream_protocol`.
"""

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

UNSUPPORTED = "UnsupportedProtocol"

#: A cluster's upstream HTTP protocol, as Istio sets Envoy's cluster protocol options:
HTTP1 = "HTTP/1.1"
HTTP2 = "HTTP/2"  # h2c with prior knowledge in plain text, ALPN `h2` over TLS
CLIENT = "client"  # the client's own protocol (Envoy's USE_DOWNSTREAM_PROTOCOL)
# A port without a protocol, which Istio sniffs: the client's protocol when the proxy is the
# mesh (a sidecar), HTTP/1.1 when it acts as a gateway (`RouteTable.upstream_protocol`).
SNIFFED = "sniffed"

#: The port protocols meshmirror serves HTTP routes on; the others are parsed, not served.
SERVED = ("HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-Web")

# istiod's `wellKnownPorts`: a Kubernetes port whose name says nothing is read by its number.
_WELL_KNOWN_PORTS = {3306: "MySQL", 27017: "Mongo"}


def istio_protocol(name: str | None) -> str:
    return _PROTOCOLS.get((name or "").lower(), UNSUPPORTED)


def is_http(p: str) -> bool:
    return p in ("HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-Web")


def is_http2(p: str) -> bool:
    """Istio `Instance.IsHTTP2`: ports whose clusters Envoy reaches over HTTP/2."""
    return p in ("HTTP2", "GRPC", "GRPC-Web")


def is_tls(p: str) -> bool:
    return p in ("HTTPS", "TLS")


def is_tcp(p: str) -> bool:
    return p in ("TCP", "HTTPS", "TLS", "Mongo", "Redis", "MySQL")


def kubernetes_port_protocol(
    number: int, name: str | None, protocol: str | None, app_protocol: str | None
) -> str:
    """istiod's `kube.ConvertProtocol`: UDP stays UDP; else `appProtocol` (with Kubernetes'
    standard `kubernetes.io/h2c`, `/ws`, `/wss`), else the port name up to its first `-`
    (`grpc-web` whole), else a well-known port number; UNSUPPORTED when nothing says (Istio then
    sniffs the protocol)."""
    if (protocol or "").upper() == "UDP":
        return "UDP"
    text = name or ""
    if app_protocol:
        text = app_protocol
        standard = {
            "kubernetes.io/h2c": "HTTP2",
            "kubernetes.io/ws": "HTTP",
            "kubernetes.io/wss": "HTTPS",
        }.get(app_protocol)
        if standard is not None:
            return standard
    if text.lower().startswith("grpc-web"):
        return "GRPC-Web"
    found = istio_protocol(text.split("-", 1)[0])
    if found == UNSUPPORTED:
        return _WELL_KNOWN_PORTS.get(number, UNSUPPORTED)
    return found
