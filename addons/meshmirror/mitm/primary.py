"""What happens to the primary request besides routing: the mitmproxy glue for the policies.

- Rewrites and header operations are applied to the flow before the mirror copy is taken, so the
  copy carries them (Envoy copies the finalized headers).
- `redirect` and `directResponse` are answered here and never mirrored (they never reach Envoy's
  router). A fault `abort` is answered here and never mirrored (the fault filter runs before the
  router); a fault `delay` holds the request before routing, so its copy leaves after the delay.
- `corsPolicy` (Envoy's CORS filter, after the fault filter and before the router): a preflight
  is answered here and never mirrored; an allowed origin's response gets the CORS headers, after
  the route's response header operations (the filter sees the response after the router).
- Every answer made here follows Envoy's local-reply rule for gRPC requests (content-type
  `application/grpc`): a trailers-only response, HTTP 200 with `grpc-status` (a `grpcStatus`
  abort's code, else mapped from the HTTP status) and the text as `grpc-message`.
- `timeout` and `retries`: mitmproxy has no per-request upstream deadline and cannot re-send a
  request once it has gone upstream; a timer cannot answer a flow that is waiting on its server
  (`flow.kill()` outside a hook only takes effect at the flow's next hook, which never comes while
  the upstream is silent). So for a route with either, meshmirror makes the upstream exchange
  itself in the `request` hook and hands mitmproxy the response: HTTP/1.1 through the copies'
  client (mirror/http1.py, head by mirror/request_head.py, TLS contexts from mirror/tls.py), one
  fresh connection per attempt (`Connection: close`), the whole response body kept, one deadline
  per attempt (the per-try timeout or what is left of the route's). An attempt fails as
  `connect-failure` (no connection: refused, unreachable, DNS, TLS handshake), `timeout` (its
  deadline passed) or `reset` (the connection failed after it was made: closed or reset before
  the response ended, a malformed response, a request head that cannot be framed). The copy is
  submitted before the first attempt, once, however often the primary is retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from typing import TYPE_CHECKING

from mitmproxy import http

from meshmirror import grpc
from meshmirror.mirror.client import Progress, UpstreamClient
from meshmirror.mirror.failures import InvalidRequest, StreamReset, TLSConfigError, classify
from meshmirror.mirror.request_head import HOP_BY_HOP
from meshmirror.mirror.types import CapturedResponse, MirrorEndpoint, MirrorRequest
from meshmirror.mitm.endpoints import UpstreamTls, alpn_for, endpoint_for
from meshmirror.percent import MILLION
from meshmirror.policy.fault import FaultAbort
from meshmirror.policy.local_reply import grpc_local_reply
from meshmirror.policy.rewrites import HeaderOps, rewrite_request
from meshmirror.policy.upstream import Failure, UpstreamPolicy
from meshmirror.protocols import CLIENT, HTTP1

if TYPE_CHECKING:
    from meshmirror.mesh.clusters import Cluster
    from meshmirror.policy.cors import CrossOriginPolicy
    from meshmirror.routing.table import Route, WeightedCluster

log = logging.getLogger("meshmirror.primary")

# Response header operations waiting for the primary's response (applied in `responseheaders`).
RESPONSE_OPS = "meshmirror.response_ops"
# The CORS headers an allowed origin's response gets, applied after RESPONSE_OPS.
CORS_OPS = "meshmirror.cors_ops"

# Envoy's local-reply bodies, so clients and dashboards see what a sidecar would send.
TIMEOUT_BODY = b"upstream request timeout"
CONNECT_FAILURE_BODY = (
    b"upstream connect error or disconnect/reset before headers. reset reason: remote "
    b"connection failure"
)
RESET_BODY = (
    b"upstream connect error or disconnect/reset before headers. reset reason: "
    b"connection termination"
)
REFUSED_BODY = (
    b"upstream connect error or disconnect/reset before headers. reset reason: "
    b"remote refused stream reset"
)
FAULT_ABORT_BODY = b"fault filter abort"

# Not forwarded to the client: the response is re-framed from its whole body; a Host field
# describes a request and means nothing in a response.
_RESPONSE_DROP = HOP_BY_HOP | {b"host"}
# The whole body, unbounded: the client gets what upstream sent, as on the routes mitmproxy
# forwards itself under its default body_size_limit (none).
_WHOLE_BODY = sys.maxsize
_MAX_BACKOFF_FACTOR = 10  # Envoy's max_interval default: 10 x base_interval


def local_reply(
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    request: http.Request | None = None,
    grpc_status: int | None = None,
) -> http.Response:
    """The proxy's own answer to `request`: `status` with `body` (text/plain), or for a gRPC
    request Envoy's trailers-only form of it."""
    h = dict(headers or {})
    if request is not None and grpc.is_grpc(request.headers.get("content-type", "")):
        fields = [(k.encode(), v.encode()) for k, v in h.items()]
        resp = http.Response.make(200, b"", fields + grpc_local_reply(status, body, grpc_status))
        if request.is_http2:
            # A HEADERS frame that ends the stream carries no length (Envoy sends none).
            resp.headers.pop("content-length", None)
        return resp
    if body:
        h.setdefault("content-type", "text/plain")
    return http.Response.make(status, body, h)


