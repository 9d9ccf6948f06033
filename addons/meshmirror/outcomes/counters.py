"""Mirror outcomes: counters per mirror cluster and the event-log lines that report them.

Every sampled copy ends in exactly one outcome, so that per cluster
`sent + failed + dropped + skipped == sampled` once nothing is in flight:
- sent:    the mirror answered with an HTTP status (any status: a 500 from the shadow is still
           delivered; the status is counted separately);
- failed:  no answer, by class (refused, timeout, reset, tls, protocol, dns, other, cancelled);
- dropped: never attempted because a bound was hit (overflow of `mirror_max_inflight`);
- skipped: never attempted because the copy must not be sent (body too large, streamed body,
           unknown mirror cluster, ...).
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


class Outcome(enum.Enum):
    SENT = "sent"
    FAILED = "failed"
    DROPPED = "dropped"
    SKIPPED = "skipped"


def classify(status: int | None, failure: str | None) -> tuple[Outcome, str | None]:
    """A finished copy's outcome and reason, decided here once for every reader (counters,
    breaker, event log, outcome log, inspection): any answer is `sent`, whatever its status;
    no answer is `failed` with the writer's failure class."""
    if status is not None:
        return Outcome.SENT, None
    return Outcome.FAILED, failure or "other"


@dataclass
class ClusterCounters:
    sampled: int = 0
    sent: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    latency_sum: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0

    @property
    def finished(self) -> int:
        return (
            self.sent
            + sum(self.failed.values())
            + sum(self.dropped.values())
            + sum(self.skipped.values())
        )

    def to_dict(self, inflight: int = 0) -> dict[str, Any]:
        answered = self.sent
        return {
            "sampled": self.sampled,
            "sent": self.sent,
            "failed": dict(self.failed),
            "dropped": dict(self.dropped),
            "skipped": dict(self.skipped),
            "in_flight": inflight,
            "status": {str(k): v for k, v in sorted(self.statuses.items())},
            "mean_latency_ms": round(self.latency_sum / answered * 1000, 3) if answered else None,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }


class MirrorStats:
    """Counters for every mirror cluster plus request-level skips (before any cluster is known)."""

    def __init__(self) -> None:
        self.clusters: dict[str, ClusterCounters] = {}
        self.requests_skipped: Counter[str] = Counter()

    def cluster(self, name: str) -> ClusterCounters:
        c = self.clusters.get(name)
        if c is None:
            c = self.clusters[name] = ClusterCounters()
        return c

    def totals(self) -> ClusterCounters:
        t = ClusterCounters()
        for c in self.clusters.values():
            t.sampled += c.sampled
            t.sent += c.sent
            t.failed.update(c.failed)
            t.dropped.update(c.dropped)
            t.skipped.update(c.skipped)
            t.statuses.update(c.statuses)
            t.latency_sum += c.latency_sum
            t.bytes_sent += c.bytes_sent
            t.bytes_received += c.bytes_received
        return t

    def snapshot(self, inflight: dict[str, int] | None = None) -> dict[str, Any]:
        inflight = inflight or {}
        return {
            "clusters": {
                name: c.to_dict(inflight.get(name, 0)) for name, c in sorted(self.clusters.items())
            },
            "total": self.totals().to_dict(sum(inflight.values())),
            "requests_not_mirrored": dict(self.requests_skipped),
        }

    def summary_line(self) -> str:
        if not self.clusters:
            return "mirror summary: nothing sampled yet"
        parts = []
        for name, c in sorted(self.clusters.items()):
            text = f"{name}: sampled={c.sampled} sent={c.sent}"
            for label, counter in (
                ("failed", c.failed),
                ("dropped", c.dropped),
                ("skipped", c.skipped),
            ):
                if counter:
                    text += f" {label}=" + ",".join(f"{k}:{v}" for k, v in sorted(counter.items()))
            parts.append(text)
        return "mirror summary: " + "; ".join(parts)


def format_outcome(
    *,
    outcome: Outcome,
    rule: str,
    cluster: str,
    endpoint: str,
    shadow_host: str,
    reason: str = "",
    status: int | None = None,
    latency: float | None = None,
    bytes_sent: int = 0,
    bytes_received: int = 0,
    generation: int = 0,
) -> str:
    """One event-log line per mirror outcome. Never includes header values (they may be secrets)."""
    head = f"mirror {outcome.value}"
    if outcome is Outcome.SENT and status is not None:
        head += f" {status}"
    elif reason:
        head += f": {reason}"
    text = f"{head} rule={rule} cluster={cluster} endpoint={endpoint or '-'} host={shadow_host}"
    if latency is not None:
        text += f" latency={latency * 1000:.1f}ms"
    if bytes_sent or bytes_received:
        text += f" bytes={bytes_sent}/{bytes_received}"
    text += f" gen={generation}"
    return text
