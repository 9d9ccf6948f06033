"""The mitmproxy addon: options, hooks and commands. Glue only; decisions live in pure modules.

Per request (the `request` hook, or `requestheaders` for streamed bodies):
match the compiled RouteTable -> point the flow at the primary endpoint (keeping the client's
Host) -> for each sampled mirror policy, build the copy and hand it to the MirrorWriter, which
sends it in the background. The hook never waits for a mirror.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from mitmproxy import command, ctx, exceptions, http
from mitmproxy.proxy import mode_specs

from meshmirror import primary, shadow
from meshmirror.breaker import CircuitBreaker
from meshmirror.configset import ConfigSet, load_config_set
from meshmirror.diagnostics import Severity
from meshmirror.inspection import Inspection
from meshmirror.loader import PathError
from meshmirror.match import RequestView, match_request
from meshmirror.outcomes import MirrorStats, Outcome, format_outcome
from meshmirror.registry import Cluster, Endpoint
from meshmirror.reload import ConfigWatcher, find_self_mirrors, self_mirror_diagnostics
from meshmirror.routes import MirrorPolicy, Route, RouteTable
from meshmirror.sampling import Sampler, pick_weighted, should_mirror
from meshmirror.units import parse_duration, parse_size
from meshmirror.writer import MirrorEndpoint, MirrorRequest, MirrorResult, MirrorWriter

log = logging.getLogger("meshmirror")

# Marks flows this addon made itself, so they are never mirrored again.
COPY_MARK = "meshmirror.copy"
# Set in requestheaders when the body is streamed: routing was already decided there.
ROUTED_MARK = "meshmirror.routed"

T = TypeVar("T")

VERBOSITIES = ("each", "errors", "summary")
SAMPLING_MODES = ("random", "request-id")


class Mirror:
    def __init__(self) -> None:
        self.table: RouteTable | None = None
        self.generation = 0
        self.stats = MirrorStats()
        self.writer: MirrorWriter | None = None
        self.sampler = Sampler(mode="random", seed=None)
        self.primary = primary.Primary()  # fault sampling, timeout and retries (primary.py)
        self.suffix = shadow.DEFAULT_SUFFIX
        self.max_body = 4 * 1024 * 1024
        self.verbosity = "errors"
        self.summary_interval = 30.0
        self._writer_params: tuple[float, int] | None = None
        self._rr: dict[str, int] = {}
        self._summary_task: asyncio.Task[None] | None = None
        self._summary_seen = -1
        self.redact: dict[bytes, bytes | None] = {}
        self.methods: frozenset[str] = frozenset()
        # Mirror flows, the outcome log, comparison and replay pacing: a child addon.
        self.inspection = Inspection(self._writer_has_room)
        self.addons = [self.inspection]
        self.breaker = CircuitBreaker(5, 10.0, time.monotonic)
        self.watcher = ConfigWatcher(lambda: self._reload("file change"))
        self._config: tuple[list[str], str | None] = ([], None)
        self._config_set: ConfigSet | None = None
        # Our own listen addresses (None: OS-chosen port, known only in running()), and the
        # mirror clusters found to point at them: their copies are skipped as `loop`.
        self._listen: list[tuple[str, int]] | None = None
        self.loop_clusters: frozenset[str] = frozenset()
        self.reloads = {"loaded": 0, "rejected": 0}

    # --- options --------------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        from collections.abc import Sequence as AbcSequence

        loader.add_option(
            "mirror_config",
            AbcSequence[str],
            [],
            "Istio YAML files or directories (VirtualService, DestinationRule, ServiceEntry, "
            "Gateway, WorkloadEntry, Service) that define routes and mirrors. Repeat to add more. "
            "Any error stops startup with every located message.",
        )
        loader.add_option(
            "mirror_gateway",
            str,
            "",
            "The Gateway this proxy acts as (ns/name or name). Empty: the only Gateway in the "
            "config, or the mesh (sidecar semantics) when there is none.",
        )
        loader.add_option(
            "mirror_host_suffix",
            str,
            shadow.DEFAULT_SUFFIX,
            "Appended to the host part of Host/:authority on each copy, before any :port "
            "(httpbin:8000 -> httpbin-shadow:8000). Empty keeps the original Host, as "
            "Istio >= 1.28 does by default.",
        )
        loader.add_option(
            "mirror_timeout",
            str,
            "5s",
            "Time limit for one whole mirrored exchange, connect included "
            "(Go duration: 5s, 250ms).",
        )
        loader.add_option(
            "mirror_max_inflight",
            int,
            256,
            "Copies in flight per mirror cluster. A sampled copy over the cap is dropped and "
            "counted, never queued and never waited on.",
        )
        loader.add_option(
            "mirror_max_body",
            str,
            "4m",
            "Largest request body that is mirrored (4m, 512k, bytes). Larger bodies are not "
            "mirrored (outcome skipped: body_too_large); copies are never truncated.",
        )
        loader.add_option(
            "mirror_sampling",
            str,
            "random",
            "How a request is sampled: random, or request-id (a stable hash of x-request-id, so "
            "every replica decides alike; random when the header is absent).",
            choices=SAMPLING_MODES,
        )
        loader.add_option(
            "mirror_seed",
            int | None,
            None,
            "Seed for random sampling decisions, to make them reproducible.",
        )
        loader.add_option(
            "mirror_verbosity",
            str,
            "errors",
            "Event log: each (one line per mirror outcome), errors (failures, drops and skips, "
            "plus a periodic summary) or summary (the periodic summary only).",
            choices=VERBOSITIES,
        )
        loader.add_option(
            "mirror_redact_headers",
            AbcSequence[str],
            [],
            "Headers removed from every copy (e.g. Authorization), or kept with a masked value "
            "with NAME=mask (e.g. Cookie=mask). The primary is never changed. Header values never "
            "appear in meshmirror's log lines, whatever this says.",
        )
        loader.add_option(
            "mirror_methods",
            AbcSequence[str],
            [],
            "Only requests with these methods are mirrored (e.g. GET, HEAD); others are counted as "
            "skipped: method. Empty: every method, as Istio does.",
        )
        loader.add_option(
            "mirror_summary_interval",
            str,
            "30s",
            "How often the mirror summary line is logged when anything changed (Go duration; 0 "
            "turns it off).",
        )
        loader.add_option(
            "mirror_breaker_failures",
            int,
            5,
            "Consecutive failed copies after which a mirror cluster fails fast (copies dropped: "
            "circuit_open) for mirror_breaker_cooldown, then one probe copy decides. 0 disables.",
        )
        loader.add_option(
            "mirror_breaker_cooldown",
            str,
            "10s",
            "How long an open mirror circuit drops copies before a probe is let through "
            "(Go duration).",
        )
        loader.add_option(
            "mirror_reload_interval",
            str,
            "2s",
            "How often the files of mirror_config are checked for changes (Go duration; 0 turns "
            "watching off; the command mirror.reload always works). A change that does not "
            "validate is rejected and the last good config keeps serving.",
        )

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if updated & {"keep_host_header", "mirror_config"} and "keep_host_header" in opts:
            if not opts.keep_host_header:
                # Matching and the shadow Host need the client's Host; reverse mode rewrites it.
                opts.keep_host_header = True
                log.info("meshmirror: turned on keep_host_header (the client's Host is needed)")
        if updated & {"mirror_timeout", "mirror_max_inflight"}:
            timeout = _option("mirror_timeout", parse_duration)
            if timeout <= 0:
                raise exceptions.OptionsError(
                    f"mirror_timeout must be positive (got {opts.mirror_timeout!r})"
                )
            if opts.mirror_max_inflight < 1:
                raise exceptions.OptionsError(
                    f"mirror_max_inflight must be at least 1 (got {opts.mirror_max_inflight})"
                )
            params = (timeout, opts.mirror_max_inflight)
            if params != self._writer_params:
                if self.writer is not None:
                    self.writer.close()
                self.writer = MirrorWriter(timeout=timeout, max_inflight=params[1])
                self._writer_params = params
        if "mirror_max_body" in updated:
            self.max_body = _option("mirror_max_body", parse_size)
        if "mirror_summary_interval" in updated:
            self.summary_interval = _option("mirror_summary_interval", parse_duration)
        if "mirror_redact_headers" in updated:
            self.redact = _option("mirror_redact_headers", shadow.parse_redactions)
        if "mirror_methods" in updated:
            self.methods = frozenset(m.strip().upper() for m in opts.mirror_methods if m.strip())
        if updated & {"mirror_sampling", "mirror_seed"}:
            self.sampler = Sampler(mode=opts.mirror_sampling, seed=opts.mirror_seed)
            self.primary.seed(opts.mirror_seed)
        if "mirror_host_suffix" in updated:
            self.suffix = opts.mirror_host_suffix
        if "mirror_verbosity" in updated:
            self.verbosity = opts.mirror_verbosity
        if updated & {"mirror_breaker_failures", "mirror_breaker_cooldown"}:
            if opts.mirror_breaker_failures < 0:
                raise exceptions.OptionsError(
                    f"mirror_breaker_failures must be >= 0 (got {opts.mirror_breaker_failures})"
                )
            cooldown = _option("mirror_breaker_cooldown", parse_duration)
            self.breaker = CircuitBreaker(opts.mirror_breaker_failures, cooldown, time.monotonic)
        if "mirror_reload_interval" in updated:
            self.watcher.interval = _option("mirror_reload_interval", parse_duration)
            if self.watcher.running and self.watcher.interval <= 0:
                self.watcher.stop()
        if updated & {"mirror_config", "mirror_gateway"}:
            self._listen = _configured_listen_addrs()
            self._load_config(list(opts.mirror_config), opts.mirror_gateway or None)

    def _load_config(self, paths: Sequence[str], gateway: str | None) -> None:
        self._config = (list(paths), gateway)
        self.watcher.rebase(paths)
        if not paths:
            self.table = None
            log.warning("meshmirror: no mirror_config set; requests pass through unmirrored")
            return
        try:
            cs = load_config_set(paths, gateway=gateway)
        except PathError as e:
            raise exceptions.OptionsError(f"mirror_config: {e}") from e
        for d in cs.diagnostics:
            if d.severity is Severity.INFO:
                log.info(d.format())
            elif d.severity is Severity.WARNING:
                log.warning(d.format())
        if cs.table is not None and not cs.errors and self._listen:
            cs.diagnostics.extend(
                self_mirror_diagnostics(cs, find_self_mirrors(cs.table, self._listen))
            )
        if cs.errors or cs.table is None:
            lines = [d.format() for d in cs.errors] or ["no route table could be built"]
            raise exceptions.OptionsError(
                f"mirror_config: {len(cs.errors)} error(s) in {', '.join(paths)}:\n"
                + "\n".join(lines)
            )
        self._install(cs, paths)

    def _install(self, cs: ConfigSet, paths: Sequence[str]) -> None:
        assert cs.table is not None
        self.generation += 1
        self._config_set = cs
        self.table = _with_generation(cs.table, self.generation)
        self.inspection.set_resources(cs.resources)
        self._mark_self_mirrors()
        counts = ", ".join(f"{v} {k}" for k, v in sorted(cs.counts().items()))
        mirrors = sum(len(r.mirrors) for vh in self.table.virtual_hosts for r in vh.routes)
        log.info(
            f"meshmirror: config generation {self.generation} loaded from {', '.join(paths)}: "
            f"{counts}; acting as {self.table.gateway or 'mesh'}; "
            f"{len(self.table.virtual_hosts)} virtual host(s), {mirrors} mirror policies"
        )

    def _reload(self, why: str) -> bool:
        """Load mirror_config again; swap the table in only when the whole set is valid."""
        paths, gateway = self._config
        if not paths:
            log.info(f"meshmirror: {why}: mirror_config is empty, nothing to reload")
            return False
        self.watcher.rebase(paths)
        try:
            cs = load_config_set(paths, gateway=gateway)
        except PathError as e:
            return self._reject(why, [f"mirror_config: {e}"])
        if cs.table is not None and not cs.errors and self._listen:
            found = find_self_mirrors(cs.table, self._listen)
            cs.diagnostics.extend(self_mirror_diagnostics(cs, found))
        if cs.errors or cs.table is None:
            return self._reject(
                why, [d.format() for d in cs.errors] or ["no route table could be built"]
            )
        for d in cs.warnings:
            log.warning(d.format())
        log.info(f"meshmirror: {why}: config change is valid; swapping it in")
        self.reloads["loaded"] += 1
        self._install(cs, paths)
        return True

    def _reject(self, why: str, errors: list[str]) -> bool:
        self.reloads["rejected"] += 1
        for line in errors:
            log.error(f"meshmirror: {line}")
        log.error(
            f"meshmirror: {why}: config change rejected ({len(errors)} error(s)); "
            f"generation {self.generation} keeps serving"
        )
        return False

    def _mark_self_mirrors(self) -> None:
        """Mirror clusters pointing at our own OS-chosen listen address (checked once the
        port is known): their copies are skipped as `loop` instead of stopping the proxy."""
        table, cs = self.table, self._config_set
        if table is None or cs is None or not self._listen:
            self.loop_clusters = frozenset()
            return
        found = find_self_mirrors(table, self._listen)
        self.loop_clusters = frozenset(h.policy.cluster.name for h in found)
        for d in self_mirror_diagnostics(cs, found):
            # A warning, not an error: mitmproxy exits on errors logged during startup.
            log.warning(f"meshmirror: {d.format()}; its copies are skipped: loop")

    # --- lifecycle ------------------------------------------------------------------------------

    def running(self) -> None:
        # Startup leaves ~100k long-lived objects (mitmproxy, the route table); moving them out of
        # the collector's reach keeps full collections from pausing requests for 50-80 ms (the
        # benchmark's p99 fell from 82 to 13 ms at 100% mirroring). Refcounting still frees them.
        gc.collect()
        gc.freeze()
        if self._summary_task is None and self.summary_interval > 0:
            self._summary_task = asyncio.get_running_loop().create_task(self._summaries())
        self.watcher.start(asyncio.get_running_loop())
        if self._listen is None:  # -p 0: the OS chose the port; check the config against it
            proxyserver = ctx.master.addons.get("proxyserver")
            if proxyserver is not None:
                self._listen = [(str(a[0]), int(a[1])) for a in proxyserver.listen_addrs()]
                self._mark_self_mirrors()

    def done(self) -> asyncio.Future[None] | None:
        """Drain in-flight copies before exit (`mitmdump -nr rec.mitm` must finish its mirrors).

        Sync on purpose: an async `done` breaks mitmproxy's script hot-reload. The returned task is
        awaited by mitmproxy on shutdown and simply runs on when a reload calls us synchronously.
        """
        if self._summary_task is not None:
            self._summary_task.cancel()
            self._summary_task = None
        self.watcher.stop()
        writer = self.writer
        if writer is None or writer.inflight() == 0:
            self._final_summary()
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            writer.close()
            self._final_summary()
            return None
        timeout = (self._writer_params or (5.0, 0))[0] + 1.0
        return loop.create_task(self._drain(writer, timeout))

    async def _drain(self, writer: MirrorWriter, timeout: float) -> None:
        cancelled = await writer.drain(timeout)
        if cancelled:
            log.warning(f"meshmirror: {cancelled} mirror(s) still in flight at exit were cancelled")
        writer.close()
        self._final_summary()

    def _writer_has_room(self) -> bool:
        """Room for one more copy: recordings wait for it rather than drop copies as overflow."""
        writer, params = self.writer, self._writer_params
        return writer is None or params is None or writer.inflight() < params[1]

    def _final_summary(self) -> None:
        if self.stats.clusters:
            log.info(self.stats.summary_line())

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.summary_interval)
            seen = self.stats.totals().finished
            if seen != self._summary_seen and self.verbosity != "each":
                self._summary_seen = seen
                log.info(self.stats.summary_line())

    # --- hooks ----------------------------------------------------------------------------------

    # The request hooks are sync for the common case; they return an awaitable (which mitmproxy
    # awaits, holding only this flow) when a fault delay or the route's timeout/retries apply.

    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # A streamed body opens the upstream connection right after this hook, so routing must
        # be decided now; the body will never be available for a copy.
        if flow.request.stream and self.table is not None and flow.live:
            flow.metadata[ROUTED_MARK] = True
            return self._handle(flow, streamed=True)
        return None

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if self.table is None or flow.metadata.get(ROUTED_MARK):
            return None
        return self._handle(flow, streamed=False)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if primary.RESPONSE_OPS in flow.metadata:
            primary.finalize_response(flow)

    def _handle(self, flow: http.HTTPFlow, *, streamed: bool) -> Awaitable[None] | None:
        table = self.table
        if table is None or flow.metadata.get(COPY_MARK):
            return None
        req = flow.request
        authority = req.host_header or ""
        view = RequestView.build(
            method=req.method,
            scheme="https" if flow.client_conn.tls_established else "http",
            authority=authority,
            path=req.path,
            header_items=req.headers.items(multi=True),
            port=table.listener_port,
        )
        found = match_request(table, view)
        if found is None:
            return None
        route = found.route
        live = flow.live and flow.response is None and flow.error is None
        if route.action != "route":
            # Envoy answers redirect / direct_response itself: nothing goes upstream or to a mirror.
            if live:
                primary.answer_locally(flow, route, view.scheme)
            return None
        if live and route.fault is not None:
            delay, abort = self.primary.sample_fault(route)
            if delay > 0 or abort is not None:
                gen = table.generation
                return self._faulted(flow, route, authority, streamed, gen, delay, abort)
        return self._forward(flow, route, authority, streamed, table.generation)

    async def _faulted(
        self,
        flow: http.HTTPFlow,
        route: Route,
        authority: str,
        streamed: bool,
        generation: int,
        delay: float,
        abort: int | None,
    ) -> None:
        # Envoy's fault filter runs before the router: the delay holds the request (its copy
        # leaves afterwards); an abort answers it, so it is never routed nor mirrored.
        if delay > 0:
            await asyncio.sleep(delay)
        if abort is not None:
            self.primary.abort(flow, abort)
            return
        pending = self._forward(flow, route, authority, streamed, generation)
        if pending is not None:
            await pending

    def _forward(
        self, flow: http.HTTPFlow, route: Route, authority: str, streamed: bool, generation: int
    ) -> Awaitable[None] | None:
        req = flow.request
        rand = self.sampler.value_for(req.headers.get("x-request-id"))
        dest = pick_weighted(route.clusters, rand) if route.clusters else None
        # Rewrites first: the copy must see the request as the primary sees it (spec 4.4).
        authority = primary.apply_rewrites(flow, route, dest, authority)
        live = flow.live and flow.response is None and flow.error is None
        if live:
            self._route_primary(req, route, rand, authority)
        if route.mirrors:
            self._mirror(flow, route, rand, authority, streamed, generation)
        if live and route.upstream is not None and not streamed:
            # After the copy was handed over: mirrored once, however often this is retried.
            return self.primary.exchange(flow, route.upstream, dest.cluster if dest else None)
        return None

    def _route_primary(self, req: http.Request, route: Route, rand: int, authority: str) -> None:
        if not route.clusters:
            return
        cluster = pick_weighted(route.clusters, rand).cluster
        ep = self._pick_endpoint(cluster)
        if ep is None:
            return  # no endpoints in the config: the reverse-proxy upstream serves it
        req.scheme = "https" if cluster.tls is not None else "http"
        req.host = ep.address
        req.port = ep.port
        # The host/port setters rewrite Host; the primary must see the client's Host.
        req.host_header = authority

    def _pick_endpoint(self, cluster: Cluster) -> Endpoint | None:
        eps = cluster.endpoints
        if not eps:
            return None
        if len(eps) == 1:
            return eps[0]
        i = self._rr.get(cluster.name, 0)
        self._rr[cluster.name] = i + 1
        return eps[i % len(eps)]

    def _skip_reason(self, flow: http.HTTPFlow, streamed: bool) -> str | None:
        req = flow.request
        method = req.method.upper()
        if method == "CONNECT":
            return "connect"
        if method == "PRI":
            return "h2_preface"
        if self.methods and method not in self.methods:
            return "method"
        if shadow.MARKER_HEADER.decode() in req.headers or shadow.is_shadow_host(
            req.host_header or "", self.suffix
        ):
            return "loop"
        if flow.error is not None:
            return "killed"
        if flow.live and flow.response is not None:
            return "has_response"
        if "upgrade" in req.headers:
            return "upgrade"
        if streamed or req.raw_content is None:
            return "streamed_body"
        if len(req.raw_content) > self.max_body:
            return "body_too_large"
        return None

    def _mirror(
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
        checked = False
        request_id: str | None = None
        for policy in route.mirrors:
            if not should_mirror(policy, rand):
                continue
            counters = self.stats.cluster(policy.cluster.name)
            counters.sampled += 1
            if not checked:
                skip = self._skip_reason(flow, streamed)
                if skip is None and writer is None:
                    skip = "no_writer"
                checked = True
            shadow_authority = shadow.shadow_host(authority, self.suffix)
            ep = self._pick_endpoint(policy.cluster)
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
            if request_id is None:
                request_id = req.headers.get("x-request-id")
                if request_id is None:
                    request_id = shadow.new_request_id()
                    if flow.live and flow.response is None:
                        req.headers["x-request-id"] = request_id
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
            target = _mirror_endpoint(policy.cluster, ep)
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

    # --- commands -------------------------------------------------------------------------------

    @command.command("mirror.stats")
    def stats_command(self) -> str:
        """Mirror counters per cluster as JSON: sampled, sent, failed/dropped/skipped by reason."""
        inflight: dict[str, int] = {}
        if self.writer is not None:
            for name in self.stats.clusters:
                inflight[name] = self.writer.inflight(name)
        snap = self.stats.snapshot(inflight)
        snap["generation"] = self.generation
        snap["comparison"] = self.inspection.snapshot()
        snap["reloads"] = dict(self.reloads)
        circuits = self.breaker.snapshot()
        for name, c in snap["clusters"].items():
            c["circuit"] = circuits.get(name, {"state": "closed"})
        return json.dumps(snap, indent=2, sort_keys=True)

    @command.command("mirror.reload")
    def reload_command(self) -> str:
        """Load mirror_config again now; a change with errors is rejected and logged."""
        ok = self._reload("mirror.reload")
        state = "loaded" if ok else "not loaded (see the event log)"
        return f"config {state}; generation {self.generation}"

    @command.command("mirror.routes")
    def routes_command(self) -> str:
        """The compiled route table in the shape of Envoy's route-configuration dump (JSON)."""
        if self.table is None:
            return "no route table (mirror_config is empty)"
        return json.dumps(self.table.to_envoy(), indent=2)


def _option(name: str, parse: Callable[[Any], T]) -> T:
    """Parse option `name` with `parse`, turning its ValueError into a located OptionsError."""
    value = getattr(ctx.options, name)
    try:
        return parse(value)
    except ValueError as e:
        raise exceptions.OptionsError(f"{name}: {e} (got {value!r})") from e


def _configured_listen_addrs() -> list[tuple[str, int]] | None:
    """Our listen addresses as configured; None when a port is left to the OS (`-p 0`)."""
    opts = ctx.options
    if "mode" not in opts:
        return []
    out: list[tuple[str, int]] = []
    for spec in opts.mode:
        try:
            mode = mode_specs.ProxyMode.parse(spec)
        except ValueError:
            return []
        port = mode.listen_port(opts.listen_port)
        if port is None:
            continue
        if port == 0:
            return None
        out.append((mode.listen_host(opts.listen_host), port))
    return out


def _mirror_endpoint(cluster: Cluster, ep: Endpoint) -> MirrorEndpoint:
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


def _with_generation(table: RouteTable, generation: int) -> RouteTable:
    import dataclasses

    return dataclasses.replace(table, generation=generation)
