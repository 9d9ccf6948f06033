"""The request path: what the addon does with each request, from its headers to its copies.

Per request (the `request` hook, or `requestheaders` for streamed bodies and gRPC calls):
match the compiled RouteTable -> point the flow at the primary endpoint (keeping the client's
Host) -> for each sampled mirror policy, build the copy and hand it to the writer, which sends
it in the background (fanout.py). The hooks never wait for a mirror. They are sync for the
common case and return an awaitable (which mitmproxy awaits, holding only this flow) when a
fault delay or the route's timeout/retries apply.

The addon (addon.py) owns one `RequestPath`, keeps its `table`, `sampler` and `timeline` in step
with the options and the served config, and installs its hooks while a config is served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import NamedTuple

from mitmproxy import http

from meshmirror.mesh.clusters import Cluster
from meshmirror.mirror.shadow import new_request_id
from meshmirror.mitm import primary
from meshmirror.mitm.edge import connection_manager_fields
from meshmirror.mitm.fanout import EndpointPicker, Fanout
from meshmirror.mitm.headers import (
    RequestHeaders,
    for_http2_upstream,
    scan_request_headers,
    without_connection_token,
)
from meshmirror.mitm.http2 import UpstreamProtocols
from meshmirror.mitm.inspection import Inspection
from meshmirror.mitm.streams import BodyTee, is_grpc
from meshmirror.mitm.timeline import Timeline
from meshmirror.policy.fault import FaultAbort
from meshmirror.protocols import HTTP1, HTTP2
from meshmirror.routing.match import match_route
from meshmirror.routing.request_view import RequestView
from meshmirror.routing.sampling import Sampler, pick_weighted
from meshmirror.routing.table import Route, RouteTable

# Marks flows this addon made itself, so they are never mirrored again.
COPY_MARK = "meshmirror.copy"
# Set in requestheaders when the body is streamed: routing was already decided there.
ROUTED_MARK = "meshmirror.routed"
# A gRPC call's routing (`_Routed`), kept for its copies until its body has passed through.
CALL_MIRROR = "meshmirror.call_mirror"


class RequestPath:
    """The flow hooks of the request path and what they share."""

    def __init__(
        self,
        primary_: primary.Primary,
        endpoints: EndpointPicker,
        fanout: Fanout,
        upstreams: UpstreamProtocols,
        inspection: Inspection,
    ) -> None:
        self.table: RouteTable | None = None  # the served table, kept in step by the addon
        self.sampler = Sampler(mode="random", seed=None)
        self.primary = primary_  # fault sampling, timeout and retries (primary.py)
        self.endpoints = endpoints
        self.fanout = fanout
        self.upstreams = upstreams
        self.inspection = inspection
        self.timeline: Timeline | None = None  # mirror_timeline

    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if not flow.live:
            return self.inspection.pace(flow)  # a recording (-r) replays at its own pace
        req = flow.request
        # A streamed body opens the upstream connection right after this hook, so routing must
        # be decided now; the body will never be available for a copy.
        if req.stream and self.table is not None:
            flow.metadata[ROUTED_MARK] = True
            return self._handle(flow, streamed=True)
        if req.is_http2 and self.table is not None and is_grpc(req):
            # A gRPC call is passed through as it arrives (streams.py), so it is routed now
            # too; its copy is made when its whole body has been seen (`request`).
            req.stream = BodyTee(req, self.fanout.max_body)
            flow.metadata[ROUTED_MARK] = True
            pending = self._handle(flow, streamed=False, call=True)
            if pending is None:
                _answered_whole(flow)
                return None
            return self._then_answered_whole(flow, pending)
        return None

    @staticmethod
    async def _then_answered_whole(flow: http.HTTPFlow, pending: Awaitable[None]) -> None:
        await pending
        _answered_whole(flow)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if self.table is None:
            return None
        if flow.metadata.get(ROUTED_MARK):
            deferred = flow.metadata.pop(CALL_MIRROR, None)
            if deferred is not None:
                self._mirror_call(flow, deferred)
            return None
        return self._handle(flow, streamed=False)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if primary.RESPONSE_OPS in flow.metadata:
            primary.finalize_response(flow)
        resp = flow.response
        if (
            resp is not None
            and flow.request.is_http2
            and not resp.stream
            and flow.live
            and is_grpc(resp)
        ):
            # Messages of a streaming call reach the client when the server sends them.
            resp.stream = BodyTee(resp, self.fanout.max_body)

    def _mirror_call(self, flow: http.HTTPFlow, routed: _Routed) -> None:
        """The copies of a gRPC call passed through as it arrived, now that its body is whole
        (or known to be over mirror_max_body)."""
        self.fanout.mirror(
            flow,
            routed.route,
            routed.rand,
            routed.authority,
            False,
            routed.generation,
            routed.headers,
            routed.request_id,
            after_body=True,
        )

    def _handle(
        self, flow: http.HTTPFlow, *, streamed: bool, call: bool = False
    ) -> Awaitable[None] | None:
        table = self.table
        if table is None or flow.metadata.get(COPY_MARK):
            return None
        req = flow.request
        fields = req.headers.fields
        # The one pass over the fields the request path needs (nothing else is decoded); the
        # Host as mitmproxy's `Request.host_header` returns it. A Host no virtual host claims is
        # decided by one lookup, before any other work for the request (it goes to the reverse
        # upstream as it came).
        headers = scan_request_headers(fields, index=False)
        authority = (req.authority if req.is_http2 or req.is_http3 else "") or headers.host or ""
        vh = table.select_virtual_host(authority)
        if vh is None:
            self.fanout.stats.requests_skipped["no_virtual_host"] += 1
            if req.is_http2 and req.scheme == "http" and not self.upstreams.reverse_http2:
                self.upstreams.check_grpc(req, None, HTTP1)
            if not flow.live:
                self.inspection.unclaimed_recording(flow)
            return None
        if flow.live:
            # As Envoy's connection manager forwards it, before routing (edge.py).
            edited = connection_manager_fields(
                fields,
                client=flow.client_conn.peername[0] if flow.client_conn.peername else None,
                scheme="https" if flow.client_conn.tls_established else "http",
                edge=table.gateway is not None,
            )
            if edited is not None:
                req.headers.fields = fields = edited
                if not table.reads_headers:
                    headers = scan_request_headers(fields, index=False)
        if table.reads_headers:
            headers = scan_request_headers(fields)  # indexed for the header matchers
        view = RequestView.of(
            method=req.method,
            scheme="https" if flow.client_conn.tls_established else "http",
            authority=authority,
            path=req.path,
            headers=headers.joined,
            port=table.listener_port,
        )
        route = match_route(vh, view)
        if route is None:
            # Why it is not mirrored, for mirror.stats (`requests_not_mirrored`).
            self.fanout.stats.requests_skipped["no_route_matched"] += 1
            return None
        if call and route.action == "route" and self.primary.upstream_for(route, req) is not None:
            # The route's timeout/retries: meshmirror sends the whole call upstream itself, so
            # nothing is streamed and the call is routed at `request`, with its body.
            req.stream = False
            del flow.metadata[ROUTED_MARK]
            return None
        if self.timeline is not None:
            self.timeline.routed(flow, route.label)
        live = flow.live and flow.response is None and flow.error is None
        if route.action != "route":
            # Envoy answers redirect / direct_response itself: nothing goes upstream or to a mirror.
            self.fanout.stats.requests_skipped["local_reply"] += 1
            if live:
                primary.answer_locally(flow, route, view.scheme)
            return None
        if not route.mirrors:
            self.fanout.stats.requests_skipped["no_mirror_policy"] += 1
        request_id = headers.request_id
        # Sampling keys on the client's id (mirror_sampling=request-id), never on one made here.
        rand = self.sampler.value_for(None if request_id is None else request_id.split(",", 1)[0])
        if request_id is None:
            # As Envoy does for every request it routes: the primary and every copy carry the
            # same id, whether or not a copy is sampled.
            request_id = new_request_id()
            if flow.live and flow.response is None:
                # Known to be absent: appending skips the scan a headers[...] = does.
                fields = req.headers.fields
                if headers.connection:
                    fields = without_connection_token(fields, b"x-request-id")
                req.headers.fields = (*fields, (b"x-request-id", request_id.encode()))
        pass_on = _Routed(
            route, authority, streamed, table.generation, rand, headers, request_id, call
        )
        if live and route.fault is not None:
            delay, abort = self.primary.sample_fault(route)
            if delay > 0 or abort is not None:
                return self._faulted(flow, pass_on, delay, abort)
        return self._forward(flow, pass_on)

    async def _faulted(
        self, flow: http.HTTPFlow, routed: _Routed, delay: float, abort: FaultAbort | None
    ) -> None:
        # Envoy's fault filter runs before the router: the delay holds the request (its copy
        # leaves afterwards); an abort answers it, so it is never routed nor mirrored.
        if delay > 0:
            await asyncio.sleep(delay)
        if abort is not None:
            self.primary.abort(flow, abort)
            return
        pending = self._forward(flow, routed)
        if pending is not None:
            await pending

    def _forward(self, flow: http.HTTPFlow, routed: _Routed) -> Awaitable[None] | None:
        req = flow.request
        route = routed.route
        if primary.apply_cors(flow, route.cors):
            # Envoy's CORS filter answered a preflight: never routed, never mirrored.
            if route.mirrors:
                self.fanout.stats.requests_skipped["local_reply"] += 1
            return None
        dest = pick_weighted(route.clusters, routed.rand) if route.clusters else None
        # Rewrites first: the copy must see the request as the primary sees it.
        authority = primary.apply_rewrites(flow, route, dest, routed.authority)
        live = flow.live and flow.response is None and flow.error is None
        if live and dest is not None:
            self._route_primary(req, dest.cluster)
        if route.mirrors:
            if routed.call:
                # Copied once the call's body has passed through (`_mirror_call`).
                flow.metadata[CALL_MIRROR] = routed._replace(authority=authority)
            else:
                self.fanout.mirror(
                    flow,
                    route,
                    routed.rand,
                    authority,
                    routed.streamed,
                    routed.generation,
                    routed.headers,
                    routed.request_id,
                )
        if not live:
            return None
        cluster = dest.cluster if dest is not None else None
        upstream = self.primary.upstream_for(route, req)
        if upstream is not None and not routed.streamed:
            # After the copy was handed over: mirrored once, however often this is retried.
            return self.primary.exchange(flow, upstream, cluster, self._protocol_of(cluster))
        if not (req.is_http2 or req.is_http3) and self._protocol_of(cluster) == HTTP2:
            # mitmproxy converts it; meshmirror's own exchange above builds its own fields.
            req.headers.fields = for_http2_upstream(req.headers.fields)
        return None

    def _protocol_of(self, cluster: Cluster | None) -> str | None:
        """How the primary reaches `cluster` (protocols.HTTP1, HTTP2, CLIENT); None: the
        reverse-proxy upstream, as mitmproxy reaches it."""
        if cluster is not None and cluster.endpoints and self.table is not None:
            return self.table.upstream_protocol(cluster)
        return HTTP2 if self.upstreams.reverse_http2 else None

    def _route_primary(self, req: http.Request, cluster: Cluster) -> None:
        ep = self.endpoints.pick(cluster)
        if ep is None:
            # No endpoints in the config: the reverse-proxy upstream serves it.
            if req.is_http2 and req.scheme == "http" and not self.upstreams.reverse_http2:
                self.upstreams.check_grpc(req, None, HTTP1)
            return
        if req.is_http2:
            assert self.table is not None
            self.upstreams.check_grpc(req, cluster, self.table.upstream_protocol(cluster))
        # Written to the request's data, not through the host/port setters: those rewrite the
        # Host header (twice, each a scan of the headers), and the primary must see the client's
        # Host (or the rewritten authority apply_rewrites already set), which stays as it is.
        data = req.data
        data.scheme = b"https" if cluster.tls is not None else b"http"
        data.host = ep.address
        data.port = ep.port


def _answered_whole(flow: http.HTTPFlow) -> None:
    """A call the proxy answered itself (a fault abort, a local reply, a CORS preflight) is
    not streamed: mitmproxy cannot stream a request it has a response for."""
    if flow.response is not None and flow.request.stream:
        flow.request.stream = False


class _Routed(NamedTuple):
    """What the request hook decided, handed on to forwarding (after a fault delay, if any)."""

    route: Route
    authority: str
    streamed: bool
    generation: int
    rand: int  # the request's sampling draw: weighted destinations and mirrors
    headers: RequestHeaders
    request_id: str
    call: bool = False  # a gRPC call passed through as it arrives: copied at `request`
