"""Route timeout and retry policy for the primary, compiled once (pure).

`UpstreamPolicy` holds Istio's `timeout` and `retries` as Envoy applies them and answers, per
attempt, whether a status or a failure is retried; mitm/primary.py does the sending and the waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meshmirror.config.virtualservice import HTTPRetry
from meshmirror.golang import parse_duration_ns

# Istio's DefaultPolicy when `retryOn` is unset in a `retries` block.
DEFAULT_RETRY_ON = frozenset(
    {"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"}
)
DEFAULT_RETRIABLE_CODES = frozenset({503})
_GRPC_CODES = {
    "cancelled": "1",
    "deadline-exceeded": "4",
    "resource-exhausted": "8",
    "internal": "13",
    "unavailable": "14",
}
# Why an attempt produced no response.
Failure = Literal["connect-failure", "reset", "timeout"]


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    """Route timeout plus retry policy for the primary. `timeout` 0 = none (Istio's default);
    `retries` = extra attempts (Envoy `num_retries`); `per_try_timeout` 0 = only the global."""

    timeout: float = 0.0
    retries: int = 0
    per_try_timeout: float = 0.0
    retry_on: frozenset[str] = frozenset()
    retriable_codes: frozenset[int] = frozenset()
    backoff: float = 0.025

    def retry_for_status(self, status: int, grpc_status: str | None = None) -> bool:
        on = self.retry_on
        if "5xx" in on and status >= 500:
            return True
        if "gateway-error" in on and status in (502, 503, 504):
            return True
        if "retriable-4xx" in on and status == 409:
            return True
        if "retriable-status-codes" in on and status in self.retriable_codes:
            return True
        if grpc_status is not None:
            for token, code in _GRPC_CODES.items():
                if token in on and grpc_status == code:
                    return True
        return False

    def retry_for_failure(self, failure: Failure) -> bool:
        on = self.retry_on
        if failure == "timeout":  # Envoy retries a per-try timeout under 5xx / gateway-error
            return bool(on & {"5xx", "gateway-error"})
        if failure == "connect-failure":
            return bool(on & {"connect-failure", "5xx", "gateway-error", "reset"})
        return bool(on & {"5xx", "gateway-error", "reset"})


def _seconds(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return parse_duration_ns(text) / 1e9
    except ValueError:
        return 0.0


def parse_retry_on(text: str | None) -> tuple[frozenset[str], frozenset[int]]:
    """Istio `parseRetryOn`: numeric tokens become retriable status codes (and imply the
    `retriable-status-codes` policy); unset -> Istio's default policy."""
    if not text:
        return DEFAULT_RETRY_ON, DEFAULT_RETRIABLE_CODES
    tokens: set[str] = set()
    codes: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part.isdigit():
            codes.add(int(part))
        else:
            tokens.add(part)
    if codes:
        tokens.add("retriable-status-codes")
    return frozenset(tokens), frozenset(codes)


def compile_upstream(timeout: str | None, retries: HTTPRetry | None) -> UpstreamPolicy | None:
    """None when neither is set: the primary then goes through mitmproxy untouched. meshmirror
    does not apply Istio's mesh-default retry policy to routes without `retries`."""
    total = _seconds(timeout)
    attempts = retries.attempts or 0 if retries is not None else 0
    if total <= 0 and attempts <= 0:
        return None
    if attempts <= 0 or retries is None:
        return UpstreamPolicy(timeout=total)
    on, codes = parse_retry_on(retries.retry_on)
    return UpstreamPolicy(
        timeout=total,
        retries=attempts,
        per_try_timeout=_seconds(retries.per_try_timeout),
        retry_on=on,
        retriable_codes=codes,
        backoff=_seconds(retries.backoff) or 0.025,
    )
