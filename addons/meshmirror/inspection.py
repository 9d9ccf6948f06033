"""Inspection: what happened to each copy, next to what the primary answered.

A child addon of `Mirror` (registered through `Mirror.addons`), so it has its own options and
hooks while the mirror glue only hands it each copy (`probe`) and each copy it did not send
(`not_sent`). Per sampled copy it joins two events that come in either order:
- the copy's result (the writer's callback), with the shadow's response captured when needed;
- the primary's response (the `response`/`error` hook; for flows read from a recording the
  recorded response is already there when the copy starts).
Whichever comes second finalises the copy: comparison (compare.py), the outcome record
(outcome_log.py), the mirror flow (flows.py) and the comment on the original flow. Pending state
is bounded (`_MAX_PENDING` flows) and dropped after `_PRIMARY_WAIT` seconds without a primary.

Comparison is configured globally (`mirror_compare`, `mirror_compare_ignore_headers`,
`mirror_compare_ignore_json`) and per VirtualService through annotations, read when the config
is loaded:
    meshmirror.io/compare: "true" | "false"                      overrides mirror_compare
    meshmirror.io/compare-ignore-json: "/origin,/items/*/id"     added to the global pointers
    meshmirror.io/compare-ignore-headers: "x-version,x-cache"    added to the global names
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.net import encoding

from meshmirror.compare import CompareSettings, Comparison, Side, compare_responses
from meshmirror.flows import FLOW_MODES, MIRROR_FLOW_MARK, MirrorFlows, build_mirror_flow
from meshmirror.loader import LoadedResource
from meshmirror.outcome_log import OutcomeLog
from meshmirror.outcomes import Outcome
from meshmirror.registry import Endpoint
from meshmirror.replay import ReplayPacer, parse_replay_rate
from meshmirror.routes import MirrorPolicy, Route
from meshmirror.units import parse_size
from meshmirror.writer import MirrorEndpoint, MirrorRequest, MirrorResult

__all__ = ["ANNOTATION_COMPARE", "Inspection", "Probe"]

log = logging.getLogger("meshmirror")

ANNOTATION_COMPARE = "meshmirror.io/compare"
ANNOTATION_IGNORE_JSON = "meshmirror.io/compare-ignore-json"
ANNOTATION_IGNORE_HEADERS = "meshmirror.io/compare-ignore-headers"

_MAX_PENDING = 10_000  # original flows waiting for their primary response or their copies
_PRIMARY_WAIT = 60.0  # seconds a finished copy waits for the primary before it is logged anyway
_FLOW_CAPTURE = 64 * 1024  # shadow body bytes kept for a mirror flow when not comparing


@dataclass(frozen=True, slots=True)
class _Primary:
    status: int | None
    latency: float | None
    side: Side | None  # only when a comparison needs it


@dataclass(frozen=True, slots=True)
class _RuleCompare:
    enabled: bool
    settings: CompareSettings


class Probe:
    """One submitted (or dropped) copy on its way to an outcome record."""

    __slots__ = (
        "owner",
        "pending",
        "route",
        "cluster",
        "endpoint",
        "target",
        "request",
        "generation",
        "compare",
        "capture",
        "started",
        "result",
        "outcome",
        "reason",
    )

    def __init__(
        self,
        owner: Inspection,
        pending: _Pending,
        route: Route,
        policy: MirrorPolicy,
        ep: Endpoint | None,
        target: MirrorEndpoint | None,
        request: MirrorRequest | None,
        generation: int,
        compare: _RuleCompare | None,
        capture: int,
    ) -> None:
        self.owner = owner
        self.pending = pending
        self.route = route
        self.cluster = policy.cluster.name
        self.endpoint = f"{ep.address}:{ep.port}" if ep is not None else None
        self.target = target
        self.request = request
        self.generation = generation
        self.compare = compare
        self.capture = capture
        self.started = time.time()
        self.result: MirrorResult | None = None
        self.outcome: Outcome | None = None
        self.reason: str | None = None

    def wrap(self, done: Callable[[MirrorResult], None]) -> Callable[[MirrorResult], None]:
        def both(result: MirrorResult) -> None:
            done(result)
            self.finished(result)

        return both

    def finished(self, result: MirrorResult) -> None:
        self.result = result
        if result.status is not None:
            self.outcome, self.reason = Outcome.SENT, None
        else:
            self.outcome, self.reason = Outcome.FAILED, result.failure or "other"
        self.owner._copy_finished(self)

    def not_sent(self, outcome: Outcome, reason: str) -> None:
        self.outcome, self.reason = outcome, reason
        self.owner._copy_finished(self)


@dataclass
class _Pending:
    flow: http.HTTPFlow
    request_id: str | None
    replay: bool
    created: float = field(default_factory=time.monotonic)
    primary: _Primary | None = None
    outstanding: int = 0
    waiting: list[Probe] = field(default_factory=list)
    needs_body: bool = False
    lines: list[str] = field(default_factory=list)  # for the original flow's comment
    evicted: bool = False  # swept: copies still in flight are logged without the primary


class Inspection:
    def __init__(self, writer_room: Callable[[], bool] | None = None) -> None:
        self.flows = MirrorFlows()
        self.log_file: OutcomeLog | None = None
        self.compare_default = _RuleCompare(False, CompareSettings.build())
        self.compare_rules: dict[str, _RuleCompare] = {}
        self.capture_max = 256 * 1024
        self.counts: dict[tuple[str, str], Counter[str]] = {}
        self.pacer: ReplayPacer | None = None
        self.writer_room = writer_room or (lambda: True)
        self._pending: dict[str, _Pending] = {}
        self._resources: list[LoadedResource] = []
        self._sweeper: asyncio.Task[None] | None = None

    # --- options --------------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        from collections.abc import Sequence as AbcSequence

        loader.add_option(
            "mirror_flows",
            str,
            "auto",
            "Show each mirrored copy as its own flow (marked :ghost:, is_replay=request, so "
            "~replayq selects them): view adds them to mitmweb's / the console's view only; "
            "hooks also runs them through every addon (-w saves them, mitmdump prints them); "
            "off. auto: view where a view exists (mitmweb, console), else off.",
            choices=FLOW_MODES,
        )
        loader.add_option(
            "mirror_flows_max",
            int,
            1000,
            "Most mirror flows kept in the view; the oldest are removed beyond it.",
        )
        loader.add_option(
            "mirror_log",
            str,
            "",
            "Append one JSON line per sampled copy to this file (outcome, statuses, latencies, "
            "bytes, comparison); flushed per line, never contains header values.",
        )
        loader.add_option(
            "mirror_compare",
            bool,
            False,
            "Compare each copy's response with the primary's (status, headers, body). Per "
            "VirtualService: annotation meshmirror.io/compare: 'true' or 'false'.",
        )
        loader.add_option(
            "mirror_compare_ignore_headers",
            AbcSequence[str],
            [],
            "Response headers not compared, added to the defaults (Date, Server, X-Request-Id, "
            "Set-Cookie, Content-Length, ETag, X-Envoy-*, ...). Globs allowed.",
        )
        loader.add_option(
            "mirror_compare_ignore_json",
            AbcSequence[str],
            [],
            "JSON pointers not compared in JSON bodies (e.g. /origin, /items/*/id; * matches "
            "any key or index; a pointer ignores everything below it).",
        )
        loader.add_option(
            "mirror_compare_max_body",
            str,
            "256k",
            "Largest body compared in full (and kept for a mirror flow); larger ones are "
            "compared by size and hash only.",
        )
        loader.add_option(
            "mirror_record",
            str,
            "",
            "Write the mirror flows (request as sent, shadow response) to this mitmproxy flow "
            "file, for mitmweb -r.",
        )
        loader.add_option(
            "mirror_replay_rate",
            str,
            "",
            "Pace requests read from a recording (-r): requests per second (50), or x1 / x2 / "
            "x0.5 to follow the recording's own timing scaled. Empty: as fast as the mirror "
            "writer has room.",
        )

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if updated & {
            "mirror_compare",
            "mirror_compare_ignore_headers",
            "mirror_compare_ignore_json",
            "mirror_compare_max_body",
        }:
            try:
                self.capture_max = parse_size(opts.mirror_compare_max_body)
                settings = CompareSettings.build(
                    opts.mirror_compare_ignore_headers,
                    opts.mirror_compare_ignore_json,
                    self.capture_max,
                )
            except ValueError as e:
                raise _options_error(f"mirror_compare: {e}") from e
            self.compare_default = _RuleCompare(opts.mirror_compare, settings)
            self._compile_rules()
        if updated & {"mirror_flows", "mirror_flows_max", "mirror_record"}:
            try:
                self.flows.configure(opts.mirror_flows, opts.mirror_flows_max, opts.mirror_record)
            except OSError as e:
                raise _options_error(f"mirror_record: {e}") from e
        if "mirror_log" in updated:
            if self.log_file is not None and self.log_file.path != opts.mirror_log:
                self.log_file.close()
                self.log_file = None
            if opts.mirror_log and self.log_file is None:
                try:
                    self.log_file = OutcomeLog(opts.mirror_log)
                except OSError as e:
                    raise _options_error(f"mirror_log: {e}") from e
        if "mirror_replay_rate" in updated:
            try:
                rate = parse_replay_rate(opts.mirror_replay_rate)
            except ValueError as e:
                raise _options_error(
                    f"mirror_replay_rate: {e} (got {opts.mirror_replay_rate!r})"
                ) from e
            self.pacer = ReplayPacer(rate)

    def set_resources(self, resources: Sequence[LoadedResource]) -> None:
        """Per-VirtualService comparison settings, from annotations (called on each config load)."""
        self._resources = list(resources)
        self._compile_rules()

    def _compile_rules(self) -> None:
        rules: dict[str, _RuleCompare] = {}
        base = self.compare_default
        for r in self._resources:
            if r.kind != "VirtualService":
                continue
            ann = r.obj.metadata.annotations or {}
            if not any(k.startswith("meshmirror.io/") for k in ann):
                continue
            flag = ann.get(ANNOTATION_COMPARE, "").strip().lower()
            enabled = base.enabled if not flag else flag in ("true", "1", "yes", "on")
            pointers = base.settings.ignore_json + tuple(
                p.strip() for p in ann.get(ANNOTATION_IGNORE_JSON, "").split(",") if p.strip()
            )
            headers = base.settings.ignore_headers + tuple(
                h.strip().lower()
                for h in ann.get(ANNOTATION_IGNORE_HEADERS, "").split(",")
                if h.strip()
            )
            try:
                settings = CompareSettings.build((), pointers, base.settings.max_body)
            except ValueError as e:
                raise _options_error(
                    f"{r.source}: VirtualService {r.ref}: {ANNOTATION_IGNORE_JSON}: {e}"
                ) from e
            rules[r.ref] = _RuleCompare(
                enabled,
                CompareSettings(headers, settings.ignore_json, settings.max_body),
            )
        self.compare_rules = rules

    def compare_for(self, route: Route) -> _RuleCompare:
        return self.compare_rules.get(route.virtual_service, self.compare_default)

    @property
    def active(self) -> bool:
        return (
            self.log_file is not None
            or self.flows.wanted
            or self.compare_default.enabled
            or bool(self.compare_rules)
        )

    # --- lifecycle ------------------------------------------------------------------------------

    def running(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.sweep(time.monotonic())

    def done(self) -> asyncio.Future[None] | None:
        """Called after Mirror.done drained the writer: log what still waits, close the files."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.sweep(float("inf"))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._close()
            return None
        return loop.create_task(self._finish())

    async def _finish(self) -> None:
        await self.flows.drain(5.0)
        self._close()

    def _close(self) -> None:
        self.flows.close()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    # --- recordings -------------------------------------------------------------------------------

    def pace(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Flows read from a recording (-r) are not live: the wait before the mirror sees them.

        Called from Mirror.requestheaders rather than being a hook of its own: an async hook
        would cost every live request a coroutine, and live requests are never paced."""
        if flow.live or flow.metadata.get(MIRROR_FLOW_MARK) or self.pacer is None:
            return None
        return self.pacer.wait(flow.request.timestamp_start, self.writer_room)

    # --- the primary ------------------------------------------------------------------------------

    def response(self, flow: http.HTTPFlow) -> None:
        if self._pending:
            self._primary_done(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        if self._pending:
            self._primary_done(flow)

    def _primary_done(self, flow: http.HTTPFlow) -> None:
        pending = self._pending.get(flow.id)
        if pending is None or pending.primary is not None:
            return
        pending.primary = _primary_of(flow, pending.needs_body)
        waiting, pending.waiting = pending.waiting, []
        for probe in waiting:
            self._finalize(probe, pending.primary)
        self._maybe_forget(pending)

    # --- copies -----------------------------------------------------------------------------------

    def probe(
        self,
        flow: http.HTTPFlow,
        route: Route,
        policy: MirrorPolicy,
        ep: Endpoint | None,
        target: MirrorEndpoint | None,
        request: MirrorRequest | None,
        generation: int,
    ) -> Probe | None:
        """Start following one copy; None when nothing inspects copies (the fast path)."""
        if not self.active:
            return None
        rule = self.compare_for(route)
        compare = rule if rule.enabled else None
        capture = 0
        if request is not None:
            if compare is not None:
                capture = self.capture_max
            elif self.flows.wanted:
                capture = min(self.capture_max, _FLOW_CAPTURE)
        pending = self._pending.get(flow.id)
        if pending is None:
            if len(self._pending) >= _MAX_PENDING:
                self.sweep(float("inf"), limit=len(self._pending) - _MAX_PENDING + 1)
            request_id = flow.request.headers.get("x-request-id")
            pending = _Pending(flow, request_id, replay=not flow.live)
            self._pending[flow.id] = pending
        if compare is not None:
            pending.needs_body = True
        if pending.primary is None and not flow.live and (flow.response or flow.error):
            # A recorded flow: its recorded response stands in for the primary's.
            pending.primary = _primary_of(flow, pending.needs_body)
        pending.outstanding += 1
        return Probe(
            self, pending, route, policy, ep, target, request, generation, compare, capture
        )

    def not_sent(
        self,
        flow: http.HTTPFlow,
        route: Route,
        policy: MirrorPolicy,
        ep: Endpoint | None,
        outcome: Outcome,
        reason: str,
        generation: int,
    ) -> None:
        """A sampled copy that was skipped before any request was built."""
        probe = self.probe(flow, route, policy, ep, None, None, generation)
        if probe is not None:
            probe.not_sent(outcome, reason)

    def _copy_finished(self, probe: Probe) -> None:
        pending = probe.pending
        if pending.primary is None and pending.flow.live and not pending.evicted:
            # Only the response/error hook knows the primary's response is complete (a response
            # object exists from responseheaders on, with its body still arriving).
            pending.waiting.append(probe)
            return
        self._finalize(probe, pending.primary)
        self._maybe_forget(pending)

    def _maybe_forget(self, pending: _Pending) -> None:
        if pending.outstanding <= 0 and not pending.waiting:
            self._pending.pop(pending.flow.id, None)

    def sweep(self, now: float, limit: int | None = None) -> None:
        """Finalise copies whose primary did not answer within _PRIMARY_WAIT (oldest first)."""
        evicted = 0
        for key, pending in list(self._pending.items()):
            if limit is not None and evicted >= limit:
                break
            if now - pending.created < _PRIMARY_WAIT:
                break  # insertion order is age order
            waiting, pending.waiting = pending.waiting, []
            for probe in waiting:
                self._finalize(probe, pending.primary)
            pending.evicted = True
            del self._pending[key]
            evicted += 1

    def _finalize(self, probe: Probe, primary: _Primary | None) -> None:
        pending = probe.pending
        pending.outstanding -= 1
        result = probe.result
        comparison: Comparison | None = None
        if (
            probe.compare is not None
            and result is not None
            and result.status is not None
            and primary is not None
            and primary.side is not None
        ):
            comparison = compare_responses(
                primary.side, _shadow_side(result), probe.compare.settings
            )
            key = (probe.route.label, probe.cluster)
            counts = self.counts.setdefault(key, Counter())
            counts["matched" if comparison.match else "mismatched"] += 1
            if not comparison.match:
                log.info(
                    f"mirror mismatch rule={probe.route.label} cluster={probe.cluster} "
                    f"request_id={pending.request_id or '-'} flow={pending.flow.id} "
                    f"fields={','.join(comparison.fields[:10])}"
                    + (f" (+{comparison.differing - 10})" if comparison.differing > 10 else "")
                )
        elif probe.compare is not None:
            key = (probe.route.label, probe.cluster)
            self.counts.setdefault(key, Counter())["not_compared"] += 1

        outcome = probe.outcome.value if probe.outcome else "failed"
        if self.log_file is not None:
            self.log_file.write(
                {
                    "request_id": pending.request_id,
                    "flow": pending.flow.id,
                    "rule": probe.route.label,
                    "cluster": probe.cluster,
                    "endpoint": probe.endpoint,
                    "outcome": outcome,
                    "reason": probe.reason,
                    "detail": (result.detail or None) if result is not None else None,
                    "primary_status": primary.status if primary else None,
                    "primary_latency_ms": _ms(primary.latency) if primary else None,
                    "shadow_status": result.status if result else None,
                    "shadow_latency_ms": _ms(result.latency) if result else None,
                    "bytes_sent": result.bytes_sent if result else 0,
                    "bytes_received": result.bytes_received if result else 0,
                    "comparison": comparison.summary() if comparison is not None else None,
                    "generation": probe.generation,
                    "replay": pending.replay,
                }
            )

        text = _outcome_text(probe, result)
        if comparison is not None:
            text += f", {comparison.short()}"
        pending.lines.append(f"mirror {probe.cluster}: {text}")
        flow = pending.flow
        flow.comment = "\n".join(pending.lines)
        if self.flows.wanted:
            self.flows.update(flow)
            if probe.request is not None and probe.target is not None:
                mf = build_mirror_flow(
                    original_id=flow.id,
                    request=probe.request,
                    endpoint=probe.target,
                    result=result,
                    started=probe.started,
                    comment=f"mirror of flow {flow.id} ({probe.route.label}): {text}"
                    + _comparison_detail(comparison),
                )
                self.flows.publish(mf)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Comparison counters per `rule cluster`, for mirror.stats."""
        return {
            f"{rule} {cluster}": dict(sorted(c.items()))
            for (rule, cluster), c in sorted(self.counts.items())
        }


def _options_error(text: str) -> exceptions.OptionsError:
    return exceptions.OptionsError(text)  # type: ignore[no-untyped-call]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _outcome_text(probe: Probe, result: MirrorResult | None) -> str:
    if probe.outcome is Outcome.SENT and result is not None:
        return f"sent {result.status} in {result.latency * 1000:.1f}ms"
    if result is not None:
        detail = f" ({result.detail})" if result.detail else ""
        return f"failed: {probe.reason}{detail}"
    return f"{probe.outcome.value if probe.outcome else 'failed'}: {probe.reason}"


def _comparison_detail(comparison: Comparison | None) -> str:
    if comparison is None or comparison.match:
        return ""
    lines = [f"\n  {k}: {v}" for k, v in list(comparison.examples.items())[:20]]
    return "".join(lines)


def _primary_of(flow: http.HTTPFlow, with_body: bool) -> _Primary:
    resp = flow.response
    if resp is None:
        return _Primary(None, None, None)
    latency = None
    if resp.timestamp_end is not None and flow.request.timestamp_end is not None:
        latency = max(0.0, resp.timestamp_end - flow.request.timestamp_end)
    side = None
    if with_body:
        body = resp.get_content(strict=False) if resp.raw_content is not None else None
        side = Side(
            resp.status_code,
            [
                (n.decode("latin-1"), v.decode("utf-8", "surrogateescape"))
                for n, v in resp.headers.fields
            ],
            body,
        )
    return _Primary(resp.status_code, latency, side)


def _shadow_side(result: MirrorResult) -> Side:
    headers = [
        (n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in result.headers or ()
    ]
    body = result.body
    truncated = result.body_truncated
    if body is not None and not truncated:
        enc = next((v for n, v in headers if n.lower() == "content-encoding"), "").strip()
        if enc and enc.lower() != "identity":
            try:
                decoded = encoding.decode(body, enc)
                body = decoded if isinstance(decoded, bytes) else body
            except ValueError:
                body = None
    assert result.status is not None
    return Side(result.status, headers, body, truncated)
