"""Fault injection for the primary: Istio's `fault` (delay, then abort), compiled once.

A frozen policy plus pure sampling decisions (the caller supplies the random draw), so the mitm glue
only acts on the outcome. Kept apart from upstream.py: faults happen before the upstream is
contacted, timeouts and retries while it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from meshmirror import grpc
from meshmirror.config.base import Percent
from meshmirror.config.virtualservice import HTTPFaultInjection
from meshmirror.golang import parse_duration_ns
from meshmirror.percent import MILLION


class FaultAbort(NamedTuple):
    """An abort that fired: the HTTP status, and the gRPC status of a `grpcStatus` abort (whose
    HTTP status is 200, as Envoy's fault filter sets it)."""

    status: int
    grpc_status: int | None = None


@dataclass(frozen=True, slots=True)
class FaultPolicy:
    """Envoy's fault filter as Istio configures it: delay first, then abort; each sampled per
    request with probability numerator / MILLION."""

    delay: float = 0.0  # seconds; 0 = no delay
    delay_per_million: int = 0
    abort_status: int | None = None  # None = no abort
    abort_per_million: int = 0
    abort_grpc_status: int | None = None  # a grpcStatus abort's code (abort_status is 200)

    def sample_delay(self, rand: int) -> float:
        """`rand` uniform in [0, MILLION)."""
        return self.delay if self.delay > 0 and rand < self.delay_per_million else 0.0

    def sample_abort(self, rand: int) -> FaultAbort | None:
        if self.abort_status is None or rand >= self.abort_per_million:
            return None
        return FaultAbort(self.abort_status, self.abort_grpc_status)

    def to_envoy(self) -> dict[str, Any]:
        """The route's `typed_per_filter_config` entry for Envoy's fault filter, as Istio's
        `translateFault` writes it (fractions per million)."""
        out: dict[str, Any] = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
        }
        if self.delay > 0:
            out["delay"] = {
                "fixed_delay": _duration(self.delay),
                "percentage": _fraction(self.delay_per_million),
            }
        if self.abort_status is not None:
            abort: dict[str, Any] = {"percentage": _fraction(self.abort_per_million)}
            if self.abort_grpc_status is not None:
                abort["grpc_status"] = self.abort_grpc_status
            else:
                abort["http_status"] = self.abort_status
            out["abort"] = abort
        return {"envoy.filters.http.fault": out}


def _fraction(per_million: int) -> dict[str, Any]:
    return {"numerator": per_million, "denominator": "MILLION"}


def _duration(seconds: float) -> str:
    """Protobuf JSON's Duration: `1s`, `0.250s`."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _per_million(percentage: Percent | None, percent: int | None = None) -> int:
    """Istio `translatePercentToFractionalPercent` (or, for a delay, the deprecated integer
    `percent`). Unset -> 0: "If left unspecified, no request will be delayed" / "If not
    specified, no request will be aborted" (the API), as Envoy's unset fraction never fires."""
    if percentage is not None:
        return max(0, min(MILLION, int(percentage.value * 10000)))
    if percent is not None:
        return max(0, min(MILLION, percent * 10000))
    return 0


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
    grpc_status: int | None = None
    abort_pm = 0
    if f.abort is not None and f.abort.http_status:
        status = f.abort.http_status
        abort_pm = _per_million(f.abort.percentage)
    elif f.abort is not None and f.abort.grpc_status in grpc.STATUS_CODES:
        # Envoy's fault filter: "If gRPC status code is set, then http status will be set to
        # Http::Code::OK (200)"; the local reply then carries the gRPC status.
        status, grpc_status = 200, grpc.STATUS_CODES[f.abort.grpc_status]
        abort_pm = _per_million(f.abort.percentage)
    if delay <= 0 and status is None:
        return None  # only unserved kinds (exponentialDelay, http2Error): nothing to do
    return FaultPolicy(delay, delay_pm, status, abort_pm, grpc_status)