def stash_response_ops(flow: http.HTTPFlow, ops: tuple[HeaderOps | None, ...]) -> None:
    cors = flow.metadata.get(CORS_OPS)
    if cors is not None:
        ops = (*ops, cors)
    if any(op is not None for op in ops):
        flow.metadata[RESPONSE_OPS] = ops


def apply_cors(flow: http.HTTPFlow, cors: CrossOriginPolicy | None) -> bool:
    """Envoy's CORS filter on the request. True when it is a preflight the filter answers: the
    flow gets the 200 answer (if it is live) and is neither routed nor mirrored. Otherwise an
    allowed origin's CORS response headers wait for the response."""
    if cors is None:
        return False
    req = flow.request
    headers = {
        name: req.headers.get(name, "")
        for name in ("origin", "access-control-request-method", "access-control-request-headers")
    }
    answer = cors.preflight_answer(req.method, headers)
    if answer is not None:
        if flow.live and flow.response is None and flow.error is None:
            flow.response = http.Response.make(200, b"", answer)
        return True
    extra = cors.response_headers(headers)
    if extra:
        ops = HeaderOps(set=extra)
        flow.metadata[CORS_OPS] = ops
        flow.metadata[RESPONSE_OPS] = (ops,)
    return False


def finalize_response(flow: http.HTTPFlow) -> None:
    """`headers.response` of the destination, then of the rule, on the primary's response
    (Envoy `finalizeResponseHeaders`). Copies' responses are never touched."""
    ops = flow.metadata.pop(RESPONSE_OPS, None)
    if ops is None or flow.response is None:
        return
    fields = list(flow.response.headers.fields)
    for op in ops:
        if op is not None:
            fields = op.apply(fields)
    flow.response.headers.fields = tuple(fields)


def answer_locally(flow: http.HTTPFlow, route: Route, scheme: str) -> bool:
    """Redirect or direct response, as Envoy's router answers them (a CORS preflight first, as
    the CORS filter does). True when answered."""
    req = flow.request
    if apply_cors(flow, route.cors):
        return True
    if route.redirect_policy is not None:
        rd = route.redirect_policy
        location = rd.location(scheme, req.host_header or "", req.path)
        flow.response = local_reply(rd.status, b"", {"location": location}, request=req)
    elif route.direct_policy is not None:
        dr = route.direct_policy
        flow.response = local_reply(dr.status, dr.body, request=req)
    else:
        return False
    stash_response_ops(flow, (route.response_headers,))
    return True


def apply_rewrites(
    flow: http.HTTPFlow, route: Route, dest: WeightedCluster | None, authority: str
) -> str:
    """Rewrite the flow's request in place as Envoy's finalizeRequestHeaders would (destination
    header ops, route header ops, host rewrite, path rewrite); returns the new authority."""
    dest_req = dest.request_headers if dest is not None else None
    if route.response_headers is not None or (dest is not None and dest.response_headers):
        stash_response_ops(
            flow, (dest.response_headers if dest is not None else None, route.response_headers)
        )
    host_rewrite = route.authority or (dest.authority if dest is not None else None)
    if route.rewrite is None and host_rewrite is None and dest_req is None:
        if route.request_headers is None:
            return authority
    req = flow.request
    path, fields, new_authority = rewrite_request(
        req.path,
        req.headers.fields,
        authority,
        ops=(dest_req, route.request_headers),
        authority_rewrite=host_rewrite,
        path_rewrite=route.rewrite,
    )
    if fields != list(req.headers.fields):
        req.headers.fields = tuple(fields)
    if path != req.path:
        req.path = path
    if new_authority != authority:
        req.host_header = new_authority
    return new_authority


