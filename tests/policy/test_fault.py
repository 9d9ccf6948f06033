"""policy/fault.py: fault injection policies, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from meshmirror.config.virtualservice import (
    HTTPFaultInjection,
)
from meshmirror.percent import MILLION
from meshmirror.policy.fault import FaultAbort, compile_fault


@pytest.mark.parametrize(
    ("spec", "delay", "delay_pm", "status", "abort_pm"),
    [
        # No percentage: nothing is delayed or aborted (the API; Envoy's unset fraction).
        ({"delay": {"fixedDelay": "2s"}}, 2.0, 0, None, 0),
        ({"delay": {"fixedDelay": "100ms", "percentage": {"value": 10}}}, 0.1, 100_000, None, 0),
        ({"delay": {"fixedDelay": "1s", "percent": 30}}, 1.0, 300_000, None, 0),
        ({"abort": {"httpStatus": 503}}, 0.0, 0, 503, 0),
        ({"abort": {"httpStatus": 503, "percentage": {"value": 100}}}, 0.0, 0, 503, MILLION),
        ({"abort": {"httpStatus": 500, "percentage": {"value": 0.5}}}, 0.0, 0, 500, 5_000),
    ],
    ids=[
        "delay-unset-never",
        "delay-percentage",
        "delay-percent",
        "abort-unset-never",
        "abort-100",
        "abort-half-percent",
    ],
)
def test_fault(
    spec: dict[str, Any], delay: float, delay_pm: int, status: int | None, abort_pm: int
) -> None:
    f = compile_fault(HTTPFaultInjection.model_validate(spec))
    assert f is not None
    assert (f.delay, f.delay_per_million, f.abort_status, f.abort_per_million) == (
        delay,
        delay_pm,
        status,
        abort_pm,
    )
    # Sampling: below the fraction fires, at or above does not.
    if delay_pm:
        assert f.sample_delay(delay_pm - 1) == delay
        assert f.sample_delay(delay_pm) == 0.0 or delay_pm == MILLION
    if abort_pm:
        assert f.sample_abort(abort_pm - 1) == FaultAbort(status)
        assert f.sample_abort(abort_pm) is None or abort_pm == MILLION
    else:
        assert f.sample_abort(0) is None
    if not delay_pm:
        assert f.sample_delay(0) == 0.0


@pytest.mark.parametrize(
    ("name", "code"),
    [("OK", 0), ("CANCELLED", 1), ("NOT_FOUND", 5), ("UNAVAILABLE", 14), ("UNAUTHENTICATED", 16)],
)
def test_grpc_abort_is_http_200_with_the_grpc_code(name: str, code: int) -> None:
    # Envoy's fault filter answers a grpcStatus abort with HTTP 200 and the gRPC status.
    f = compile_fault(
        HTTPFaultInjection.model_validate(
            {"abort": {"grpcStatus": name, "percentage": {"value": 25}}}
        )
    )
    assert f is not None
    assert (f.abort_status, f.abort_grpc_status, f.abort_per_million) == (200, code, 250_000)
    assert f.sample_abort(249_999) == FaultAbort(200, code)
    assert f.sample_abort(250_000) is None


def test_grpc_abort_with_a_delay_keeps_both() -> None:
    f = compile_fault(
        HTTPFaultInjection.model_validate(
            {"delay": {"fixedDelay": "1s"}, "abort": {"grpcStatus": "INTERNAL"}}
        )
    )
    assert f is not None and (f.delay, f.abort_grpc_status) == (1.0, 13)


def test_fault_with_only_an_unknown_grpc_status_is_nothing() -> None:
    # Validation rejects the name first; the compiler makes nothing of it.
    assert compile_fault(HTTPFaultInjection.model_validate({"abort": {"grpcStatus": "X"}})) is None
