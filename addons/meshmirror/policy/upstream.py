"""Route timeout and retry policy for the primary, compiled once (pure).

`UpstreamPolicy` holds Istio's `timeout` and `retries` as Envoy applies them and answers, per
attempt, whether a status or a failure is retried; mitm/primary.py does the sending and the waiting.

Istio gives a route without `retries` its mesh default retry policy (`retry.DefaultPolicy`): 2
retries on connect-failure, refused-stream, unavailable, cancelled and retriable-status-codes.
Since Istio 1.24 the default names no retriable status code (503 was dropped as unsafe for
requests that are not idempotent, `EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY`), so it retries no
HTTP status. `compile_mesh_default` builds it for such routes; the addon applies it only when
asked (`mirror_default_retries=istio`), because it costs the owned upstream exchange.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from meshmirror.config.virtualservice import HTTPRetry
from meshmirror.golang import parse_duration_ns

# Istio's retryOn when a route has no `retries`, or a `retries` block without `retryOn`, in
# Istio's order (the dump shows it as Istio writes it).
DEFAULT_RETRY_ON_TEXT = (
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
)
DEFAULT_RETRY_ON = frozenset(DEFAULT_RETRY_ON_TEXT.split(","))
DEFAULT_RETRIABLE_CODES: frozenset[int] = frozenset()
MESH_DEFAULT_RETRIES = 2
# Istio's default host predicate and its attempts (Envoy tries other hosts first on a retry).
_PREVIOUS_HOSTS = {
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
        "PreviousHostsPredicate"
    },
}
_GRPC_CODES = {
    "cancelled": "1",
    "deadline-exceeded": "4",
    "resource-exhausted": "8",
    "internal": "13",
    "unavailable": "14",
}
# Why an attempt produced no response.
Failure = Literal["connect-failure", "refused-stream", "reset", "timeout"]


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
    # Envoy's retry_on as Istio writes it (order kept), and whether the previous-hosts
    # predicate is set (`retryIgnorePreviousHosts`, default true): for the dump.
    retry_on_text: str = ""
    previous_hosts: bool = True

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

    def describe(self) -> str:
        """`2 retries on 5xx,429, per try 500ms` (the table's words)."""
        text = f"{self.retries} retr{'y' if self.retries == 1 else 'ies'} on {self._retry_on()}"
        if self.per_try_timeout:
            text += f", per try {self.per_try_timeout:g}s"
        return text

    def to_envoy(self) -> dict[str, Any]:
        """Envoy's RetryPolicy as Istio's `retry.ConvertPolicy` builds it (no `retries`: the
        mesh default)."""
        out: dict[str, Any] = {"retry_on": self._retry_on(), "num_retries": self.retries}
        if self.per_try_timeout:
            out["per_try_timeout"] = f"{self.per_try_timeout:g}s"
        if self.previous_hosts:
            out["retry_host_predicate"] = [_PREVIOUS_HOSTS]
        out["host_selection_retry_max_attempts"] = "5"
        if self.retriable_codes:
            out["retriable_status_codes"] = sorted(self.retriable_codes)
        return out

    def _retry_on(self) -> str:
        return self.retry_on_text or ",".join(sorted(self.retry_on))

    def retry_for_failure(self, failure: Failure) -> bool:
        on = self.retry_on
        if failure == "timeout":  # Envoy retries a per-try timeout under 5xx / gateway-error
            return bool(on & {"5xx", "gateway-error"})
        if failure == "connect-failure":
            return bool(on & {"connect-failure", "5xx", "gateway-error", "reset"})
        if failure == "refused-stream":  # an HTTP/2 stream the upstream did not process
            return bool(on & {"refused-stream", "5xx", "gateway-error", "reset"})
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
    on, codes, _ = _parse_retry_on(text)
    return on, codes


def _parse_retry_on(text: str | None) -> tuple[frozenset[str], frozenset[int], str]:
    """(tokens, codes, Envoy's retry_on text as Istio writes it)."""
    if not text:
        return DEFAULT_RETRY_ON, DEFAULT_RETRIABLE_CODES, DEFAULT_RETRY_ON_TEXT
    tokens: list[str] = []
    codes: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part.isdigit():
            codes.add(int(part))
        else:
            tokens.append(part)
    joined = ",".join(tokens)
    if codes and "retriable-status-codes" not in joined:
        # Istio appends it as written, a leading comma included when no other token is left.
        joined += ",retriable-status-codes"
        tokens.append("retriable-status-codes")
    return frozenset(tokens), frozenset(codes), joined


def compile_upstream(timeout: str | None, retries: HTTPRetry | None) -> UpstreamPolicy | None:
    """None when neither is set: the primary then goes through mitmproxy untouched. A route
    without `retries` gets no retries here: Istio's mesh default is `compile_mesh_default`."""
    total = _seconds(timeout)
    attempts = retries.attempts or 0 if retries is not None else 0
    if total <= 0 and attempts <= 0:
        return None
    if attempts <= 0 or retries is None:
        return UpstreamPolicy(timeout=total)
    on, codes, text = _parse_retry_on(retries.retry_on)
    return UpstreamPolicy(
        timeout=total,
        retries=attempts,
        per_try_timeout=_seconds(retries.per_try_timeout),
        retry_on=on,
        retriable_codes=codes,
        backoff=_seconds(retries.backoff) or 0.025,
        retry_on_text=text,
        previous_hosts=retries.retry_ignore_previous_hosts is not False,
    )


def compile_mesh_default(timeout: str | None, retries: HTTPRetry | None) -> UpstreamPolicy | None:
    """Istio's mesh default retry policy with the route's timeout, for a route without
    `retries` (None when it has any, `attempts: 0` included: that one disables retries)."""
    if retries is not None:
        return None
    return UpstreamPolicy(
        timeout=_seconds(timeout),
        retries=MESH_DEFAULT_RETRIES,
        retry_on=DEFAULT_RETRY_ON,
        retriable_codes=DEFAULT_RETRIABLE_CODES,
        retry_on_text=DEFAULT_RETRY_ON_TEXT,
    )
