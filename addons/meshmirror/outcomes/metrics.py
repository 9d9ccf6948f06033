"""Prometheus exposition of the mirror counters (`mirror_metrics`), with prometheus_client.

Nothing is recorded for Prometheus on the request path: the counters are the ones `mirror.stats`
reads (MirrorStats), turned into metric families when Prometheus scrapes, so the two agree
exactly. The only additions are two latency histograms, shadow and primary, per mirror cluster
and with the same buckets (so `histogram_quantile` of one over the other compares them); a copy's
observation is a bisect and two increments.

Names follow Prometheus conventions: the `meshmirror_` prefix, `_total` counters, `_seconds`
histograms. Labels are low-cardinality by construction: the rule (VirtualService and rule index),
the mirror cluster, an outcome class or reason from a closed set, a status class (2xx..5xx).
Never a path, a Host or a header value.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from meshmirror import grpc
from meshmirror.outcomes.counters import MirrorStats

#: Seconds; the same for the shadow and the primary.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Histogram:
    """Counts per bucket (not cumulative; `LATENCY_BUCKETS` then +Inf), sum and count."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


@dataclass
class Latencies:
    """Shadow and primary latency per mirror cluster, for `mirror_metrics`."""

    shadow: dict[str, Histogram] = field(default_factory=dict)
    primary: dict[str, Histogram] = field(default_factory=dict)

    def observe_shadow(self, cluster: str, seconds: float) -> None:
        h = self.shadow.get(cluster)
        if h is None:
            h = self.shadow[cluster] = Histogram()
        h.observe(seconds)

    def observe_primary(self, clusters: Iterable[str], seconds: float) -> None:
        for cluster in clusters:
            h = self.primary.get(cluster)
            if h is None:
                h = self.primary[cluster] = Histogram()
            h.observe(seconds)


