"""A comparison job: no more of the primary's body than the comparison needs, both bodies
decoded within the limit, and never an exception."""

from __future__ import annotations

import gzip

from meshmirror.outcomes.compare_inputs import CompareSettings
from meshmirror.outcomes.compare_job import CompareJob, RawSide, decoded_side, raw_side, run_job

JSON = (("content-type", "application/json"),)
GZIP = (("Content-Encoding", "gzip"),)


def test_the_primary_keeps_only_what_the_comparison_needs() -> None:
    assert raw_side(200, (), b"x" * 10, 10) == RawSide(200, (), b"x" * 10)
    assert raw_side(200, (), b"x" * 11, 10) == RawSide(200, (), b"x" * 10, True, 11)
    big = raw_side(200, GZIP, b"z" * 100_000, 1024)
    assert big.truncated and big.size == 100_000 and len(big.body or b"") == 1024 + 128 + 4096


def test_both_sides_are_decoded_within_the_limit() -> None:
    body = gzip.compress(b'{"v": 1}')
    assert decoded_side(RawSide(200, GZIP, body), 100).body == b'{"v": 1}'
    bomb = gzip.compress(b"\0" * 1000)
    over = decoded_side(RawSide(200, GZIP, bomb), 100)
    assert over.over_limit and over.body == b"\0" * 100
    broken = decoded_side(RawSide(200, GZIP, b"nope"), 100)
    assert broken.body is None and "cannot decode gzip" in broken.unavailable


def test_a_job_compares_decoded_bodies_and_never_raises() -> None:
    settings = CompareSettings.build()
    plain = RawSide(200, JSON, b'{"v": 1}')
    packed = RawSide(200, JSON + GZIP, gzip.compress(b'{"v": 2}'))
    assert run_job(CompareJob(plain, packed, settings)).fields == (
        "header:content-encoding",
        "body:/v",
    )
    odd = CompareJob(plain, RawSide(200, JSON, object()), settings)  # type: ignore[arg-type]
    result = run_job(odd)
    assert result.not_compared == "error" and "comparison failed" in result.note
