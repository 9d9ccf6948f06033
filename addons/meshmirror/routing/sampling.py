"""Sampling decisions as Envoy makes them (pure, seedable).

Envoy draws one 64-bit random value per downstream request (the stream id) and uses it both for
the weighted-cluster pick (`random % total_weight`) and for every mirror policy
(`random % denominator < numerator`, `evaluateFractionalPercent`). Reusing the value makes
policies nest: a request mirrored at 20% is also mirrored at 50% (same denominator), and two
policies at the same fraction fire together. `Sampler` produces that value per request, either at
random or from the X-Request-Id so every replica of a proxy decides alike.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Literal, Protocol, TypeVar

from meshmirror.percent import DENOMINATOR_NAMES

SamplingMode = Literal["random", "request-id"]
SAMPLING_MODES: tuple[str, ...] = ("random", "request-id")


class Fraction(Protocol):
    @property
    def numerator(self) -> int: ...

    @property
    def denominator(self) -> int: ...


class Weighted(Protocol):
    @property
    def weight(self) -> int: ...


W = TypeVar("W", bound=Weighted)


def should_mirror(policy: Fraction, random_value: int) -> bool:
    """Envoy `evaluateFractionalPercent`: `random_value % denominator < numerator` (the proto
    comment says "<=", the code says "<")."""
    denominator = policy.denominator
    if denominator <= 0:
        return False
    return random_value % denominator < policy.numerator


def pick_weighted(clusters: Sequence[W], random_value: int) -> W:
    """Envoy's weighted-cluster pick: `random_value % total_weight` falls into the intervals
    [0, w1), [w1, w1+w2), ... in order. A single entry is returned whatever its weight."""
    if not clusters:
        raise ValueError("pick_weighted needs at least one cluster")
    if len(clusters) == 1:
        return clusters[0]
    total = 0
    for c in clusters:
        total += max(c.weight, 0)
    if total <= 0:
        return clusters[0]
    selected = random_value % total
    upper = 0
    for c in clusters:
        upper += max(c.weight, 0)
        if selected < upper:
            return c
    return clusters[-1]  # unreachable: selected < total


def request_id_value(request_id: str) -> int:
    """A stable 64-bit value for an X-Request-Id (blake2b, 8 bytes, big-endian): the same id
    gives the same decisions in every process and on every run."""
    digest = hashlib.blake2b(request_id.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Sampler:
    """Where the per-request 64-bit random value comes from.

    `mode="random"`: a PRNG, reproducible when `seed` is given. `mode="request-id"`: a hash of
    the X-Request-Id value, falling back to the PRNG when the request has none.
    """

    def __init__(self, mode: str = "random", seed: int | None = None) -> None:
        if mode not in SAMPLING_MODES:
            raise ValueError(
                f"sampling mode must be one of {', '.join(SAMPLING_MODES)} (got {mode!r})"
            )
        self.mode: str = mode
        self.seed = seed
        self._random = random.Random(seed)

    def value_for(self, request_id: str | None = None) -> int:
        if self.mode == "request-id" and request_id:
            return request_id_value(request_id)
        return self._random.getrandbits(64)

    def __repr__(self) -> str:
        return f"Sampler(mode={self.mode!r}, seed={self.seed!r})"


def fraction_percent(policy: Fraction) -> float:
    if policy.denominator <= 0:
        return 0.0
    return policy.numerator * 100 / policy.denominator


def describe_fraction(policy: Fraction) -> str:
    """`50% (500000/MILLION)`, `100% (100/HUNDRED)`, `0.5699% (5699/MILLION)`."""
    denominator = DENOMINATOR_NAMES.get(policy.denominator, str(policy.denominator))
    return f"{fraction_percent(policy):.6g}% ({policy.numerator}/{denominator})"
