"""Inspection: what happened to each copy, next to what the primary answered.

A child addon of `Mirror` (registered through `Mirror.addons`), so it has its own options and
hooks while the mirror glue only hands it each copy (`probe`) and each copy it did not send
(`not_sent`). Per sampled copy it joins two events that come in either order:
- the copy's result (the writer's callback), with the shadow's response captured when needed;
- the primary's response (the `response`/`error` hook; for flows read from a recording the
  recorded response is already there when the copy starts).
Whichever comes second finalises the copy: its comparison is handed to the comparison process
(outcomes/comparer.py; the client's response never waits for it), and when the result is back
(at once without comparison) the copy is recorded: the outcome record (outcomes/log.py), the
mirror flow (flows.py) and the comment on the original flow.
Pending state is bounded (`_MAX_PENDING` flows) and dropped after `_PRIMARY_WAIT` seconds
without a primary.

This module is the addon: options, hooks, the table of pending flows and when a copy is
finalised. The pieces it drives live beside it, imported one way (none of them imports this):
- inspection_options.py: the declarations of this addon's options;
- compare_rules.py: global comparison settings refined per VirtualService by annotations
  (`meshmirror.io/compare`, `-ignore-json`, `-ignore-headers`);
- probes.py: the per-copy (`Probe`) and per-flow (`Pending`) bookkeeping;
- probe_records.py: a settled copy's comparable sides, outcome record and comment texts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from mitmproxy import ctx, exceptions, http

from meshmirror.config.resources import LoadedResource
from meshmirror.files import FileRefused, read_regular, replace_file
from meshmirror.mesh.clusters import Endpoint
from meshmirror.mirror.shadow import DEFAULT_SUFFIX, parse_redactions
from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest
from meshmirror.mitm.compare_rules import (
    RuleCompare,
    compile_compare_rules,
)
from meshmirror.mitm.flows import (
    MIRROR_FLOW_MARK,
    ORIGINAL_MARK,
    MirrorFlows,
    build_mirror_flow,
    pairing_line,
    settle_mirror_flow,
)
from meshmirror.mitm.inspection_options import INSPECTION_OPTIONS
from meshmirror.mitm.options import option_error
from meshmirror.mitm.probe_records import (
    comparison_detail,
    outcome_record,
    outcome_text,
    primary_of,
    shadow_side,
)
from meshmirror.mitm.probes import Pending, Primary, Probe
from meshmirror.mitm.replay import ReplayPacer, parse_replay_rate
from meshmirror.mitm.units import parse_size
from meshmirror.outcomes.compare import Comparison
from meshmirror.outcomes.compare_inputs import CompareSettings
from meshmirror.outcomes.compare_job import CompareJob
from meshmirror.outcomes.comparer import Comparer
from meshmirror.outcomes.counters import Outcome, safe_field
from meshmirror.outcomes.diff_rules import secret_values
from meshmirror.outcomes.log import OutcomeLog
from meshmirror.outcomes.metrics import Latencies
from meshmirror.outcomes.noise import NoiseModel
from meshmirror.outcomes.report import GroupedReport
from meshmirror.routing.table import MirrorPolicy, Route

log = logging.getLogger("meshmirror")

#: flow.metadata key, with mirror_metrics: the mirror clusters the fan-out sampled the request
#: for, so that the primary's latency is observed for each.
SAMPLED_METADATA = "meshmirror.sampled"

_MAX_PENDING = 10_000  # original flows waiting for their primary response or their copies
_PRIMARY_WAIT = 60.0  # seconds a finished copy waits for the primary before it is logged anyway
_FLOW_CAPTURE = 64 * 1024  # shadow body bytes kept for a mirror flow when not comparing
_COMPARE_WAIT = 5.0  # seconds done() waits for comparisons in flight
_MAX_NOISE_FILE = 16 * 1024 * 1024  # a saved model holds at most 500 fields per rule


def _redactions(opts: Any) -> dict[bytes, bytes | None]:
    """The redacted headers, for the comparison; a bad value is Mirror's to report, once."""
    if "mirror_redact_headers" not in opts:
        return {}
    try:
        return parse_redactions(opts.mirror_redact_headers)
    except ValueError:
        return {}


