"""Per-copy bookkeeping: the state that joins a copy's result with the primary's response.

A `Probe` follows one sampled copy (submitted, dropped or skipped) until it has an outcome; a
`Pending` gathers the probes of one original flow and the primary's response (`Primary`) once
it is known. The two events come in either order, so a probe that settles first waits in its
`Pending`. The table of pendings, its bounds and the finalising live in `Inspection`
(inspection.py); a probe reports back to it through the `ProbeOwner` protocol, so this module
does not import the addon.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from mitmproxy import http

from meshmirror.mesh.clusters import Endpoint
from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest, MirrorResult
from meshmirror.mitm.compare_rules import RuleCompare
from meshmirror.outcomes.compare_job import RawSide
from meshmirror.outcomes.counters import Outcome
from meshmirror.routing.table import MirrorPolicy, Route


@dataclass(frozen=True, slots=True)
class Primary:
    status: int | None
    latency: float | None
    side: RawSide | None  # only when a comparison needs it


class ProbeOwner(Protocol):
    """Where a probe reports that its copy has an outcome (Inspection)."""

    def _copy_finished(self, probe: Probe) -> None: ...


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
        "mirror_flow",
    )

    def __init__(
        self,
        owner: ProbeOwner,
        pending: Pending,
        route: Route,
        policy: MirrorPolicy,
        ep: Endpoint | None,
        target: MirrorEndpoint | None,
        request: MirrorRequest | None,
        generation: int,
        compare: RuleCompare | None,
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
        # The copy's flow when the view shows it while it is in flight (mirror_flows=view).
        self.mirror_flow: http.HTTPFlow | None = None

    def settle(
        self, outcome: Outcome, reason: str | None, result: MirrorResult | None = None
    ) -> None:
        """The copy's outcome, as the fan-out's recorder classified it (once, for everyone)."""
        self.result, self.outcome, self.reason = result, outcome, reason
        self.owner._copy_finished(self)


@dataclass
class Pending:
    flow: http.HTTPFlow
    request_id: str | None
    replay: bool
    created: float = field(default_factory=time.monotonic)
    primary: Primary | None = None
    outstanding: int = 0
    waiting: list[Probe] = field(default_factory=list)
    needs_body: bool = False
    lines: list[str] = field(default_factory=list)  # for the original flow's comment
    evicted: bool = False  # swept: copies still in flight are logged without the primary
