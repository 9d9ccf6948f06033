"""The mitmproxy addon: options, lifecycle, hooks and commands. Glue only; decisions live in
other modules.

What happens to each request is the request path's (request_path.py), whose flow hooks this
addon installs only while a config needs them; options are declared in options.py, the served
config and its hot reload live in liveconfig.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from mitmproxy import command, connection, ctx, exceptions, http, types

from meshmirror.mirror.breaker import CircuitBreaker
from meshmirror.mirror.sender import ProcessWriter, can_spawn
from meshmirror.mirror.shadow import parse_redactions
from meshmirror.mirror.types import CopyWriter
from meshmirror.mirror.writer import MirrorWriter
from meshmirror.mitm import primary
from meshmirror.mitm.connection_log import hide_streaming_lines, show_connection_lines
from meshmirror.mitm.endpoints import UpstreamTls
from meshmirror.mitm.fanout import EndpointPicker, Fanout
from meshmirror.mitm.http2 import (
    UpstreamProtocols,
    serve_prior_knowledge,
    without_trailers_for_http1,
)
from meshmirror.mitm.inspection import Inspection
from meshmirror.mitm.liveconfig import ConfigError, LiveConfig
from meshmirror.mitm.metrics_server import MetricsServer, parse_address
from meshmirror.mitm.options import (
    configured_listen_addrs,
    mode_warning,
    option_error,
    parse_default_retries,
    parse_option,
    register_options,
)
from meshmirror.mitm.request_path import RequestPath
from meshmirror.mitm.stats_table import stats_rows
from meshmirror.mitm.timeline import Timeline, reopen
from meshmirror.mitm.units import parse_duration, parse_size
from meshmirror.mitm.watch import ConfigWatcher
from meshmirror.outcomes.counters import MirrorStats
from meshmirror.outcomes.metrics import Latencies, ProxyState, render_metrics
from meshmirror.outcomes.verdict import ConditionError, evaluate, parse_condition, verdict_lines
from meshmirror.routing.sampling import Sampler
from meshmirror.routing.table import RouteTable

log = logging.getLogger("meshmirror")

# The per-flow hooks the addon may have. mitmproxy looks every hook of every addon up on every
# event, so each is an attribute only while the config needs it (`_install_hooks`).
FLOW_HOOKS = ("requestheaders", "request", "responseheaders", "response", "error")

FlowHook = Callable[[http.HTTPFlow], Awaitable[None] | None]

# mitmproxy's own upstream TLS options, which meshmirror's connections honour as well.
_UPSTREAM_TLS_OPTIONS = frozenset(
    {
        "ssl_insecure",
        "ssl_verify_upstream_trusted_ca",
        "ssl_verify_upstream_trusted_confdir",
        "client_certs",
    }
)


def _in_turn(hooks: list[FlowHook]) -> FlowHook:
    """One flow hook that calls `hooks` in order (each of them synchronous)."""

    def hook(flow: http.HTTPFlow) -> None:
        for h in hooks:
            h(flow)

    return hook


class Mirror:
    # Declared, not defined: present only while installed (see FLOW_HOOKS).
    requestheaders: FlowHook
    request: FlowHook
    responseheaders: FlowHook
    response: FlowHook
    error: FlowHook
    client_connected: Callable[[connection.Client], None]

    def __init__(self) -> None:
        self.primary = primary.Primary()  # fault sampling, timeout and retries (primary.py)
        self.endpoints = EndpointPicker()
        # HTTP/2 at mitmproxy's edges: prior-knowledge clients, upstream connections (http2.py).
        self.upstreams = UpstreamProtocols()
        self.summary_interval = 30.0
        self._writer_params: tuple[float, int, str, bool] | None = None
        self._summary_task: asyncio.Task[None] | None = None
        self._summary_seen = -1
        # Mirror flows, the outcome log, comparison and replay pacing. Not a child addon that
        # mitmproxy walks on every event: its lifecycle hooks are called from this one's, and
        # its flow hooks are installed here only while an inspection feature is on.
        self.inspection = Inspection(self._writer_has_room, self._startup_error)
        self.fanout = Fanout(self.inspection, self.endpoints)
        self.inspection.rule_matches = self.fanout.stats.rule_matches
        self.watcher = ConfigWatcher(lambda: self._reload_in_background("file change"))
        self.live = LiveConfig(self.watcher, self.inspection.set_resources)
        self._reload_task: asyncio.Task[bool] | None = None
        # running() was called; before it, errors are logged (mitmproxy exits on them) and any
        # client connection is refused: nothing is served with a config that did not load.
        self._running = False
        self._startup_failed = False
        self._metrics: MetricsServer | None = None
        self._metrics_address: tuple[str, int] | None = None
        # Each request's way through the hooks (request_path.py): it reads `table` (kept in
        # step with `live.table`), `sampler` and `timeline`, set here from the options.
        self.path = RequestPath(
            self.primary, self.endpoints, self.fanout, self.upstreams, self.inspection
        )

    @property
    def table(self) -> RouteTable | None:
        return self.path.table

    @table.setter
    def table(self, table: RouteTable | None) -> None:
        self.path.table = table

    @property
    def sampler(self) -> Sampler:
        return self.path.sampler

    @sampler.setter
    def sampler(self, sampler: Sampler) -> None:
        self.path.sampler = sampler

    @property
    def timeline(self) -> Timeline | None:
        return self.path.timeline

    @timeline.setter
    def timeline(self, timeline: Timeline | None) -> None:
        self.path.timeline = timeline

    @property
    def writer(self) -> CopyWriter | None:
        return self.fanout.writer

    @writer.setter
    def writer(self, writer: CopyWriter | None) -> None:
        self.fanout.writer = writer

    @property
    def stats(self) -> MirrorStats:
        return self.fanout.stats

    # --- options --------------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        hide_streaming_lines()
        register_options(loader)
        self.inspection.load(loader)

    def configure(self, updated: set[str]) -> None:
        """Apply changed options. A bad value at startup is logged as error lines (no traceback;
        mitmproxy exits 1 on an error logged during startup); later, e.g. `set mirror_config`
        in the console, it is raised as OptionsError and the option keeps its last good value."""
        startup = self._at_startup()
        try:
            self._configure(updated, startup)
        except exceptions.OptionsError as e:
            if not self._startup_error(e):
                raise
        self.inspection.configure(updated)
        self._install_hooks()

    def _startup_error(self, e: exceptions.OptionsError) -> bool:
        """Log a bad option's lines if the proxy is starting (True); False at run time, when
        the caller raises it to mitmproxy (this addon's and the Inspection child's)."""
        if not self._at_startup():
            return False
        self._startup_failed = True
        for line in str(e).splitlines():
            log.error(f"meshmirror: {line}")
        return True

    def _at_startup(self) -> bool:
        if self._running:
            return False
        # A script reload builds a new addon in a proxy that is already up: that is run time.
        proxyserver = ctx.master.addons.get("proxyserver")
        return not getattr(proxyserver, "is_running", False)

    def _configure(self, updated: set[str], startup: bool) -> None:
        opts = ctx.options
        fanout = self.fanout
        if updated & {"keep_host_header", "mirror_config"} and "keep_host_header" in opts:
            if not opts.keep_host_header:
                # Matching and the shadow Host need the client's Host; reverse mode rewrites it.
                opts.keep_host_header = True
                log.info("meshmirror: turned on keep_host_header (the client's Host is needed)")
        if updated & {"mirror_timeout", "mirror_max_inflight", "mirror_sender", "mirror_timeline"}:
            timeout = parse_option("mirror_timeout", parse_duration)
            if timeout <= 0:
                raise option_error(f"mirror_timeout must be positive (got {opts.mirror_timeout!r})")
            if opts.mirror_max_inflight < 1:
                raise option_error(
                    f"mirror_max_inflight must be at least 1 (got {opts.mirror_max_inflight})"
                )
            sender = opts.mirror_sender
            if sender == "process" and not can_spawn():
                log.info(
                    "meshmirror: a frozen mitmproxy cannot start the sender process; "
                    "copies are sent from the proxy's loop (mirror_sender=loop)"
                )
                sender = "loop"
            timeline = bool(opts.mirror_timeline.strip())
            params = (timeout, opts.mirror_max_inflight, sender, timeline)
            if params != self._writer_params:
                if fanout.writer is not None:
                    fanout.writer.close()
                kind = ProcessWriter if sender == "process" else MirrorWriter
                fanout.writer = kind(timeout=timeout, max_inflight=params[1], timeline=timeline)
                self._writer_params = params
                self._start_sender()
                if self.live.listen:
                    fanout.writer.set_own_addresses(self.live.listen)
        if "mirror_max_body" in updated:
            fanout.max_body = parse_option("mirror_max_body", parse_size)
        if "mirror_summary_interval" in updated:
            self.summary_interval = parse_option("mirror_summary_interval", parse_duration)
        if "mirror_redact_headers" in updated:
            fanout.redact = parse_option("mirror_redact_headers", parse_redactions)
        if "mirror_methods" in updated:
            fanout.methods = frozenset(m.strip().upper() for m in opts.mirror_methods if m.strip())
        if updated & {"mirror_sampling", "mirror_seed"}:
            self.sampler = Sampler(mode=opts.mirror_sampling, seed=opts.mirror_seed)
            self.primary.seed(opts.mirror_seed)
        if "mirror_host_suffix" in updated:
            fanout.suffix = opts.mirror_host_suffix
        if "mirror_upstream_http2" in updated:
            self.upstreams.reverse_http2 = bool(opts.mirror_upstream_http2)
            self._install_hooks()
        if updated & _UPSTREAM_TLS_OPTIONS:
            tls = UpstreamTls.from_options(opts)
            if tls != self.primary.tls_options:
                self.primary.tls_options = fanout.tls_options = tls
                self.primary.close()  # its pooled connections were made with the old settings
                fanout.serve(self.table)
        if "mirror_default_retries" in updated:
            self.primary.default_retries = parse_option(
                "mirror_default_retries", parse_default_retries
            )
        if "mirror_verbosity" in updated:
            fanout.verbosity = opts.mirror_verbosity
        if "mirror_connection_log" in updated:
            show_connection_lines(opts.mirror_connection_log)
        if "mirror_metrics" in updated:
            self._configure_metrics(opts.mirror_metrics)
        if "mirror_timeline" in updated:
            self._configure_timeline(opts.mirror_timeline.strip())
        if updated & {"mirror_breaker_failures", "mirror_breaker_cooldown"}:
            if opts.mirror_breaker_failures < 0:
                raise option_error(
                    f"mirror_breaker_failures must be >= 0 (got {opts.mirror_breaker_failures})"
                )
            cooldown = parse_option("mirror_breaker_cooldown", parse_duration)
            fanout.breaker = CircuitBreaker(opts.mirror_breaker_failures, cooldown, time.monotonic)
        if "mirror_reload_interval" in updated:
            self.watcher.interval = parse_option("mirror_reload_interval", parse_duration)
            if self.watcher.running and self.watcher.interval <= 0:
                self.watcher.stop()
        if updated & {"mirror_config", "mirror_gateway"}:
            self.live.listen = configured_listen_addrs()
            try:
                self.live.load(
                    list(opts.mirror_config), opts.mirror_gateway or None, startup=startup
                )
            except ConfigError as e:
                if not startup:
                    raise option_error(str(e)) from e
                self._startup_failed = True  # its lines are logged already
            finally:
                self._serve_live()

    def _configure_timeline(self, path: str) -> None:
        try:
            self.timeline = reopen(self.timeline, path)
        except OSError as e:
            self.timeline = None  # the old one is closed
            raise option_error(f"mirror_timeline: cannot open {path}: {e.strerror or e}") from e
        finally:
            self.fanout.timeline = self.timeline

    def _install_hooks(self) -> None:
        """Make the flow hooks this config needs attributes of the addon, and only those: a
        request no rule can claim then costs mitmproxy two calls (requestheaders, request)."""
        hooks: dict[str, Any] = {}
        on_response: list[FlowHook] = []
        if self.inspection.needs_flow_hooks():
            on_response.append(self.inspection.response)  # first: it records the trailers
            hooks["error"] = self.inspection.error
        if self.table is not None:
            # requestheaders: streamed bodies are routed there, recordings paced.
            hooks["requestheaders"] = self.path.requestheaders
            hooks["request"] = self.path.request
            http2 = self.table.may_speak_http2 or self.upstreams.reverse_http2
            # Response header operations, and gRPC responses passed through as they arrive.
            if self.table.rewrites_responses or http2:
                hooks["responseheaders"] = self.path.responseheaders
            if http2:
                on_response.append(without_trailers_for_http1)
        if len(on_response) == 1:
            hooks["response"] = on_response[0]
        elif on_response:
            hooks["response"] = _in_turn(on_response)
        timeline = self.timeline
        for name in FLOW_HOOKS:
            hook = hooks.get(name)
            if hook is None:
                self.__dict__.pop(name, None)
            else:
                setattr(self, name, timeline.timed(name, hook) if timeline else hook)
        if self._startup_failed:
            self.client_connected = self._refuse_client
        else:
            self.__dict__.pop("client_connected", None)

    def _configure_metrics(self, value: str) -> None:
        address = parse_option("mirror_metrics", parse_address) if value.strip() else None
        self.fanout.latencies = self.inspection.latencies = (
            None if address is None else (self.fanout.latencies or Latencies())
        )
        if address != self._metrics_address:
            self._metrics_address = address
            if self._metrics is not None:
                self._metrics.close()
                self._metrics = None
            if address is not None and self._running:
                self._start_metrics()

    def _start_metrics(self) -> None:
        address = self._metrics_address
        if address is None or self._metrics is not None:
            return
        server = self._metrics = MetricsServer(self._render_metrics)

        async def start() -> None:
            try:
                host, port = await server.start(*address)
            except OSError as e:
                log.error(
                    f"meshmirror: mirror_metrics: cannot listen on {address[0]}:"
                    f"{address[1]}: {e.strerror or e}"
                )
                return
            shown = f"[{host}]" if ":" in host else host
            log.info(f"meshmirror: Prometheus metrics at http://{shown}:{port}/metrics")

        asyncio.get_running_loop().create_task(start())

    def _render_metrics(self) -> bytes:
        fanout = self.fanout
        writer = fanout.writer
        state = ProxyState(
            inflight={n: writer.inflight(n) for n in fanout.stats.clusters} if writer else {},
            circuits=fanout.breaker.snapshot(),
            comparisons={key: dict(c) for key, c in self.inspection.counts.items()},
            not_compared={key: dict(c) for key, c in self.inspection.not_compared.items()},
            log_records=(
                dict(self.inspection.log_records)
                if self.inspection.log_file is not None or self.inspection.log_records.total()
                else {}
            ),
            generation=self.live.generation,
            reloads=dict(self.live.reloads),
        )
        return render_metrics(fanout.stats, fanout.latencies or Latencies(), state)

    def _reload(self, why: str) -> bool:
        """Reload on this thread (no running loop: tests, scripts)."""
        try:
            return self.live.reload(why)
        finally:
            self._serve_live()

    def _reload_in_background(self, why: str) -> asyncio.Task[bool] | None:
        """Reload with the files read and compiled in a worker thread, the result swapped in on
        the loop; None while a reload is running already."""
        if self._reload_task is not None and not self._reload_task.done():
            return None
        self._reload_task = asyncio.get_running_loop().create_task(
            self._reload_off_loop(why), name="meshmirror config reload"
        )
        return self._reload_task

    async def _reload_off_loop(self, why: str) -> bool:
        try:
            return await self.live.reload_off_loop(why)
        finally:
            self._serve_live()

    def _serve_live(self) -> None:
        """Copy what the request path reads from the live config (after any load or check)."""
        if self.live.table is not self.table:
            self.fanout.serve(self.live.table)
            self.upstreams.serve(self.live.table)
        self.table = self.live.table
        self._install_hooks()
        self.fanout.loop_clusters = self.live.loop_clusters
        if self.live.listen and self.fanout.writer is not None:
            # The run-time half of the loop guard: a name may resolve to us after the check.
            self.fanout.writer.set_own_addresses(self.live.listen)

    # --- lifecycle ------------------------------------------------------------------------------

    def _refuse_client(self, client: connection.Client) -> None:
        # mitmproxy exits right after startup errors; until then nothing is served with a
        # config that did not load (not even passed through to the reverse upstream).
        client.error = "meshmirror: mirror_config did not load"

    def running(self) -> None:
        self._running = True
        # Startup leaves ~100k long-lived objects (mitmproxy, the route table); moving them out of
        # the collector's reach keeps full collections from pausing requests for 50-80 ms (the
        # benchmark's p99 fell from 82 to 13 ms at 100% mirroring). Refcounting still frees them.
        gc.collect()
        gc.freeze()
        self._start_sender()
        self._start_metrics()
        if (warning := mode_warning()) is not None and self.live.table is not None:
            log.warning(warning)
        if self._summary_task is None and self.summary_interval > 0:
            self._summary_task = asyncio.get_running_loop().create_task(self._summaries())
        self.watcher.start(asyncio.get_running_loop())
        if self.live.listen is None:  # -p 0: the OS chose the port; check the config against it
            proxyserver = ctx.master.addons.get("proxyserver")
            if proxyserver is not None:
                self.live.listen = [(str(a[0]), int(a[1])) for a in proxyserver.listen_addrs()]
                self.live.mark_self_mirrors()
                self._serve_live()
        self.inspection.running()

    def done(self) -> asyncio.Future[None] | None:
        """Drain in-flight copies before exit (`mitmdump -nr rec.mitm` must finish its mirrors),
        then let Inspection finish (its records of those copies included).

        Sync on purpose: an async `done` breaks mitmproxy's script hot-reload. The returned task is
        awaited by mitmproxy on shutdown and simply runs on when a reload calls us synchronously.
        """
        draining = self._done()
        if draining is None:
            return self._inspection_done()

        async def then() -> None:
            await draining
            pending = self._inspection_done()
            if pending is not None:
                await pending

        return asyncio.get_running_loop().create_task(then())

    def _inspection_done(self) -> asyncio.Future[None] | None:
        pending = self.inspection.done()
        if self.timeline is not None:
            self.timeline.close()
            self.timeline = self.fanout.timeline = None
        return pending

    def _done(self) -> asyncio.Future[None] | None:
        self.primary.close()
        if self._summary_task is not None:
            self._summary_task.cancel()
            self._summary_task = None
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        self.watcher.stop()
        if self._reload_task is not None:
            # A reload still loading is dropped (its thread finishes on its own, bounded by the
            # per-file caps); nothing is swapped in during shutdown.
            self._reload_task.cancel()
            self._reload_task = None
        writer = self.fanout.writer
        if writer is None or writer.inflight() == 0:
            if writer is not None:
                # Stops the sender process: done() also runs on script reload, and the next
                # instance starts its own.
                writer.close()
            self._final_summary()
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            writer.close()
            self._final_summary()
            return None
        timeout = (self._writer_params or (5.0, 0, ""))[0] + 1.0
        return loop.create_task(self._drain(writer, timeout))

    async def _drain(self, writer: CopyWriter, timeout: float) -> None:
        cancelled = await writer.drain(timeout)
        if cancelled:
            log.warning(f"meshmirror: {cancelled} mirror(s) still in flight at exit were cancelled")
        writer.close()
        self._final_summary()

    def _start_sender(self) -> None:
        """A sender process starts with the proxy (or with a changed option), not with the
        first copy; before the loop runs, running() does it."""
        writer = self.fanout.writer
        if not isinstance(writer, ProcessWriter):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        writer.start()

    def _writer_has_room(self) -> bool:
        """Room for one more copy: recordings wait for it rather than drop copies as overflow."""
        writer, params = self.fanout.writer, self._writer_params
        return writer is None or params is None or writer.inflight() < params[1]

    def _final_summary(self) -> None:
        stats = self.fanout.stats
        if stats.clusters:
            log.info(stats.summary_line())

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.summary_interval)
            stats = self.fanout.stats
            seen = stats.totals().finished
            if seen != self._summary_seen and self.fanout.verbosity != "each":
                self._summary_seen = seen
                log.info(stats.summary_line())

    # --- hooks ----------------------------------------------------------------------------------

    def next_layer(self, nextlayer: Any) -> None:
        serve_prior_knowledge(nextlayer)

    def server_connect(self, data: Any) -> None:
        self.upstreams.server_connect(data)

    # --- commands -------------------------------------------------------------------------------

    @command.command("mirror.stats")
    def stats_table_command(self) -> types.Data:
        """Mirror counters per cluster, as a table: matched, sampled and the share, outcomes."""
        # types.Data is mitmproxy's name for rows of cells; a list of lists is one.
        return cast(types.Data, stats_rows(self._stats_snapshot()))

    @command.command("mirror.stats.json")
    def stats_command(self) -> str:
        """Mirror counters per cluster as JSON: sampled, sent, failed/dropped/skipped by reason."""
        return json.dumps(self._stats_snapshot(), indent=2, sort_keys=True)

    def _stats_snapshot(self) -> dict[str, Any]:
        fanout = self.fanout
        inflight: dict[str, int] = {}
        if fanout.writer is not None:
            for name in fanout.stats.clusters:
                inflight[name] = fanout.writer.inflight(name)
        snap = fanout.stats.snapshot(inflight)
        snap["generation"] = self.live.generation
        snap["config"] = self.live.state  # "empty": every request goes to the reverse upstream
        snap["comparison"] = self.inspection.snapshot()
        if self.inspection.log_records.total():
            snap["outcome_log"] = dict(self.inspection.log_records)
        snap["noise"] = self.inspection.noise.snapshot()
        snap["reloads"] = dict(self.live.reloads)
        circuits = fanout.breaker.snapshot()
        for name, c in snap["clusters"].items():
            c["circuit"] = circuits.get(name, {"state": "closed"})
        return snap

    @command.command("mirror.verdict")
    def verdict_command(self, *conditions: str) -> types.Data:
        """`report --fail-on` on the live proxy: each condition (`mismatch_rate > 1%`) over the
        copies inspected so far, a row per rule, mirror and condition."""
        try:
            parsed = [parse_condition(c) for c in conditions]
        except ConditionError as e:
            raise exceptions.CommandError(str(e)) from None
        if not parsed:
            raise exceptions.CommandError(
                "give conditions, e.g. mirror.verdict 'mismatch_rate > 1%'"
            )
        groups = self.inspection.live.sorted_groups()
        if not groups:
            return cast(
                types.Data,
                [["no copies inspected yet (with mirror_log, mirror_compare or mirror_flows)"]],
            )
        lines = verdict_lines(evaluate(groups, parsed))
        failed = any(state == "FAIL" for state, _ in lines)
        rows = [["verdict", "FAILED" if failed else "PASSED"]]
        rows += [[state, line] for state, line in lines]
        return cast(types.Data, rows)

    @command.command("mirror.reload")
    def reload_command(self) -> str:
        """Load mirror_config again now; a change with errors is rejected and logged.

        On a running proxy the files are read and compiled off the event loop and the result is
        logged when it is ready (the command cannot wait for it without stalling the proxy)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            ok = self._reload("mirror.reload")
            state = "loaded" if ok else "not loaded (see the event log)"
            return f"config {state}; generation {self.live.generation}"
        serving = f"generation {self.live.generation} serves"
        if self._reload_in_background("mirror.reload") is None:
            return f"a config reload is already running; {serving} until it is done"
        return f"config reload started; {serving} until it is swapped in (see the event log)"

    @command.command("mirror.routes")
    def routes_table_command(self) -> types.Data:
        """The compiled route table, a row per route: match, destinations, mirrors."""
        if self.table is None:
            return cast(types.Data, [["no route table (mirror_config is empty)"]])
        head = ["virtual host", "route", "match", "destinations", "mirrors"]
        rows = [head] + [
            [row.virtual_host, row.route, row.match, row.destinations, row.mirrors or "-"]
            for row in self.table.describe_rows()
        ]
        return cast(types.Data, rows)

    @command.command("mirror.routes.json")
    def routes_command(self) -> str:
        """The compiled route table in the shape of Envoy's route-configuration dump (JSON)."""
        if self.table is None:
            return "no route table (mirror_config is empty)"
        dump = self.table.to_envoy(default_retries=self.primary.default_retries)
        return json.dumps(dump, indent=2)
