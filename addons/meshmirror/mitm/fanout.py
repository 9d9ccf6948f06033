"""The mirror fan-out for one matched route: sample, guard, build each copy, submit it.

For every mirror policy of the route that samples the request, exactly one outcome follows:
the copy is skipped (a guard says why), dropped (circuit open, writer full), or handed to the
MirrorWriter, whose callback counts it as sent or failed. Each outcome updates the cluster's
counters and, per `verbosity`, writes one event-log line. Nothing here waits for a mirror.

The addon owns a `Fanout` and sets its fields from the options in `configure`; they are read
once per copy on the request path, so they are kept ready-made (frozensets, parsed sizes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from mitmproxy import http

from meshmirror.mesh.clusters import Cluster, Endpoint
from meshmirror.mirror import shadow
from meshmirror.mirror.breaker import CircuitBreaker
from meshmirror.mirror.types import CopyWriter, MirrorEndpoint, MirrorRequest, MirrorResult
from meshmirror.mitm.inspection import Inspection
from meshmirror.outcomes.counters import MirrorStats, Outcome, format_outcome
from meshmirror.routing.sampling import should_mirror
from meshmirror.routing.table import MirrorPolicy, Route

log = logging.getLogger("meshmirror")


class EndpointPicker:
    """Round-robin over a cluster's endpoints; the primary and the copies share one rotation
    per cluster name."""

    def __init__(self) -> None:
        self._rr: dict[str, int] = {}

    def pick(self, cluster: Cluster) -> Endpoint | None:
        eps = cluster.endpoints
        if not eps:
            return None
        if len(eps) == 1:
            return eps[0]
        i = self._rr.get(cluster.name, 0)
        self._rr[cluster.name] = i + 1
        return eps[i % len(eps)]


class HeaderFacts(NamedTuple):
    """What the copy's guards and its X-Request-Id need from the request's header fields."""

    marker: bool  # carries the loop-guard marker: it is itself a copy
    upgrade: bool
    request_id: str | None  # the first X-Request-Id, decoded as mitmproxy decodes values


def scan_headers(fields: Iterable[tuple[bytes, bytes]]) -> HeaderFacts:
    """One pass over the raw fields: each `name in req.headers` or `headers.get` would be a
    scan of its own."""
    marker = upgrade = False
    request_id: bytes | None = None
    for name, value in fields:
        lname = name.lower()
        if lname == shadow.MARKER_HEADER:
            marker = True
        elif lname == b"upgrade":
            upgrade = True
        elif lname == b"x-request-id" and request_id is None:
            request_id = value
    rid = None if request_id is None else request_id.decode("utf-8", "surrogateescape")
    return HeaderFacts(marker, upgrade, rid)


class Fanout:
    def __init__(self, inspection: Inspection, endpoints: EndpointPicker) -> None:
        self.inspection = inspection
        self.endpoints = endpoints
        self.stats = MirrorStats()
        self.writer: CopyWriter | None = None
        self.breaker = CircuitBreaker(5, 10.0, time.monotonic)
        self.suffix = shadow.DEFAULT_SUFFIX
        self.max_body = 4 * 1024 * 1024
        self.verbosity = "errors"
        self.redact: dict[bytes, bytes | None] = {}
        self.methods: frozenset[str] = frozenset()
        # Mirror clusters found to point at our own listen address: their copies are `loop`.
        self.loop_clusters: frozenset[str] = frozenset()

    def skip_reason(
        self, flow: http.HTTPFlow, streamed: bool, authority: str, fields: HeaderFacts
    ) -> str | None:
        req = flow.request
        method = req.method.upper()
        if method == "CONNECT":
            return "connect"
        if method == "PRI":
            return "h2_preface"
        if self.methods and method not in self.methods:
            return "method"
        if fields.marker or shadow.is_shadow_host(authority, self.suffix):
            return "loop"
        if flow.error is not None:
            return "killed"
        if flow.live and flow.response is not None:
            return "has_response"
        if fields.upgrade:
            return "upgrade"
        if streamed or req.raw_content is None:
            return "streamed_body"
        if len(req.raw_content) > self.max_body:
            return "body_too_large"
        return None

    def mirror(
        self,
        flow: http.HTTPFlow,
        route: Route,
        rand: int,
        authority: str,
        streamed: bool,
        generation: int,
    ) -> None:
        writer = self.writer
        req = flow.request
        skip: str | None = None
        facts: HeaderFacts | None = None
        shadow_authority = ""
        mreq: MirrorRequest | None = None
        for policy in route.mirrors:
            if not should_mirror(policy, rand):
                continue
            counters = self.stats.cluster(policy.cluster.name)
            counters.sampled += 1
            if facts is None:
                # Once per request, whatever the number of mirror policies.
                facts = scan_headers(req.headers.fields)
                skip = self.skip_reason(flow, streamed, authority, facts)
                if skip is None and writer is None:
                    skip = "no_writer"
                shadow_authority = shadow.shadow_host(authority, self.suffix)
            ep = self.endpoints.pick(policy.cluster)
            reason = skip or (None if ep is not None else "no_endpoints")
            if reason is None and policy.cluster.name in self.loop_clusters:
                reason = "loop"
            if reason is not None or ep is None or writer is None:
                counters.skipped[reason or "no_endpoints"] += 1
                self.inspection.not_sent(
                    flow, route, policy, ep, Outcome.SKIPPED, reason or "no_endpoints", generation
                )
                self._report(
                    Outcome.SKIPPED, route, policy, ep, shadow_authority, reason, generation
                )
                continue
            if mreq is None:
                # One copy serves every mirror policy: writers only read it.
                request_id = facts.request_id
                if request_id is None:
                    request_id = shadow.new_request_id()
                    if flow.live and flow.response is None:
                        # Known to be absent: appending skips the scan a headers[...] = does.
                        req.headers.fields += ((b"x-request-id", request_id.encode()),)
                headers = shadow.mirror_headers(
                    req.headers.fields,
                    shadow=shadow_authority,
                    client_ip=flow.client_conn.peername[0] if flow.client_conn.peername else None,
                    request_id=request_id,
                    redact=self.redact,
                )
                mreq = MirrorRequest(
                    method=req.method,
                    target=req.path,
                    headers=headers,
                    body=req.raw_content or b"",
                )
            target = mirror_endpoint(policy.cluster, ep)
            allowed, transition = self.breaker.allow(policy.cluster.name)
            if transition is not None:
                log.info(f"meshmirror: {transition.format()}")
            if not allowed:
                counters.dropped["circuit_open"] += 1
                self.inspection.not_sent(
                    flow, route, policy, ep, Outcome.DROPPED, "circuit_open", generation
                )
                self._report(
                    Outcome.DROPPED, route, policy, ep, shadow_authority, "circuit_open", generation
                )
                continue
            done = self._on_done(route, policy, ep, shadow_authority, generation)
            probe = self.inspection.probe(flow, route, policy, ep, target, mreq, generation)
            capture = 0
            if probe is not None:
                done, capture = probe.wrap(done), probe.capture
            if not writer.submit(policy.cluster.name, target, mreq, done, capture=capture):
                self.breaker.release(policy.cluster.name)
                counters.dropped["overflow"] += 1
                if probe is not None:
                    probe.not_sent(Outcome.DROPPED, "overflow")
                self._report(
                    Outcome.DROPPED, route, policy, ep, shadow_authority, "overflow", generation
                )

    def _on_done(
        self,
        route: Route,
        policy: MirrorPolicy,
        ep: Endpoint,
        shadow_authority: str,
        generation: int,
    ) -> Callable[[MirrorResult], None]:
        counters = self.stats.cluster(policy.cluster.name)

        def done(result: MirrorResult) -> None:
            counters.bytes_sent += result.bytes_sent
            counters.bytes_received += result.bytes_received
            ok = None if result.failure == "cancelled" else result.status is not None
            transition = self.breaker.record(policy.cluster.name, ok)
            if transition is not None:
                level = logging.WARNING if transition.new == "open" else logging.INFO
                log.log(level, f"meshmirror: {transition.format()}")
            if result.status is not None:
                counters.sent += 1
                counters.statuses[result.status] += 1
                counters.latency_sum += result.latency
                if self.verbosity == "each":
                    log.info(
                        format_outcome(
                            outcome=Outcome.SENT,
                            rule=route.label,
                            cluster=policy.cluster.name,
                            endpoint=f"{ep.address}:{ep.port}",
                            shadow_host=shadow_authority,
                            status=result.status,
                            latency=result.latency,
                            bytes_sent=result.bytes_sent,
                            bytes_received=result.bytes_received,
                            generation=generation,
                        )
                    )
            else:
                failure = result.failure or "other"
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
                        )
                    )

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


def mirror_endpoint(cluster: Cluster, ep: Endpoint) -> MirrorEndpoint:
    tls = cluster.tls
    if tls is None:
        return MirrorEndpoint(host=ep.address, port=ep.port)
    return MirrorEndpoint(
        host=ep.address,
        port=ep.port,
        tls=True,
        sni=tls.sni or cluster.host,
        ca_file=tls.ca_file,
        insecure_skip_verify=tls.insecure_skip_verify,
    )
