"""percent.py: Istio's percent -> Envoy FractionalPercent conversion, and how fractions print."""

from __future__ import annotations

import math

import pytest

from meshmirror.percent import (
    DENOMINATOR_NAMES,
    HUNDRED,
    MILLION,
    fraction_of_percentage,
    percent_text,
)

UINT32_MAX = 2**32 - 1


@pytest.mark.parametrize(
    ("value", "fraction"),
    [
        pytest.param(50, (500_000, MILLION), id="fifty"),
        pytest.param(100, (1_000_000, MILLION), id="hundred"),
        pytest.param(0.57, (5699, MILLION), id="truncated-like-go"),
        pytest.param(0.0001, (1, MILLION), id="smallest-step"),
        pytest.param(0.00001, (0, MILLION), id="below-one-step-is-zero-of-a-million"),
        pytest.param(429_496.7295, (UINT32_MAX, MILLION), id="exactly-uint32-max"),
        pytest.param(1e9, (UINT32_MAX, MILLION), id="clamped-to-uint32"),
        pytest.param(math.inf, (UINT32_MAX, MILLION), id="infinity-clamped"),
        pytest.param(0, None, id="zero-no-policy"),
        pytest.param(-0.0, None, id="negative-zero-no-policy"),
        pytest.param(-5, None, id="negative-no-policy"),
        pytest.param(math.nan, None, id="nan-no-policy"),
    ],
)
def test_fraction_of_percentage(value: float, fraction: tuple[int, int] | None) -> None:
    assert fraction_of_percentage(value) == fraction


@pytest.mark.parametrize(
    ("numerator", "denominator", "text"),
    [
        pytest.param(500_000, MILLION, "50%", id="half-of-million"),
        pytest.param(5699, MILLION, "0.5699%", id="small-fraction"),
        pytest.param(100, HUNDRED, "100%", id="all-of-hundred"),
        pytest.param(1, 3, "33.3333%", id="six-significant-digits"),
        pytest.param(0, MILLION, "0%", id="zero"),
        pytest.param(2, 10_000, "0.02%", id="ten-thousand"),
    ],
)
def test_percent_text(numerator: int, denominator: int, text: str) -> None:
    assert percent_text(numerator, denominator) == text


def test_denominator_names_are_envoys() -> None:
    assert DENOMINATOR_NAMES == {100: "HUNDRED", 10_000: "TEN_THOUSAND", 1_000_000: "MILLION"}