class Inspection:
    def __init__(
        self,
        writer_room: Callable[[], bool] | None = None,
        startup_error: Callable[[exceptions.OptionsError], bool] | None = None,
    ) -> None:
        # Mirror's: logs a bad option at startup (True) instead of letting it become a
        # traceback; at run time (False) the OptionsError is raised to mitmproxy.
        self.startup_error = startup_error or (lambda e: False)
        self.replay_all = False  # mirror_replay_sample=all: recorded requests skip sampling
        self.latencies: Latencies | None = None  # with mirror_metrics (Mirror sets it)
        # The report of the copies inspected so far, for `mirror.verdict`.
        self.live = GroupedReport()
        # Noise learned from baselines (meshmirror.io/compare-baseline), saved to and loaded
        # from mirror_compare_noise when that is set.
        self.noise = NoiseModel()
        self._noise_path = ""
        self._host_warned = False
        # Requests matched per (rule, mirror cluster): the fan-out's counter (Mirror shares it).
        self.rule_matches: Mapping[tuple[str, str], int] = {}
        self.flows = MirrorFlows()
        self.log_file: OutcomeLog | None = None
        # Records written to mirror_log and lost (it could not be written), over the run.
        self.log_records: Counter[str] = Counter(written=0, lost=0)
        self.compare_default = RuleCompare(False, CompareSettings.build())
        self.compare_rules: dict[str, RuleCompare] = {}
        self.capture_max = 256 * 1024
        self.counts: dict[tuple[str, str], Counter[str]] = {}
        # Per (rule, cluster): copies not compared, by NOT_COMPARED reason (too_costly, ...).
        self.not_compared: dict[tuple[str, str], Counter[str]] = {}
        # Comparisons run off the event loop: the client's response never waits for one.
        self.comparer = Comparer()
        self.pacer: ReplayPacer | None = None
        self.writer_room = writer_room or (lambda: True)
        self._pending: dict[str, Pending] = {}
        self._resources: list[LoadedResource] = []
        self._sweeper: asyncio.Task[None] | None = None

    # --- options --------------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        for spec in INSPECTION_OPTIONS:
            loader.add_option(
                spec.name, spec.typespec, spec.default, spec.help, choices=spec.choices
            )

    def configure(self, updated: set[str]) -> None:
        try:
            self._configure(updated)
        except exceptions.OptionsError as e:
            if not self.startup_error(e):
                raise

    def _configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if updated & {
            "mirror_compare",
            "mirror_compare_ignore_headers",
            "mirror_compare_ignore_json",
            "mirror_compare_max_body",
            # Options of Mirror's: what the proxy changes on each copy is not a difference,
            # and the values of redacted headers never appear in a comparison.
            "mirror_redact_headers",
            "mirror_host_suffix",
        }:
            try:
                self.capture_max = parse_size(opts.mirror_compare_max_body)
                redact = _redactions(opts)
                settings = CompareSettings.build(
                    opts.mirror_compare_ignore_headers,
                    opts.mirror_compare_ignore_json,
                    self.capture_max,
                    redact_headers=(name.decode() for name in redact),
                    host_suffix=(
                        opts.mirror_host_suffix if "mirror_host_suffix" in opts else DEFAULT_SUFFIX
                    ),
                )
            except ValueError as e:
                raise option_error(f"mirror_compare: {e}") from e
            self.compare_default = RuleCompare(opts.mirror_compare, settings)
            self._compile_rules()
        if updated & {"mirror_flows", "mirror_flows_max", "mirror_record"}:
            try:
                self.flows.configure(opts.mirror_flows, opts.mirror_flows_max, opts.mirror_record)
            except OSError as e:
                raise option_error(f"mirror_record: {e}") from e
        if "mirror_log" in updated:
            if self.log_file is not None and self.log_file.path != opts.mirror_log:
                self.log_file.close()
                self.log_file = None
            if opts.mirror_log and self.log_file is None:
                try:
                    self.log_file = OutcomeLog(opts.mirror_log)
                except OSError as e:
                    raise option_error(f"mirror_log: {opts.mirror_log}: {e.strerror or e}") from e
                except FileRefused as e:
                    raise option_error(f"mirror_log: {opts.mirror_log}: {e}") from e
        if "mirror_compare_noise" in updated and opts.mirror_compare_noise != self._noise_path:
            self._noise_path = opts.mirror_compare_noise
            if self._noise_path and os.path.exists(self._noise_path):
                try:
                    data = read_regular(self._noise_path, _MAX_NOISE_FILE)
                    self.noise = NoiseModel.loads(data.decode("utf-8"))
                except OSError as e:
                    raise option_error(
                        f"mirror_compare_noise: {self._noise_path}: {e.strerror or e}"
                    ) from e
                except ValueError as e:  # FileRefused, UnicodeDecodeError, NoiseModel's own
                    raise option_error(f"mirror_compare_noise: {self._noise_path}: {e}") from e
                log.info(
                    f"meshmirror: learned noise loaded from {self._noise_path}: "
                    + (
                        ", ".join(
                            f"{rule}: {len(self.noise.noise(rule))} field(s)"
                            for rule in sorted(self.noise.compared)
                        )
                        or "none"
                    )
                )
        if "mirror_replay_sample" in updated:
            self.replay_all = opts.mirror_replay_sample == "all"
        if "mirror_replay_rate" in updated:
            try:
                rate = parse_replay_rate(opts.mirror_replay_rate)
            except ValueError as e:
                raise option_error(
                    f"mirror_replay_rate: {e} (got {opts.mirror_replay_rate!r})"
                ) from e
            self.pacer = ReplayPacer(rate)

    def set_resources(self, resources: Sequence[LoadedResource]) -> None:
        """Per-VirtualService comparison settings, from annotations (called on each config load)."""
        self._resources = list(resources)
        self._compile_rules()

    def _compile_rules(self) -> None:
        try:
            self.compare_rules = compile_compare_rules(self._resources, self.compare_default)
        except ValueError as e:
            raise option_error(str(e)) from e

    def compare_for(self, route: Route) -> RuleCompare:
        return self.compare_rules.get(route.virtual_service, self.compare_default)

    @property
    def active(self) -> bool:
        return (
            self.log_file is not None
            or self.flows.wanted
            or self.compare_default.enabled
            or bool(self.compare_rules)
        )

    def needs_flow_hooks(self) -> bool:
        """Whether the primary's `response` / `error` must reach this: for a comparison or a
        record waiting for it, or for the primary's latency (mirror_metrics)."""
        return self.active or self.latencies is not None

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
            loop = None
        if loop is None or not (self.flows.busy or self.comparer.waiting):
            self._close()
            return None
        return loop.create_task(self._finish())

    async def _finish(self) -> None:
        # The comparisons first: their records and mirror flows are the last to come.
        await self.comparer.drain(_COMPARE_WAIT)
        await self.flows.drain(5.0)
        self._close()

    def _close(self) -> None:
        self.comparer.close()
        self.flows.close()
        if self._noise_path and self.noise.compared:
            try:
                replace_file(self._noise_path, self.noise.dumps().encode("utf-8"))
            except OSError as e:
                log.warning(
                    f"meshmirror: mirror_compare_noise: {self._noise_path}: cannot save: "
                    f"{e.strerror or e}"
                )
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    # --- recordings -------------------------------------------------------------------------------

    def pace(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Flows read from a recording (-r) are not live: the wait before the mirror sees them.

        Called from Mirror.requestheaders rather than being a hook of its own: an async hook
        would cost every live request a coroutine, and live requests are never paced."""
        if flow.live or flow.metadata.get(MIRROR_FLOW_MARK):
            return None
        if self.pacer is None:
            return None
        return self.pacer.wait(flow.request.timestamp_start, self._replay_room)

    def _replay_room(self) -> bool:
        """Room for one more recorded request: in the writer, and among the comparisons
        waiting (a replay waits for them rather than have its copies not compared: busy)."""
        return self.writer_room() and self.comparer.has_room()

    def unclaimed_recording(self, flow: http.HTTPFlow) -> None:
        """A recorded request whose Host no virtual host claims. Warned once per run when that
        Host is also the address the request was sent to: a recording made in reverse mode
        without keep_host_header holds the upstream's address as every Host, so rules for the
        client's Host cannot match it. (A request that matched is never warned about: a HAR's
        URL is made from its Host, so the two always agree there.)"""
        if self._host_warned:
            return
        req = flow.request
        host = (req.host_header or "").lower()
        upstream = req.host.lower()
        if host in (upstream, f"{upstream}:{req.port}", f"[{upstream}]:{req.port}"):
            self._host_warned = True
            log.warning(
                f"meshmirror: recorded requests carry Host {safe_field(req.host_header or '')}, "
                "which no rule claims and which is also the address they were sent to: a "
                "recording made in reverse mode without keep_host_header holds the upstream's "
                "address there (meshmirror turns it on), so rules for the client's Host do not "
                "match"
            )

    # --- the primary ------------------------------------------------------------------------------

    def response(self, flow: http.HTTPFlow) -> None:
        if self.latencies is not None:
            self._observe_primary(flow)
        if self._pending:
            self._primary_done(flow)

    def _observe_primary(self, flow: http.HTTPFlow) -> None:
        assert self.latencies is not None
        clusters = flow.metadata.get(SAMPLED_METADATA)
        response = flow.response
        if clusters and flow.live and response is not None and response.timestamp_end:
            self.latencies.observe_primary(
                clusters, response.timestamp_end - flow.request.timestamp_start
            )

    def error(self, flow: http.HTTPFlow) -> None:
        if self._pending:
            self._primary_done(flow)

    def _primary_done(self, flow: http.HTTPFlow) -> None:
        pending = self._pending.get(flow.id)
        if pending is None or pending.primary is not None:
            return
        pending.primary = primary_of(flow, pending.needs_body, self.capture_max)
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
        request_id: str | None,
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
            pending = Pending(flow, request_id, replay=not flow.live)
            self._pending[flow.id] = pending
        if compare is not None:
            pending.needs_body = True
        if pending.primary is None and not flow.live and (flow.response or flow.error):
            # A recorded flow: its recorded response stands in for the primary's.
            pending.primary = primary_of(flow, pending.needs_body, self.capture_max)
        pending.outstanding += 1
        probe = Probe(
            self, pending, route, policy, ep, target, request, generation, compare, capture
        )
        if request is not None and target is not None and self.flows.shows_early:
            # In the view at once, right after its original: listed in the originals' order,
            # however long the mirror takes (the result updates it).
            probe.mirror_flow = build_mirror_flow(
                original=flow,
                request=request,
                endpoint=target,
                started=probe.started,
                comment=f"mirror of flow {flow.id} ({route.label}): in flight",
            )
            self._mark_original(pending)
            self.flows.show(probe.mirror_flow)
        return probe

    def _mark_original(self, pending: Pending) -> None:
        """The original's marker (unless the user marked it) and comment: the filter that lists
        it with its copies, then a line per copy done."""
        flow = pending.flow
        if not flow.marked:
            flow.marked = ORIGINAL_MARK
        flow.comment = "\n".join([pairing_line(flow.id), *pending.lines])
        self.flows.update(flow)

    def not_sent(
        self,
        flow: http.HTTPFlow,
        route: Route,
        policy: MirrorPolicy,
        ep: Endpoint | None,
        outcome: Outcome,
        reason: str,
        generation: int,
        request_id: str | None,
    ) -> None:
        """A sampled copy that was skipped before any request was built."""
        probe = self.probe(flow, route, policy, ep, None, None, generation, request_id)
        if probe is not None:
            probe.settle(outcome, reason)

    def _copy_finished(self, probe: Probe) -> None:
        pending = probe.pending
        if pending.primary is None and pending.flow.live and not pending.evicted:
            # Only the response/error hook knows the primary's response is complete (a response
            # object exists from responseheaders on, with its body still arriving).
            pending.waiting.append(probe)
            return
        self._finalize(probe, pending.primary)
        self._maybe_forget(pending)

    def _maybe_forget(self, pending: Pending) -> None:
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

    def _finalize(self, probe: Probe, primary: Primary | None) -> None:
        """The copy and the primary are both in (or the primary never will be): compare them
        off the loop when the rule asks for it, then record the copy (`_record`)."""
        pending = probe.pending
        pending.outstanding -= 1
        result = probe.result
        if (
            probe.compare is not None
            and result is not None
            and result.status is not None
            and primary is not None
            and primary.side is not None
        ):
            settings = probe.compare.settings
            job = CompareJob(
                primary.side,
                shadow_side(result),
                settings,
                secret_values(
                    (
                        (n.decode("latin-1"), v.decode("utf-8", "surrogateescape"))
                        for n, v in pending.flow.request.headers.fields
                    ),
                    settings,
                ),
            )
            self.comparer.submit(job, lambda c: self._compared(probe, primary, c))
            return
        if probe.compare is not None:
            key = (probe.route.label, probe.cluster)
            self.counts.setdefault(key, Counter())["not_compared"] += 1
        self._record(probe, primary, None)

    def _compared(self, probe: Probe, primary: Primary, comparison: Comparison) -> None:
        """A comparison's result (from the comparer, on the loop): noise, counters, the
        mismatch line, then the record."""
        assert probe.compare is not None
        key = (probe.route.label, probe.cluster)
        counts = self.counts.setdefault(key, Counter())
        if comparison.not_compared:
            counts["not_compared"] += 1
            self.not_compared.setdefault(key, Counter())[comparison.not_compared] += 1
            self._record(probe, primary, comparison)
            return
        if probe.compare.is_baseline(probe.cluster):
            # The same version answered twice: whatever differs is noise for the rule (and,
            # once trusted, not a mismatch of the baseline's either).
            self.noise.learn(probe.route.label, comparison.fields)
        if probe.compare.baseline:
            comparison = self.noise.filter(probe.route.label, comparison)
        counts["matched" if comparison.match else "mismatched"] += 1
        if not comparison.match:
            log.info(
                f"mirror mismatch rule={safe_field(probe.route.label)} "
                f"cluster={safe_field(probe.cluster)} "
                f"request_id={safe_field(probe.pending.request_id or '-')} "
                f"flow={probe.pending.flow.id} "
                f"fields={','.join(safe_field(f) for f in comparison.fields[:10])}"
                + (f" (+{comparison.differing - 10})" if comparison.differing > 10 else "")
            )
        self._record(probe, primary, comparison)

    def _record(self, probe: Probe, primary: Primary | None, comparison: Comparison | None) -> None:
        """The copy's outcome record, its line in the original's comment, its mirror flow."""
        pending = probe.pending
        result = probe.result
        record = outcome_record(probe, primary, comparison)
        record["matched"] = self.rule_matches.get((probe.route.label, probe.cluster))
        self.live.add(record)
        if self.log_file is not None:
            self.log_records["written" if self.log_file.write(record) else "lost"] += 1

        text = outcome_text(probe, result)
        if comparison is not None:
            text += f", {comparison.short()}"
        flow = pending.flow
        mf = probe.mirror_flow
        shown = mf is not None
        if (
            mf is None
            and self.flows.wanted
            and probe.request is not None
            and probe.target is not None
        ):
            mf = build_mirror_flow(
                original=flow,
                request=probe.request,
                endpoint=probe.target,
                started=probe.started,
                comment="",
            )
        if mf is not None:
            comment = f"mirror of flow {flow.id} ({probe.route.label}): {text}"
            settle_mirror_flow(mf, result, text, comment + comparison_detail(comparison))
        # The original names each copy's flow, and is marked in the flow list (unless the user
        # marked it already): pairing them needs no Comment tab.
        line = f"mirror {probe.cluster}: {text}"
        pending.lines.append(line + (f" (mirror flow {mf.id})" if mf is not None else ""))
        if self.flows.wanted:
            self._mark_original(pending)
            if mf is not None:
                self.flows.publish(mf, shown)
        else:
            flow.comment = "\n".join(pending.lines)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Comparison counters per `rule cluster`, for mirror.stats: matched, mismatched,
        not_compared, and the copies not compared by reason (`too_costly`, ...)."""
        return {
            f"{rule} {cluster}": dict(
                sorted((c + self.not_compared.get((rule, cluster), Counter())).items())
            )
            for (rule, cluster), c in sorted(self.counts.items())
        }
