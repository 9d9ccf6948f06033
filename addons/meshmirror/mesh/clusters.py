"""The runtime types a resolved destination becomes: `Cluster`, `Endpoint`, `TlsOrigination`.

A `Cluster` is Envoy's `outbound|PORT|SUBSET|HOST`. Its endpoints may be empty: the config gives no
address for it, so the reverse-proxy upstream serves routed requests (`passthrough`), and mirrors
to it are skipped.

These are frozen values built once by the registry at configure time and read on the request path
(routes, fanout, primary, probes), so they live here alone, free of the resource model and of how
the registry is built; this module imports only the `protocols` leaf.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from meshmirror.protocols import CLIENT


def cluster_name(port: int, subset: str | None, host: str) -> str:
    """Istio `BuildSubsetKey`: `outbound|80||foo.bar`."""
    return f"outbound|{port}|{subset or ''}|{host}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    weight: int = 1


@dataclass(frozen=True, slots=True)
class TlsOrigination:
    """Originate TLS to the endpoint (DestinationRule `tls.mode: SIMPLE`, or an HTTPS port).
    `sni` None means "the cluster's host"; `ca_file` None means the system trust store."""

    sni: str | None = None
    ca_file: str | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    host: str
    port: int
    subset: str | None
    endpoints: tuple[Endpoint, ...]
    tls: TlsOrigination | None = None
    # The service port's protocol (Istio's name; "" when no service defines the port) and the
    # protocol the cluster's connections speak (`protocols.HTTP1`, HTTP2, CLIENT or SNIFFED).
    protocol: str = ""
    upstream: str = CLIENT

    @property
    def passthrough(self) -> bool:
        """No endpoints in the config: the reverse-proxy upstream serves this cluster."""
        return not self.endpoints
