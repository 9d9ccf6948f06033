"""sampling.py: Envoy's fractional-percent and weighted-pick arithmetic, and the Sampler."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import pytest

from meshmirror.routing.sampling import (
    Sampler,
    describe_fraction,
    pick_weighted,
    request_id_value,
    should_mirror,
)


@dataclass(frozen=True)
class Frac:
    numerator: int
    denominator: int


@dataclass(frozen=True)
class W:
    name: str
    weight: int


@pytest.mark.parametrize(
    ("frac", "value", "expected"),
    [
        (Frac(50, 100), 49, True),
        (Frac(50, 100), 50, False),
        (Frac(50, 100), 149, True),
        (Frac(500000, 1_000_000), 499_999, True),
        (Frac(500000, 1_000_000), 500_000, False),
        (Frac(100, 100), 99, True),
        (Frac(0, 1_000_000), 0, False),
        (Frac(5699, 1_000_000), 5698, True),
        (Frac(5699, 1_000_000), 5699, False),
        (Frac(100, 100), 2**64 - 1, True),
    ],
    ids=[
        "below",
        "boundary-is-strict",
        "modulo",
        "million-below",
        "million-boundary",
        "hundred-percent",
        "zero-never",
        "0.5699-below",
        "0.5699-boundary",
        "max-64-bit",
    ],
)
def test_should_mirror(frac: Frac, value: int, expected: bool) -> None:
    assert should_mirror(frac, value) is expected


def test_policies_nest_with_one_random_value() -> None:
    """Envoy reuses the stream id for every policy: a request mirrored at 20% is mirrored at 50%,
    and two policies with the same fraction fire together."""
    p20, p50, p50b = Frac(200000, 1_000_000), Frac(500000, 1_000_000), Frac(500000, 1_000_000)
    sampler = Sampler(mode="random", seed=7)
    fired20 = fired50 = 0
    for _ in range(5000):
        v = sampler.value_for(None)
        a, b, c = should_mirror(p20, v), should_mirror(p50, v), should_mirror(p50b, v)
        assert not a or b  # 20% implies 50%
        assert b == c  # identical fractions agree
        fired20 += a
        fired50 += b
    assert 0 < fired20 < fired50


def test_weighted_pick_correlates_with_hundred_mirror() -> None:
    """With weights totalling 100, mirrorPercent 50 (HUNDRED) copies exactly the requests whose
    value % 100 < 50: all the first destination's share of a 50/50 split."""
    clusters = (W("v1", 50), W("v2", 50))
    mirror = Frac(50, 100)
    for v in range(1000):
        assert (pick_weighted(clusters, v).name == "v1") == should_mirror(mirror, v)


@pytest.mark.parametrize(
    ("weights", "value", "expected"),
    [
        ([("a", 90), ("b", 10)], 0, "a"),
        ([("a", 90), ("b", 10)], 89, "a"),
        ([("a", 90), ("b", 10)], 90, "b"),
        ([("a", 90), ("b", 10)], 199, "b"),
        ([("a", 550), ("b", 500)], 1049, "b"),
        ([("a", 550), ("b", 500)], 1050, "a"),
        ([("only", 0)], 12345, "only"),
        ([("a", 0), ("b", 0)], 7, "a"),
    ],
    ids=[
        "first-interval-start",
        "first-interval-end",
        "second-interval-start",
        "modulo-total",
        "unnormalised-total",
        "unnormalised-wrap",
        "single-ignores-weight",
        "all-zero-first",
    ],
)
def test_pick_weighted(weights: list[tuple[str, int]], value: int, expected: str) -> None:
    clusters = [W(n, w) for n, w in weights]
    assert pick_weighted(clusters, value).name == expected


def test_pick_weighted_empty_raises() -> None:
    with pytest.raises(ValueError):
        pick_weighted([], 1)


def test_seeded_sampler_is_reproducible() -> None:
    s1, s2, s3 = Sampler(mode="random", seed=1), Sampler(mode="random", seed=1), Sampler(seed=2)
    seq1 = [s1.value_for(None) for _ in range(100)]
    seq2 = [s2.value_for(None) for _ in range(100)]
    seq3 = [s3.value_for(None) for _ in range(100)]
    assert seq1 == seq2
    assert seq1 != seq3
    assert all(0 <= v < 2**64 for v in seq1)


def test_request_id_mode_is_stable_across_instances() -> None:
    rid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    a = Sampler(mode="request-id", seed=1).value_for(rid)
    b = Sampler(mode="request-id", seed=99).value_for(rid)
    assert a == b == request_id_value(rid)
    # Pinned: the hash must not change between releases or replicas would disagree.
    assert request_id_value(rid) == int.from_bytes(
        hashlib.blake2b(rid.encode(), digest_size=8).digest(), "big"
    )
    assert request_id_value("other") != a
    assert 0 <= a < 2**64


