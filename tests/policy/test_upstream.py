"""policy/upstream.py: timeout and retry policies and decisions."""

from __future__ import annotations

from typing import Any

import pytest

from meshmirror.config.virtualservice import (
    HTTPRetry,
)
from meshmirror.policy.upstream import (
    DEFAULT_RETRIABLE_CODES,
    DEFAULT_RETRY_ON,
    compile_upstream,
    parse_retry_on,
)


def test_retry_on_parsing() -> None:
    assert parse_retry_on(None) == (DEFAULT_RETRY_ON, DEFAULT_RETRIABLE_CODES)
    assert parse_retry_on("5xx,503, 429") == (
        frozenset({"5xx", "retriable-status-codes"}),
        frozenset({503, 429}),
    )
    assert parse_retry_on("gateway-error") == (frozenset({"gateway-error"}), frozenset())


def test_upstream_policy_compile() -> None:
    assert compile_upstream(None, None) is None
    assert compile_upstream(None, HTTPRetry(attempts=0)) is None
    p = compile_upstream("2s", None)
    assert p is not None and (p.timeout, p.retries) == (2.0, 0)
    p = compile_upstream(
        None,
        HTTPRetry.model_validate(
            {"attempts": 3, "perTryTimeout": "250ms", "retryOn": "5xx", "backoff": "10ms"}
        ),
    )
    assert p is not None
    assert (p.timeout, p.retries, p.per_try_timeout, p.backoff) == (0.0, 3, 0.25, 0.01)


@pytest.mark.parametrize(
    ("retry_on", "status", "grpc", "failure", "expected"),
    [
        ("5xx", 500, None, None, True),
        ("5xx", 404, None, None, False),
        ("gateway-error", 500, None, None, False),
        ("gateway-error", 503, None, None, True),
        ("retriable-4xx", 409, None, None, True),
        ("503", 503, None, None, True),
        ("503", 502, None, None, False),
        ("unavailable", 200, "14", None, True),
        ("connect-failure", None, None, "connect-failure", True),
        ("connect-failure", None, None, "reset", False),
        ("reset", None, None, "reset", True),
        ("5xx", None, None, "timeout", True),
        ("connect-failure", None, None, "timeout", False),
        ("refused-stream", None, None, "reset", False),  # HTTP/2 only: never on HTTP/1.1
    ],
)
def test_retry_decisions(
    retry_on: str, status: int | None, grpc: str | None, failure: Any, expected: bool
) -> None:
    p = compile_upstream(None, HTTPRetry.model_validate({"attempts": 1, "retryOn": retry_on}))
    assert p is not None
    if status is not None:
        assert p.retry_for_status(status, grpc) is expected
    else:
        assert p.retry_for_failure(failure) is expected
