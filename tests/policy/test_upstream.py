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
    compile_mesh_default,
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


def test_mesh_default_is_istio_1_31s() -> None:
    # retry.DefaultPolicy: 2 retries; since Istio 1.24 no retriable status code (no 503).
    p = compile_mesh_default("3s", None)
    assert p is not None
    assert (p.timeout, p.retries, p.retry_on, p.retriable_codes) == (
        3.0,
        2,
        frozenset(
            {
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
                "retriable-status-codes",
            }
        ),
        frozenset(),
    )
    assert not p.retry_for_status(503)
    assert p.retry_for_status(200, "14") and p.retry_for_status(200, "1")  # unavailable, cancelled
    assert p.retry_for_failure("connect-failure")
    assert not p.retry_for_failure("reset") and not p.retry_for_failure("timeout")
    assert p.to_envoy() == {
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": "5",
    }


@pytest.mark.parametrize(
    "retries",
    [{"attempts": 0}, {"attempts": 3}, {"attempts": 1, "retryOn": "5xx"}],
    ids=["attempts-0-disables", "explicit", "explicit-retry-on"],
)
def test_mesh_default_only_without_retries(retries: dict[str, Any]) -> None:
    assert compile_mesh_default(None, HTTPRetry.model_validate(retries)) is None


@pytest.mark.parametrize(
    ("retries", "retry_on", "codes"),
    [
        (
            {"attempts": 2},
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
            None,
        ),
        ({"attempts": 2, "retryOn": "reset,5xx"}, "reset,5xx", None),
        ({"attempts": 2, "retryOn": "5xx,503,429"}, "5xx,retriable-status-codes", [429, 503]),
        # Istio appends the token as written: with only codes, after an empty list.
        ({"attempts": 2, "retryOn": "503"}, ",retriable-status-codes", [503]),
    ],
    ids=["no-retry-on", "order-kept", "codes", "codes-only"],
)
def test_explicit_policy_dump(
    retries: dict[str, Any], retry_on: str, codes: list[int] | None
) -> None:
    p = compile_upstream(None, HTTPRetry.model_validate(retries))
    assert p is not None
    dump = p.to_envoy()
    assert dump["retry_on"] == retry_on
    assert dump.get("retriable_status_codes") == codes
    assert "retry_host_predicate" in dump


def test_retry_ignore_previous_hosts_false_drops_the_predicate() -> None:
    spec = {"attempts": 2, "retryIgnorePreviousHosts": False}
    p = compile_upstream(None, HTTPRetry.model_validate(spec))
    assert p is not None and "retry_host_predicate" not in p.to_envoy()
