"""Envoy's FractionalPercent: the denominators, and Istio's percent -> fraction conversion
(`translatePercentToFractionalPercent` in Istio's route.go).

Sampling, fault injection, the route dump and the primary's fault policy all count in these
fractions, so they sit below every stage."""

from __future__ import annotations

import math

HUNDRED = 100
MILLION = 1_000_000
_UINT32_MAX = 0xFFFFFFFF
DENOMINATOR_NAMES = {HUNDRED: "HUNDRED", 10_000: "TEN_THOUSAND", MILLION: "MILLION"}


def percent_text(numerator: int, denominator: int) -> str:
    return f"{numerator * 100 / denominator:.6g}%"


def fraction_of_percentage(value: float) -> tuple[int, int] | None:
    """`translatePercentToFractionalPercent`: v > 0 -> (uint32(v * 10000), MILLION), truncating
    the float product as Go does (0.57 -> 5699); zero, negative or NaN -> no policy."""
    if not (value > 0):
        return None
    product = value * 10000
    numerator = _UINT32_MAX if not math.isfinite(product) else min(int(product), _UINT32_MAX)
    return numerator, MILLION