class Primary:
    """Fault sampling and the owned upstream exchange (timeout, retries)."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        # The same client as the copies' (HTTP/1.1 and HTTP/2, pooled), keeping whole bodies.
        self.client = UpstreamClient(max_response_body=_WHOLE_BODY)
        self.tls_options = UpstreamTls()  # mitmproxy's upstream TLS options
        # mirror_default_retries=istio: routes without `retries` get Istio's mesh default.
        self.default_retries = False

    def upstream_for(self, route: Route, req: http.Request) -> UpstreamPolicy | None:
        """The timeout and retry policy `req` is sent upstream with on `route`; None: mitmproxy
        forwards it itself. Istio's mesh default is applied only where the owned exchange
        (whole bodies, nothing streamed) carries the request as mitmproxy would: not to an
        upgrade (websocket) and not to gRPC (streaming calls), which keep mitmproxy's own
        forwarding."""
        mesh = route.mesh_default_upstream
        if (
            self.default_retries
            and mesh is not None
            and "upgrade" not in req.headers
            and not grpc.is_grpc(req.headers.get("content-type", ""))
        ):
            return mesh
        return route.upstream

    def seed(self, seed: int | None) -> None:
        self.rng = random.Random(seed)

    def sample_fault(self, route: Route) -> tuple[float, FaultAbort | None]:
        """(delay seconds, abort status or None), each sampled independently per request."""
        fault = route.fault
        if fault is None:
            return 0.0, None
        delay = fault.sample_delay(self.rng.randrange(MILLION))
        return delay, fault.sample_abort(self.rng.randrange(MILLION))

    @staticmethod
    def abort(flow: http.HTTPFlow, abort: FaultAbort) -> None:
        flow.response = local_reply(
            abort.status, FAULT_ABORT_BODY, request=flow.request, grpc_status=abort.grpc_status
        )

    async def exchange(
        self,
        flow: http.HTTPFlow,
        policy: UpstreamPolicy,
        cluster: Cluster | None,
        protocol: str | None = None,
    ) -> None:
        """Send the primary upstream with the route's timeout and retry policy, and set
        flow.response (upstream's, or Envoy's 503/504 local reply). `protocol` is the cluster's
        (protocols.HTTP1, HTTP2, CLIENT); None for the reverse-proxy upstream as mitmproxy
        reaches it (HTTP/1.1 in plain text, over TLS what the client offered)."""
        req = flow.request
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.timeout if policy.timeout > 0 else None
        https = req.scheme == "https"
        if protocol is None:
            protocol = CLIENT if https else HTTP1
        endpoint = endpoint_for(
            req.host,
            req.port,
            tls=https,
            sni=_sni(cluster, req.host) if https else None,
            alpn=alpn_for(protocol, https, req.is_http2),
            options=self.tls_options,
            cluster=cluster,
        )
        request = MirrorRequest(req.method, req.path, _request_headers(req), req.raw_content or b"")
        where = f"{req.host}:{req.port}"
        attempts = policy.retries + 1
        retries = 0
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                log.info(f"meshmirror: primary {where}: the route's timeout passed; 504")
                flow.response = local_reply(504, TIMEOUT_BODY, request=req)
                return
            limits = [t for t in (policy.per_try_timeout, remaining) if t]
            reply: CapturedResponse | None = None
            failure: Failure | None = None
            try:
                reply = await self._send_once(endpoint, request, limits)
            except _Failed as e:
                failure = e.kind
                # The client's answer depends on it: shown at the default verbosity.
                log.info(
                    f"meshmirror: primary attempt {retries + 1} of {attempts} to {where} "
                    f"failed: {e.kind} ({e.detail})"
                )
            grpc_status = _grpc_status(reply) if reply is not None else None
            if retries < policy.retries and (
                (reply is not None and policy.retry_for_status(reply.status, grpc_status))
                or (failure is not None and policy.retry_for_failure(failure))
            ):
                if reply is not None:
                    answer = f"{reply.status}" + (
                        f" grpc-status {grpc_status}" if grpc_status else ""
                    )
                    log.info(
                        f"meshmirror: primary attempt {retries + 1} of {attempts} to {where} "
                        f"answered {answer}: retried"
                    )
                retries += 1
                base = policy.backoff
                cap = min(base * 2 ** (retries - 1), base * _MAX_BACKOFF_FACTOR)
                wait = self.rng.uniform(0, cap)
                if deadline is not None and loop.time() + wait >= deadline:
                    await asyncio.sleep(max(0.0, deadline - loop.time()))
                    flow.response = local_reply(504, TIMEOUT_BODY, request=req)
                    return
                await asyncio.sleep(wait)
                continue
            flow.response = _to_response(reply, failure, req)
            return

    async def _send_once(
        self, endpoint: MirrorEndpoint, request: MirrorRequest, limits: list[float]
    ) -> CapturedResponse:
        """One attempt. Raises _Failed(connect-failure | reset | timeout)."""
        progress = Progress(capture=_WHOLE_BODY)
        client = self.client
        try:
            async with asyncio.timeout(min(limits) if limits else None):
                ex, _ = await client.exchange(progress, endpoint, request)
            reply = ex.take_response()
            client.release(ex)
            return reply
        except TimeoutError as e:
            _give_up(progress)
            if progress.phase == "connect":
                raise _Failed("connect-failure", "connect timed out") from e
            raise _Failed("timeout", "attempt timed out") from e
        except asyncio.CancelledError:
            _give_up(progress)
            raise
        except InvalidRequest as e:
            raise _Failed("reset", f"invalid request: {e}") from e
        except Exception as e:
            _give_up(progress)
            _, detail = classify(e)
            # No connection (refused, unreachable, DNS, TLS handshake or verification): Envoy's
            # connect-failure; anything after the connection was made: a reset.
            at_connect = progress.phase == "connect" or isinstance(e, TLSConfigError)
            if at_connect:
                raise _Failed("connect-failure", detail) from e
            if isinstance(e, StreamReset) and e.refused:
                raise _Failed("refused-stream", detail) from e
            raise _Failed("reset", detail) from e

    def close(self) -> None:
        self.client.close()


# --- the exchange's helpers ---


def _give_up(progress: Progress) -> None:
    conn = progress.conn
    if conn is not None:
        progress.conn = None
        conn.abort()


def _grpc_status(reply: CapturedResponse) -> str | None:
    for fields in (reply.trailers, reply.fields):
        for name, value in fields:
            if name.lower() == b"grpc-status":
                return value.decode("latin-1")
    return None


class _Failed(Exception):
    def __init__(self, kind: Failure, detail: str) -> None:
        super().__init__(detail)
        self.kind: Failure = kind
        self.detail = detail


def _sni(cluster: Cluster | None, host: str) -> str:
    if cluster is not None:
        return (cluster.tls.sni if cluster.tls is not None else None) or cluster.host
    return host


def _request_headers(req: http.Request) -> list[tuple[bytes, bytes]]:
    """Host first (the client's, or the rewritten authority; an HTTP/2 client sent it as
    :authority), then the client's fields; the encoders drop the hop-by-hop ones."""
    out = [(b"host", (req.host_header or req.host).encode("utf-8", "surrogateescape"))]
    out.extend((n, v) for n, v in req.headers.fields if n.lower() != b"host")
    return out


