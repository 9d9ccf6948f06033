"""The mirror fan-out for one matched route: sample, guard, build each copy, submit it.

For every mirror policy of the route that samples the request, exactly one outcome follows:
the copy is skipped (a guard says why), dropped (circuit open, writer full), or handed to the
MirrorWriter, whose callback counts it as sent or failed. Each outcome updates the cluster's
counters and, per `verbosity`, writes one event-log line. Nothing here waits for a mirror.

The addon owns a `Fanout` and sets its fields from the options in `configure`; they are read
once per copy on the request path, so they are kept ready-made (frozensets, parsed sizes).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable
from typing import NamedTuple

from mitmproxy import http

from meshmirror import grpc
from meshmirror.mesh.clusters import Cluster, Endpoint
from meshmirror.mirror import shadow
from meshmirror.mirror.breaker import CircuitBreaker
from meshmirror.mirror.types import CopyWriter, MirrorEndpoint, MirrorRequest, MirrorResult
from meshmirror.mitm.endpoints import UpstreamTls, cluster_endpoint
from meshmirror.mitm.headers import RequestHeaders
from meshmirror.mitm.inspection import SAMPLED_METADATA, Inspection
from meshmirror.mitm.probes import Probe
from meshmirror.mitm.timeline import Timeline
from meshmirror.outcomes.counters import MirrorStats, Outcome, classify, format_outcome
from meshmirror.outcomes.metrics import Latencies
from meshmirror.routing.sampling import should_mirror
from meshmirror.routing.table import MirrorPolicy, Route, RouteTable, upstream_protocol

log = logging.getLogger("meshmirror")

# RFC 9110 5.6.2: a method is a token. Envoy's codecs refuse any other; the copy would be a
# malformed request line (an HTTP/2 `:method` of `GET /x` becomes `GET /x /path HTTP/1.1`).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Skips for a Host no copy can be well-formed with: the shadow host is not computed for them.
_HOST_SKIPS = frozenset({"no_host", "multiple_hosts", "ip_host"})


class EndpointPicker:
    """Round-robin over a cluster's endpoints; the primary and the copies share one rotation
    per cluster name."""

    def __init__(self) -> None:
        self._rr: dict[str, int] = {}

    def pick(self, cluster: Cluster) -> Endpoint | None:
        i = self.pick_index(cluster)
        return None if i is None else cluster.endpoints[i]

    def pick_index(self, cluster: Cluster) -> int | None:
        """The index in `cluster.endpoints` of the next endpoint; None when it has none."""
        n = len(cluster.endpoints)
        if n <= 1:
            return 0 if n else None
        i = self._rr.get(cluster.name, 0)
        self._rr[cluster.name] = i + 1
        return i % n


class _Copy(NamedTuple):
    """One sampled copy, as the recorder reports it."""

    flow: http.HTTPFlow
    route: Route
    policy: MirrorPolicy
    ep: Endpoint | None
    shadow_authority: str
    generation: int
    request_id: str


class Fanout:
    def __init__(self, inspection: Inspection, endpoints: EndpointPicker) -> None:
        self.inspection = inspection
        self.endpoints = endpoints
        self.stats = MirrorStats()
        # Set with mirror_metrics: the shadow's latency per cluster, and the clusters a flow was
        # sampled for (so Inspection can observe the primary's latency for them).
        self.latencies: Latencies | None = None
        self.writer: CopyWriter | None = None
        self.breaker = CircuitBreaker(5, 10.0, time.monotonic)
        self.suffix = shadow.DEFAULT_SUFFIX
        self.max_body = 4 * 1024 * 1024
        self.verbosity = "errors"
        self.redact: dict[bytes, bytes | None] = {}
        self.methods: frozenset[str] = frozenset()
        # Mirror clusters found to point at our own listen address: their copies are `loop`.
        self.loop_clusters: frozenset[str] = frozenset()
        # Mirror endpoints of the served table, per cluster name and the client's protocol
        # (`serve`): targets[name][client_http2][i] for the cluster's i-th endpoint.
        self.targets: dict[str, tuple[tuple[MirrorEndpoint, ...], tuple[MirrorEndpoint, ...]]] = {}
        # mitmproxy's upstream TLS options, for the copies' TLS (as for its own connections).
        self.tls_options = UpstreamTls()
        self.at_gateway = False  # the served table's proxy acts as a gateway
        # With mirror_timeline: every copy's progress is written there.
        self.timeline: Timeline | None = None

    def skip_reason(
        self,
        flow: http.HTTPFlow,
        streamed: bool,
        authority: str,
        headers: RequestHeaders,
        after_body: bool = False,
    ) -> str | None:
        """Why the request must not be mirrored; None when a copy may be sent. The Host checks
        come before the loop guard: a copy is only ever made with a single name-based Host.
        `after_body`: a call passed through as it arrived (streams.py), copied at its end,
        when its response may have begun already."""
        req = flow.request
        method = req.method  # a property that decodes on every read
        if not _TOKEN.fullmatch(method):
            return "bad_method"
        method = method.upper()
        if method == "CONNECT":
            return "connect"
        if method == "PRI":
            return "h2_preface"
        if self.methods and method not in self.methods:
            return "method"
        host_skip = self._host_skip(authority, headers)
        if host_skip is not None:
            return host_skip
        if headers.marker or shadow.is_shadow_host(authority, self.suffix):
            return "loop"
        if flow.error is not None:
            return "killed"
        if flow.live and flow.response is not None and not after_body:
            return "has_response"
        if headers.upgrade:
            return "upgrade"
        if streamed or req.raw_content is None:
            return "body_too_large" if after_body else "streamed_body"
        if len(req.raw_content) > self.max_body:
            return "body_too_large"
        return None

    def _host_skip(self, authority: str, headers: RequestHeaders) -> str | None:
        if not authority.strip():
            # An HTTP/1.0 request without Host: Envoy refuses a request without an authority
            # (and `-shadow` alone is not a host), so it is not mirrored.
            return "no_host"
        if headers.host_fields > 1:
            # Envoy refuses repeated Host headers; joined they would be `a, b-shadow`.
            return "multiple_hosts"
        if self.suffix and authority.startswith("["):
            # An IPv6 literal has no name to add the suffix to (`[::1]-shadow:8000` is no valid
            # Host), and a copy keeping the literal could not be told from the request by its
            # Host. Envoy does not handle this case (it splits the authority at ":"), so the
            # copy is skipped. An IPv4 literal is kept as it is today: `127.0.0.1-shadow` is a
            # well-formed name. (With an empty suffix the Host is left as it is, so it is fine.)
            return "ip_host"
        return None

    def mirror(
        self,
        flow: http.HTTPFlow,
        route: Route,
        rand: int,
        authority: str,
        streamed: bool,
        generation: int,
        headers: RequestHeaders,
        request_id: str,
        *,
        after_body: bool = False,
    ) -> None:
        """Sample each mirror policy of `route` with the request's draw `rand`; `headers` is
        the request's one header scan, `request_id` the X-Request-Id the primary carries.
        `after_body`: a call passed through as it arrived, copied now that it ended (its body
        is missing when it passed mirror_max_body: `body_too_large`)."""
        writer = self.writer
        req = flow.request
        skip: str | None = None
        checked = False
        shadow_authority = ""
        mreq: MirrorRequest | None = None
        grpc_call = False
        stats = self.stats
        # mirror_replay_sample=all: a recorded request goes to every mirror its rule names.
        every = not flow.live and self.inspection.replay_all
        for policy in route.mirrors:
            cluster = policy.cluster
            counters = stats.cluster(cluster.name)
            counters.matched += 1
            counters.expected += policy.share
            stats.rule_matches[route.label, cluster.name] += 1
            if not (every or should_mirror(policy, rand)):
                continue
            counters.sampled += 1
            if self.latencies is not None:
                flow.metadata.setdefault(SAMPLED_METADATA, []).append(cluster.name)
            if not checked:
                # Once per request, whatever the number of mirror policies.
                checked = True
                skip = self.skip_reason(flow, streamed, authority, headers, after_body)
                if skip is None and writer is None:
                    skip = "no_writer"
                shadow_authority = (
                    authority if skip in _HOST_SKIPS else shadow.shadow_host(authority, self.suffix)
                )
            i = self.endpoints.pick_index(cluster)
            ep = cluster.endpoints[i] if i is not None else None
            # One record per copy, built once: the recorder reads it whatever the outcome.
            copy = _Copy(flow, route, policy, ep, shadow_authority, generation, request_id)
            reason = skip or (None if ep is not None else "no_endpoints")
            if reason is None and cluster.name in self.loop_clusters:
                reason = "loop"
            if reason is not None or i is None or ep is None or writer is None:
                self._not_sent(copy, Outcome.SKIPPED, reason or "no_endpoints")
                continue
            if mreq is None:
                # One copy serves every mirror policy: writers only read it. A live request
                # already carries request_id; a recorded one gets it on the copy only.
                copy_headers = shadow.mirror_headers(
                    req.headers.fields,
                    shadow=shadow_authority,
                    forwarded_for=shadow.host_address(),
                    request_id=request_id,
                    redact=self.redact,
                )
                mreq = MirrorRequest(
                    method=req.method,
                    target=req.path,
                    headers=copy_headers,
                    body=req.raw_content or b"",
                )
                grpc_call = grpc.is_grpc(req.headers.get("content-type", ""))
            targets = self.targets.get(cluster.name)
            if targets is not None:
                target = targets[req.is_http2][i]
            else:
                # A request still on the table served before a reload (held by a fault delay).
                protocol = upstream_protocol(cluster, at_gateway=self.at_gateway)
                target = cluster_endpoint(cluster, ep, protocol, req.is_http2, self.tls_options)
            allowed, transition = self.breaker.allow(cluster.name)
            if transition is not None:
                log.info(f"meshmirror: {transition.format()}")
            if not allowed:
                self._not_sent(copy, Outcome.DROPPED, "circuit_open")
                continue
            probe = self.inspection.probe(
                flow, route, policy, ep, target, mreq, generation, request_id
            )
            done = self._on_done(copy, probe)
            if self.timeline is not None:
                done = self._timed(done, self.timeline, request_id, cluster.name)
            if grpc_call:
                done = _grpc_checked(done)
            capture = probe.capture if probe is not None else 0
            if not writer.submit(cluster.name, target, mreq, done, capture=capture):
                self.breaker.release(cluster.name)
                self._not_sent(copy, Outcome.DROPPED, "overflow", probe)

    def serve(self, table: RouteTable | None) -> None:
        """Build the mirror endpoints of a newly served table, once per config generation (and
        when the TLS options change): `targets[cluster][client_http2][i]` is what the writer
        gets for the cluster's i-th endpoint, for a request over HTTP/1.x or HTTP/2."""
        targets: dict[str, tuple[tuple[MirrorEndpoint, ...], tuple[MirrorEndpoint, ...]]] = {}
        options = self.tls_options
        self.at_gateway = table is not None and table.gateway is not None
        for vh in table.virtual_hosts if table is not None else ():
            for route in vh.routes:
                for policy in route.mirrors:
                    c = policy.cluster
                    if c.name in targets:
                        continue
                    protocol = table.upstream_protocol(c)  # type: ignore[union-attr]
                    http1, http2 = (
                        tuple(cluster_endpoint(c, ep, protocol, h2, options) for ep in c.endpoints)
                        for h2 in (False, True)
                    )
                    targets[c.name] = (http1, http2 if http2 != http1 else http1)
        self.targets = targets

    # --- the recorder: every sampled copy's outcome is classified and recorded here, once ------

    @staticmethod
    def _timed(
        done: Callable[[MirrorResult], None], timeline: Timeline, request_id: str, cluster: str
    ) -> Callable[[MirrorResult], None]:
        submitted = time.time()

        def timed_done(result: MirrorResult) -> None:
            done(result)
            outcome, _ = classify(result.status, result.failure)
            timeline.copy_done(request_id, cluster, submitted, outcome.value, result)

        return timed_done

    def _not_sent(
        self, copy: _Copy, outcome: Outcome, reason: str, probe: Probe | None = None
    ) -> None:
        counters = self.stats.cluster(copy.policy.cluster.name)
        (counters.skipped if outcome is Outcome.SKIPPED else counters.dropped)[reason] += 1
        if self.timeline is not None:
            self.timeline.copy_not_sent(
                copy.request_id, copy.policy.cluster.name, outcome.value, reason
            )
        if probe is not None:
            probe.settle(outcome, reason)
        else:
            self.inspection.not_sent(
                copy.flow,
                copy.route,
                copy.policy,
                copy.ep,
                outcome,
                reason,
                copy.generation,
                copy.request_id,
            )
        self._report(
            outcome,
            copy.route,
            copy.policy,
            copy.ep,
            copy.shadow_authority,
            reason,
            copy.generation,
        )

    def _on_done(self, copy: _Copy, probe: Probe | None) -> Callable[[MirrorResult], None]:
        route, policy, ep = copy.route, copy.policy, copy.ep
        assert ep is not None
        shadow_authority, generation = copy.shadow_authority, copy.generation
        counters = self.stats.cluster(policy.cluster.name)

        def done(result: MirrorResult) -> None:
            outcome, reason = classify(result.status, result.failure)
            counters.bytes_sent += result.bytes_sent
            counters.bytes_received += result.bytes_received
            if result.resent:
                counters.resent += 1
            # Neither a cancelled copy nor one never sent says anything about the mirror's health.
            ok = (
                None
                if result.failure == "cancelled" or outcome is Outcome.SKIPPED
                else (outcome is Outcome.SENT)
            )
            transition = self.breaker.record(policy.cluster.name, ok)
            if transition is not None:
                level = logging.WARNING if transition.new == "open" else logging.INFO
                log.log(level, f"meshmirror: {transition.format()}")
            if outcome is Outcome.SENT:
                assert result.status is not None
                counters.sent += 1
                counters.statuses[result.status] += 1
                if result.grpc_status is not None:
                    counters.grpc_statuses[result.grpc_status] += 1
                counters.latency_sum += result.latency
                if self.latencies is not None:
                    self.latencies.observe_shadow(policy.cluster.name, result.latency)
                # A re-send is worth a line wherever failures are: the mirror saw it twice.
                if self.verbosity == "each" or (result.resent and self.verbosity != "summary"):
                    log.info(
                        format_outcome(
                            outcome=Outcome.SENT,
                            rule=route.label,
                            cluster=policy.cluster.name,
                            endpoint=f"{ep.address}:{ep.port}",
                            shadow_host=shadow_authority,
                            status=result.status,
                            grpc_status=result.grpc_status,
                            latency=result.latency,
                            bytes_sent=result.bytes_sent,
                            bytes_received=result.bytes_received,
                            generation=generation,
                            resent=result.resent,
                        )
                    )
            elif outcome is Outcome.SKIPPED:
                counters.skipped[reason or "other"] += 1
                self._report(outcome, route, policy, ep, shadow_authority, reason, generation)
            else:
                failure = reason or "other"
                counters.failed[failure] += 1
                if self.verbosity != "summary":
                    log.info(
                        format_outcome(
                            outcome=Outcome.FAILED,
                            rule=route.label,
                            cluster=policy.cluster.name,
                            endpoint=f"{ep.address}:{ep.port}",
                            shadow_host=shadow_authority,
                            reason=f"{failure} ({result.detail})" if result.detail else failure,
                            latency=result.latency,
                            generation=generation,
                            resent=result.resent,
                        )
                    )
            if probe is not None:
                probe.settle(outcome, reason, result)

        return done

    def _report(
        self,
        outcome: Outcome,
        route: Route,
        policy: MirrorPolicy,
        ep: Endpoint | None,
        shadow_authority: str,
        reason: str | None,
        generation: int,
    ) -> None:
        if self.verbosity == "summary":
            return
        log.info(
            format_outcome(
                outcome=outcome,
                rule=route.label,
                cluster=policy.cluster.name,
                endpoint=f"{ep.address}:{ep.port}" if ep else "",
                shadow_host=shadow_authority,
                reason=reason or "",
                generation=generation,
            )
        )


def _grpc_checked(done: Callable[[MirrorResult], None]) -> Callable[[MirrorResult], None]:
    """A gRPC call's copy answered HTTP 200 without a `grpc-status` got an answer, but not a
    gRPC one, which proves nothing about the service: it fails as `protocol`."""

    def checked(result: MirrorResult) -> None:
        if result.status == 200 and result.grpc_status is None:
            result = dataclasses.replace(
                result,
                status=None,
                failure="protocol",
                detail="answered HTTP 200 without a grpc-status",
            )
        done(result)

    return checked