def test_request_id_mode_falls_back_to_random_without_id() -> None:
    s1, s2 = Sampler(mode="request-id", seed=5), Sampler(mode="random", seed=5)
    assert [s1.value_for(None) for _ in range(10)] == [s2.value_for(None) for _ in range(10)]
    assert s1.value_for("") == s2.value_for(None)  # an empty id is no id


def test_unknown_mode_rejected() -> None:
    with pytest.raises(ValueError, match="sampling mode"):
        Sampler(mode="sometimes")


@pytest.mark.parametrize(
    ("mode", "ids"),
    [("random", None), ("request-id", "uuid")],
    ids=["random", "request-id"],
)
def test_fifty_percent_within_three_sigma(mode: str, ids: str | None) -> None:
    n = 20000
    sampler = Sampler(mode=mode, seed=1234)
    policy = Frac(500000, 1_000_000)
    hits = sum(
        should_mirror(policy, sampler.value_for(f"req-{i}" if ids else None)) for i in range(n)
    )
    sigma = math.sqrt(n * 0.5 * 0.5)
    assert abs(hits - n / 2) < 3 * sigma, hits


@pytest.mark.parametrize(
    ("frac", "expected"),
    [
        (Frac(500000, 1_000_000), "50% (500000/MILLION)"),
        (Frac(100, 100), "100% (100/HUNDRED)"),
        (Frac(5699, 1_000_000), "0.5699% (5699/MILLION)"),
    ],
    ids=["fifty", "hundred", "fraction"],
)
def test_describe_fraction(frac: Frac, expected: str) -> None:
    assert describe_fraction(frac) == expected


@pytest.mark.parametrize(
    ("frac", "value", "expected"),
    [
        pytest.param(Frac(5, 0), 7, False, id="zero-denominator-never"),
        pytest.param(Frac(5, -100), 7, False, id="negative-denominator-never"),
        pytest.param(Frac(1, 1), 12345, True, id="denominator-one-always"),
        pytest.param(Frac(0, 1), 12345, False, id="zero-of-one-never"),
    ],
)
def test_should_mirror_degenerate_fractions(frac: Frac, value: int, expected: bool) -> None:
    assert should_mirror(frac, value) is expected


@pytest.mark.parametrize(
    ("weights", "value", "expected"),
    [
        pytest.param([("a", 0), ("b", 1)], 0, "b", id="zero-weight-first-is-never-picked"),
        pytest.param([("a", 1), ("b", 0)], 5, "a", id="zero-weight-last-is-never-picked"),
        pytest.param([("a", 2), ("b", 1), ("c", 3)], 2, "b", id="middle-interval"),
        pytest.param([("a", 2), ("b", 1), ("c", 3)], 1, "a", id="first-of-three"),
        pytest.param([("a", -5), ("b", 1), ("c", 1)], 0, "b", id="negative-counts-as-zero"),
    ],
)
def test_pick_weighted_intervals(weights: list[tuple[str, int]], value: int, expected: str) -> None:
    assert pick_weighted([W(n, w) for n, w in weights], value).name == expected


def test_pick_weighted_says_why_it_refuses() -> None:
    with pytest.raises(ValueError, match=r"^pick_weighted needs at least one cluster$"):
        pick_weighted([], 1)


def test_request_ids_that_are_not_utf8_hash_as_their_bytes() -> None:
    # mitmproxy hands undecodable header bytes over as surrogates; the hash is of the bytes.
    raw = b"req-\xff"
    text = raw.decode("utf-8", "surrogateescape")
    assert request_id_value(text) == int.from_bytes(
        hashlib.blake2b(raw, digest_size=8).digest(), "big"
    )
    assert request_id_value(text) == 12_950_948_740_734_534_999


def test_sampler_repr_and_mode_message() -> None:
    assert repr(Sampler("request-id", seed=7)) == "Sampler(mode='request-id', seed=7)"
    assert repr(Sampler()) == "Sampler(mode='random', seed=None)"
    with pytest.raises(
        ValueError, match=r"^sampling mode must be one of random, request-id \(got 'x'\)$"
    ):
        Sampler(mode="x")


@pytest.mark.parametrize(
    ("frac", "expected"),
    [
        pytest.param(Frac(3, 7), "42.8571% (3/7)", id="unnamed-denominator"),
        pytest.param(Frac(2, 10_000), "0.02% (2/TEN_THOUSAND)", id="ten-thousand"),
        pytest.param(Frac(5, 0), "0% (5/0)", id="zero-denominator"),
        pytest.param(Frac(1, 1), "100% (1/1)", id="denominator-one"),
    ],
)
def test_describe_unusual_fractions(frac: Frac, expected: str) -> None:
    assert describe_fraction(frac) == expected