def _to_response(
    reply: CapturedResponse | None, failure: Failure | None, req: http.Request
) -> http.Response:
    method = req.method
    if reply is None:
        if failure == "timeout":
            return local_reply(504, TIMEOUT_BODY, request=req)
        if failure == "connect-failure":
            return local_reply(503, CONNECT_FAILURE_BODY, request=req)
        if failure == "refused-stream":
            return local_reply(503, REFUSED_BODY, request=req)
        return local_reply(503, RESET_BODY, request=req)
    # Names lower-cased (they are case-insensitive, RFC 9110 5.1): the spelling HTTP/2 uses,
    # and the same whatever the upstream's.
    fields = [(n.lower(), v) for n, v in reply.fields if n.lower() not in _RESPONSE_DROP]
    resp = http.Response.make(reply.status, b"", fields)
    resp.reason = reply.reason.decode("latin-1")
    resp.raw_content = reply.body  # as received: content-encoding untouched
    if reply.trailers and req.is_http2:
        resp.trailers = http.Headers(list(reply.trailers))
    upstream_length = [v for n, v in reply.fields if n.lower() == b"content-length"]
    # make() wrote its own content-length; the body is already de-chunked. An HTTP/2 message
    # needs none (a gRPC response has none), so one is kept only where upstream sent it.
    if method.upper() == "HEAD" or (req.is_http2 and not upstream_length):
        if upstream_length:
            resp.headers[b"content-length"] = upstream_length[0]
        else:
            resp.headers.pop(b"content-length", None)
    elif reply.status in (204, 304) or reply.status < 200:
        resp.headers.pop(b"content-length", None)
    else:
        resp.headers[b"content-length"] = str(len(reply.body)).encode()
    return resp
