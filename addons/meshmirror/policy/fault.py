"""Fault injection for the primary: Istio's `fault` (delay, then abort), compiled once.

A frozen policy plus pure sampling decisions (the caller supplies the random draw), so the mitm glue
only acts on the outcome. Kept apart from upstream.py: faults happen before the upstream is
contacted, timeouts and retries while it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshmirror.config.base import Percent
from meshmirror.config.virtualservice import HTTPFaultInjection
from meshmirror.golang import parse_duration_ns
from meshmirror.percent import MILLION


@dataclass(frozen=True, slots=True)
class FaultPolicy:
    """Envoy's fault filter as Istio configures it: delay first, then abort; each sampled per
    request with probability numerator / MILLION."""

    delay: float = 0.0  # seconds; 0 = no delay
    delay_per_million: int = 0
    abort_status: int | None = None  # None = no (HTTP) abort
    abort_per_million: int = 0

    def sample_delay(self, rand: int) -> float:
        """`rand` uniform in [0, MILLION)."""
        return self.delay if self.delay > 0 and rand < self.delay_per_million else 0.0

    def sample_abort(self, rand: int) -> int | None:
        if self.abort_status is None or rand >= self.abort_per_million:
            return None
        return self.abort_status


def _per_million(percentage: Percent | None, percent: int | None = None) -> int:
    """Istio `translatePercentToFractionalPercent`; unset -> 100%."""
    if percentage is not None:
        return max(0, min(MILLION, int(percentage.value * 10000)))
    if percent is not None:
        return max(0, min(MILLION, percent * 10000))
    return MILLION


def compile_fault(f: HTTPFaultInjection | None) -> FaultPolicy | None:
    if f is None:
        return None
    delay, delay_pm = 0.0, 0
    if f.delay is not None and f.delay.fixed_delay:
        try:
            delay = parse_duration_ns(f.delay.fixed_delay) / 1e9
        except ValueError:
            delay = 0.0
        delay_pm = _per_million(f.delay.percentage, f.delay.percent)
    status: int | None = None
    abort_pm = 0
    if f.abort is not None and f.abort.http_status:
        status = f.abort.http_status
        abort_pm = _per_million(f.abort.percentage)
    if delay <= 0 and status is None:
        return None  # only unserved kinds (grpcStatus, exponentialDelay): nothing to do
    return FaultPolicy(delay, delay_pm, status, abort_pm)
