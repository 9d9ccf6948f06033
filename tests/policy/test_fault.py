"""policy/fault.py: fault injection policies, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from meshmirror.config.virtualservice import (
    HTTPFaultInjection,
)
from meshmirror.percent import MILLION
from meshmirror.policy.fault import compile_fault


@pytest.mark.parametrize(
    ("spec", "delay", "delay_pm", "status", "abort_pm"),
    [
        ({"delay": {"fixedDelay": "2s"}}, 2.0, MILLION, None, 0),
        ({"delay": {"fixedDelay": "100ms", "percentage": {"value": 10}}}, 0.1, 100_000, None, 0),
        ({"delay": {"fixedDelay": "1s", "percent": 30}}, 1.0, 300_000, None, 0),
        ({"abort": {"httpStatus": 503}}, 0.0, 0, 503, MILLION),
        ({"abort": {"httpStatus": 500, "percentage": {"value": 0.5}}}, 0.0, 0, 500, 5_000),
    ],
    ids=["delay-100", "delay-percentage", "delay-percent", "abort-100", "abort-half-percent"],
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
        assert f.sample_abort(abort_pm - 1) == status
        assert f.sample_abort(abort_pm) is None or abort_pm == MILLION


def test_fault_with_only_grpc_abort_is_nothing() -> None:
    assert compile_fault(HTTPFaultInjection.model_validate({"abort": {"grpcStatus": "X"}})) is None
