"""Where a copy or a primary attempt connects, and how: the `MirrorEndpoint` of a cluster's
endpoint, with its TLS settings and the protocols it may speak.

TLS: a DestinationRule's `tls` (SIMPLE: its `sni`, `caCertificates`, `insecureSkipVerify`) first,
then mitmproxy's own upstream options, applied as mitmproxy applies them to its connections
(`ssl_insecure`, `ssl_verify_upstream_trusted_ca`, `ssl_verify_upstream_trusted_confdir`,
`client_certs`: a file, or a directory of `SNI.pem`), trusting certifi's bundle when nothing
names a CA, as mitmproxy does. So a primary sent by meshmirror itself (a route with `timeout` or
`retries`) is verified exactly as one mitmproxy forwards, and copies likewise.

Protocol: the cluster's upstream protocol at this proxy (`RouteTable.upstream_protocol`), with
the client's protocol deciding where the cluster keeps it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import certifi

from meshmirror.mesh.clusters import Cluster, Endpoint
from meshmirror.mirror.types import EITHER, HTTP1_ONLY, HTTP2_ONLY, MirrorEndpoint
from meshmirror.protocols import CLIENT, HTTP2


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """mitmproxy's upstream TLS options."""

    insecure: bool = False
    ca_file: str | None = None
    ca_path: str | None = None
    client_certs: str | None = None

    @classmethod
    def from_options(cls, options: Any) -> UpstreamTls:
        def get(name: str) -> Any:
            return getattr(options, name, None) if name in options else None

        certs = get("client_certs")
        return cls(
            insecure=bool(get("ssl_insecure")),
            ca_file=get("ssl_verify_upstream_trusted_ca") or None,
            ca_path=get("ssl_verify_upstream_trusted_confdir") or None,
            client_certs=os.path.expanduser(certs) if certs else None,
        )

    def client_cert(self, server_name: str) -> str | None:
        """mitmproxy's `client_certs`: the file itself, or `SERVER_NAME.pem` in the directory."""
        certs = self.client_certs
        if not certs:
            return None
        if os.path.isfile(certs):
            return certs
        path = os.path.join(certs, f"{server_name}.pem")
        return path if os.path.isfile(path) else None


def alpn_for(protocol: str, tls: bool, client_http2: bool) -> tuple[str, ...]:
    """What a connection may speak, for a cluster protocol (protocols.HTTP1, HTTP2, CLIENT)."""
    if protocol == HTTP2:
        return HTTP2_ONLY
    if protocol == CLIENT and client_http2:
        # Over TLS the client's protocol is offered and the server decides (as mitmproxy offers
        # what its client offered); in plain text there is nothing to negotiate.
        return EITHER if tls else HTTP2_ONLY
    return HTTP1_ONLY


def endpoint_for(
    host: str,
    port: int,
    *,
    tls: bool,
    sni: str | None,
    alpn: tuple[str, ...],
    options: UpstreamTls,
    cluster: Cluster | None = None,
) -> MirrorEndpoint:
    if not tls:
        return MirrorEndpoint(host=host, port=port, alpn=alpn)
    origination = cluster.tls if cluster is not None else None
    ca_file = origination.ca_file if origination is not None else None
    insecure = origination is not None and origination.insecure_skip_verify
    ca_file = ca_file or options.ca_file
    if ca_file is None and options.ca_path is None:
        ca_file = certifi.where()
    return MirrorEndpoint(
        host=host,
        port=port,
        tls=True,
        sni=sni,
        ca_file=ca_file,
        insecure_skip_verify=insecure or options.insecure,
        alpn=alpn,
        ca_path=options.ca_path,
        client_cert=options.client_cert(sni or host),
    )


def cluster_endpoint(
    cluster: Cluster, ep: Endpoint, protocol: str, client_http2: bool, options: UpstreamTls
) -> MirrorEndpoint:
    """The MirrorEndpoint of one endpoint of `cluster`, reached over `protocol`."""
    tls = cluster.tls
    return endpoint_for(
        ep.address,
        ep.port,
        tls=tls is not None,
        sni=(tls.sni or cluster.host) if tls is not None else None,
        alpn=alpn_for(protocol, tls is not None, client_http2),
        options=options,
        cluster=cluster,
    )
