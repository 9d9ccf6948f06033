"""Istio's mirror percentages as Envoy fractions (`MirrorPercent`, `MirrorPercentByPolicy` in
Istio's route.go), computed once at configure time."""

from __future__ import annotations

from meshmirror.config.base import Percent
from meshmirror.config.virtualservice import HTTPRoute
from meshmirror.percent import HUNDRED, fraction_of_percentage


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
