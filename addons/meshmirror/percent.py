"""Istio percentages as Envoy fractions (`translatePercentToFractionalPercent`, `MirrorPercent`,
`MirrorPercentByPolicy` in Istio's route.go), computed once at configure time."""

from __future__ import annotations

import math

from meshmirror.model import HTTPRoute, Percent

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


def mirror_fraction(rule: HTTPRoute) -> tuple[int, int] | None:
    """Istio `MirrorPercent`: mirrorPercentage wins over mirrorPercent; absent -> 100/HUNDRED;
    an explicit 0 -> None (no mirror policy at all)."""
    if rule.mirror_percentage is not None:
        return fraction_of_percentage(rule.mirror_percentage.value)
    if rule.mirror_percent is not None:
        return (rule.mirror_percent, HUNDRED) if rule.mirror_percent > 0 else None
    return HUNDRED, HUNDRED


def mirror_policy_fraction(percentage: Percent | None) -> tuple[int, int] | None:
    """Istio `MirrorPercentByPolicy` for one `mirrors[]` entry."""
    if percentage is None:
        return HUNDRED, HUNDRED
    return fraction_of_percentage(percentage.value)
