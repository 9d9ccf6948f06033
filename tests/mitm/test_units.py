from __future__ import annotations

import pytest

from meshmirror.mitm.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("0", 0.0),
        ("2h", 7200.0),
        ("100us", 1e-4),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", "5 s", "5sec", "abc", "1.2.3s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4m", 4 * 1024 * 1024),
        ("512k", 512 * 1024),
        ("1024", 1024),
        ("1g", 1024**3),
        ("3b", 3),
        (" 8k ", 8 * 1024),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


# As mitmproxy's own body_size_limit: one unit letter after a whole number.
@pytest.mark.parametrize("text", ["", "m", "-1k", "-5", "4x", "2MB", "1.5m"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)