@dataclass(frozen=True)
class ProxyState:
    """What the exposition reads beside the counters, gathered when Prometheus scrapes."""

    inflight: Mapping[str, int]
    circuits: Mapping[str, Mapping[str, object]]
    comparisons: Mapping[tuple[str, str], Mapping[str, int]]
    generation: int
    reloads: Mapping[str, int]
    # mirror_log records `written` and `lost` (the file could not be written).
    log_records: Mapping[str, int] = field(default_factory=dict)
    # Per (rule, cluster): copies not compared, by reason (too_costly, body_over_limit, ...).
    not_compared: Mapping[tuple[str, str], Mapping[str, int]] = field(default_factory=dict)


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class _Families(Collector):
    def __init__(self, stats: MirrorStats, latencies: Latencies, state: ProxyState) -> None:
        self.stats, self.latencies, self.state = stats, latencies, state

    def collect(self) -> Iterable[Metric]:
        stats, state = self.stats, self.state
        # Copies of the dicts first: a scrape never sees one half-updated (it runs on the loop,
        # but the families are built from plain values all the same).
        clusters = dict(stats.clusters)
        matched = CounterMetricFamily(
            "meshmirror_requests_matched",
            "Requests a rule with this mirror matched, sampled or not.",
            labels=("rule", "cluster"),
        )
        for (rule, cluster), n in sorted(stats.rule_matches.items()):
            matched.add_metric((rule, cluster), n)
        yield matched
        sampled = CounterMetricFamily(
            "meshmirror_copies_sampled", "Copies sampled for the mirror.", labels=("cluster",)
        )
        sent = CounterMetricFamily(
            "meshmirror_copies_sent",
            "Copies the mirror answered, by the status class of its answer.",
            labels=("cluster", "status_class"),
        )
        outcomes = {
            kind: CounterMetricFamily(
                f"meshmirror_copies_{kind}",
                f"Copies {kind}, by {what}.",
                labels=("cluster", label),
            )
            for kind, what, label in (
                ("failed", "failure class", "class"),
                ("dropped", "reason", "reason"),
                ("skipped", "reason", "reason"),
            )
        }
        resent = CounterMetricFamily(
            "meshmirror_copies_resent",
            "Copies sent again after a stale keep-alive (idempotent methods only).",
            labels=("cluster",),
        )
        inflight = GaugeMetricFamily(
            "meshmirror_copies_in_flight", "Copies in flight.", labels=("cluster",)
        )
        grpc_answers = CounterMetricFamily(
            "meshmirror_copies_grpc",
            "Copies of gRPC calls the mirror answered, by the gRPC status of its answer.",
            labels=("cluster", "grpc_status"),
        )
        for name, c in sorted(clusters.items()):
            sampled.add_metric((name,), c.sampled)
            by_class: dict[str, int] = {}
            for status, n in c.statuses.items():
                key = status_class(status)
                by_class[key] = by_class.get(key, 0) + n
            for key, n in sorted(by_class.items()):
                sent.add_metric((name, key), n)
            for kind, counter in (
                ("failed", c.failed),
                ("dropped", c.dropped),
                ("skipped", c.skipped),
            ):
                for reason, n in sorted(counter.items()):
                    outcomes[kind].add_metric((name, reason), n)
            resent.add_metric((name,), c.resent)
            inflight.add_metric((name,), state.inflight.get(name, 0))
            by_name: dict[str, int] = {}
            for code, n in c.grpc_statuses.items():
                label = grpc.status_label(code)  # bounded: 17 names and `other`
                by_name[label] = by_name.get(label, 0) + n
            for label, n in sorted(by_name.items()):
                grpc_answers.add_metric((name, label), n)
        yield sampled
        yield sent
        yield from outcomes.values()
        yield resent
        yield inflight
        yield grpc_answers
        for side, hists in (("shadow", self.latencies.shadow), ("primary", self.latencies.primary)):
            family = HistogramMetricFamily(
                f"meshmirror_{side}_latency_seconds",
                f"The {side}'s latency for requests copied to the mirror cluster.",
                labels=("cluster",),
            )
            for name, h in sorted(dict(hists).items()):
                family.add_metric((name,), h.cumulative(), h.total)
            yield family
        compared = CounterMetricFamily(
            "meshmirror_comparisons",
            "Copies compared with the primary: matched, mismatched, not_compared.",
            labels=("rule", "cluster", "result"),
        )
        for (rule, cluster), counts in sorted(state.comparisons.items()):
            for result, n in sorted(counts.items()):
                compared.add_metric((rule, cluster, result), n)
        yield compared
        if state.not_compared:
            why = CounterMetricFamily(
                "meshmirror_comparisons_not_compared",
                "Copies not compared, by reason: too_costly, body_over_limit, busy, lost, error.",
                labels=("rule", "cluster", "reason"),
            )
            for (rule, cluster), reasons in sorted(state.not_compared.items()):
                for reason, n in sorted(reasons.items()):
                    why.add_metric((rule, cluster, reason), n)
            yield why
        circuit = GaugeMetricFamily(
            "meshmirror_circuit_state",
            "1 for the mirror cluster's circuit state (closed, open, half_open).",
            labels=("cluster", "state"),
        )
        for name in sorted(set(clusters) | set(state.circuits)):
            current = str(state.circuits.get(name, {}).get("state", "closed"))
            for s in ("closed", "open", "half_open"):
                circuit.add_metric((name, s), 1.0 if s == current else 0.0)
        yield circuit
        yield GaugeMetricFamily(
            "meshmirror_config_generation",
            "The config generation being served.",
            value=state.generation,
        )
        reloads = CounterMetricFamily(
            "meshmirror_config_reloads", "Hot reloads, by result.", labels=("result",)
        )
        for result in ("loaded", "rejected"):
            reloads.add_metric((result,), state.reloads.get(result, 0))
        yield reloads
        if state.log_records:
            records = CounterMetricFamily(
                "meshmirror_outcome_log_records",
                "Records for mirror_log: written, or lost because the file could not be written.",
                labels=("result",),
            )
            for result in ("written", "lost"):
                records.add_metric((result,), state.log_records.get(result, 0))
            yield records


def render_metrics(stats: MirrorStats, latencies: Latencies, state: ProxyState) -> bytes:
    """The exposition, in Prometheus's text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(stats, latencies, state))
    return generate_latest(registry)
