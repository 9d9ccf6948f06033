"""HTTP/2 at mitmproxy's two edges: plaintext clients with prior knowledge, and upstream
connections in the protocol their cluster speaks.

mitmproxy picks its HTTP/2 server layer only when the client connection's ALPN is `h2`, and its
HTTP/2 client layer only when the server connection's is (`proxy/layers/http`: `HttpLayer`,
`HttpClient`). A plaintext connection negotiates no ALPN, so both sides would be HTTP/1.1, and a
client that starts with the HTTP/2 preface (gRPC's insecure channels, `curl
--http2-prior-knowledge`) is killed by mitmproxy's `disable_h2c`. Both choices can be made by an
addon before mitmproxy makes them:
- `next_layer`, which runs before mitmproxy's own `next_layer` addon: a client whose first bytes
  are the preface gets ALPN `h2`, so the HTTP layer mitmproxy then stacks serves it with HTTP/2
  (h2c with prior knowledge; an `Upgrade: h2c` request stays HTTP/1.1, as mitmproxy serves it);
- `server_connect`, before a server connection is opened: ALPN `h2` on a plaintext connection
  makes mitmproxy speak h2c with prior knowledge to it; on a TLS connection the ALPN offer is
  narrowed to what the upstream speaks. An HTTP/1.1 client of such an upstream gets its
  responses without trailers (`without_trailers_for_http1`).
mitmproxy keeps one connection per upstream address, so the protocol is decided per address:
the cluster whose endpoint it is (`RouteTable.upstream_protocol`), or for the reverse-proxy
upstream the `mirror_upstream_http2` option.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mitmproxy import http
from mitmproxy.proxy import commands, events, layer, mode_specs
from mitmproxy.proxy.context import Context

from meshmirror import grpc
from meshmirror.protocols import CLIENT, HTTP1, HTTP2

if TYPE_CHECKING:
    from mitmproxy.proxy.server_hooks import ServerConnectionHookData

    from meshmirror.mesh.clusters import Cluster
    from meshmirror.routing.table import RouteTable

log = logging.getLogger("meshmirror")

#: RFC 9113 3.4: what a client with prior knowledge sends first.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_H2 = b"h2"
_HTTP1 = b"http/1.1"


def serve_prior_knowledge(nextlayer: layer.NextLayer) -> None:
    """The `next_layer` hook: a plaintext client that starts with the HTTP/2 preface is served
    with HTTP/2. While its first bytes are only the start of the preface, the decision waits for
    more of them (`_AwaitPreface`)."""
    if nextlayer.layer is not None:
        return
    context = nextlayer.context
    client = context.client
    if client.alpn is not None or client.tls or client.transport_protocol != "tcp":
        return
    data: bytes = nextlayer.data_client()  # type: ignore[no-untyped-call]
    if data.startswith(PREFACE):
        client.alpn = _H2
    elif data and PREFACE.startswith(data):
        nextlayer.layer = _AwaitPreface(context, len(data))


class _AwaitPreface(layer.NextLayer):
    """A NextLayer that asks again only when more client bytes arrive than the `seen` ones it
    was handed (mitmproxy's own asks on every event it is given, the handed-over ones too)."""

    def __init__(self, context: Context, seen: int) -> None:
        super().__init__(context)
        self.seen = seen

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        self.events.append(event)
        if isinstance(event, events.ConnectionClosed) and event.connection == self.context.client:
            yield commands.CloseConnection(self.context.client)
        elif isinstance(event, events.DataReceived):
            if len(self.data_client()) > self.seen:  # type: ignore[no-untyped-call]
                yield from self._ask()  # type: ignore[no-untyped-call]


def without_trailers_for_http1(flow: http.HTTPFlow) -> None:
    """The `response` hook while an upstream may speak HTTP/2: an HTTP/1.1 client gets the
    response without its trailers. mitmproxy's HTTP/1.1 server cannot send trailers (the
    client's connection would fail after the head), and Envoy drops them for an HTTP/1.1
    client too unless told otherwise."""
    resp = flow.response
    if resp is not None and resp.trailers and not flow.request.is_http2:
        resp.trailers = None


class UpstreamProtocols:
    """The protocol of each upstream address of the served table, applied as mitmproxy opens
    a server connection; warns once per cluster about gRPC calls sent over HTTP/1.1."""

    def __init__(self) -> None:
        self.by_address: dict[tuple[str, int], str] = {}
        self.reverse_http2 = False  # mirror_upstream_http2
        self._warned: set[str] = set()

    def serve(self, table: RouteTable | None) -> None:
        """Index the route destinations' endpoints of a newly served table (first cluster of an
        address wins: mitmproxy shares one connection per address)."""
        by_address: dict[tuple[str, int], str] = {}
        for vh in table.virtual_hosts if table is not None else ():
            for route in vh.routes:
                for wc in route.clusters:
                    protocol = table.upstream_protocol(wc.cluster)  # type: ignore[union-attr]
                    for ep in wc.cluster.endpoints:
                        by_address.setdefault((ep.address, ep.port), protocol)
        self.by_address = by_address
        self._warned.clear()

    def protocol_for(self, data: ServerConnectionHookData) -> str | None:
        """HTTP1, HTTP2 or CLIENT for the connection; None leaves it to mitmproxy (HTTP/1.1 in
        plain text, over TLS what the client offered): the reverse-proxy upstream unless
        mirror_upstream_http2 says otherwise, and any address the table does not name."""
        server = data.server
        address = server.address
        found = None if address is None else self.by_address.get((str(address[0]), address[1]))
        if found is not None:
            return found
        mode = data.client.proxy_mode
        if self.reverse_http2 and isinstance(mode, mode_specs.ReverseMode):
            if address == mode.address:
                return HTTP2
        return None

    def server_connect(self, data: ServerConnectionHookData) -> None:
        """Set the server connection's protocol before mitmproxy opens it."""
        server = data.server
        protocol = self.protocol_for(data)
        if protocol is None:
            return
        if protocol == CLIENT:
            # The client's protocol: over TLS mitmproxy offers what the client offered; in plain
            # text, an HTTP/2 client is answered over h2c.
            if not server.tls and data.client.alpn == _H2:
                server.alpn = _H2
            return
        http2 = protocol == HTTP2
        if server.tls:
            server.alpn_offers = [_H2] if http2 else [_HTTP1]
        elif http2:
            server.alpn = _H2

    def check_grpc(self, request: http.Request, cluster: Cluster | None, protocol: str) -> None:
        """One warning per cluster (or for the reverse upstream) when a gRPC call goes to an
        upstream that speaks HTTP/1.1: gRPC servers answer only HTTP/2."""
        if protocol != HTTP1 or not grpc.is_grpc(request.headers.get("content-type", "")):
            return
        key = cluster.name if cluster is not None else ""
        if key in self._warned:
            return
        self._warned.add(key)
        if cluster is None:
            log.warning(
                "meshmirror: gRPC calls reach the reverse-proxy upstream over HTTP/1.1; if it "
                "speaks HTTP/2 (gRPC servers do), set mirror_upstream_http2=true"
            )
        else:
            log.warning(
                f"meshmirror: gRPC calls to {cluster.name} are sent over HTTP/1.1 (port "
                f"protocol {cluster.protocol or 'unset'}); gRPC servers answer only HTTP/2: "
                "declare the port's protocol GRPC (ServiceEntry `protocol`, Service port name "
                "`grpc-...` or `appProtocol: grpc`)"
            )


class PlainHttp2:
    """meshmirror's two HTTP/2 edges alone, without routing or mirroring: plain mitmproxy that
    serves prior-knowledge clients and reaches its reverse-proxy upstream over HTTP/2. For
    measuring meshmirror against mitmproxy on gRPC traffic (a script holding
    `addons = [PlainHttp2()]`)."""

    def __init__(self, upstream_http2: bool = True) -> None:
        self.upstreams = UpstreamProtocols()
        self.upstreams.reverse_http2 = upstream_http2

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        serve_prior_knowledge(nextlayer)

    def server_connect(self, data: ServerConnectionHookData) -> None:
        self.upstreams.server_connect(data)
