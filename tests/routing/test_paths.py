"""Path normalisation for matching: Istio's default BASE (Envoy normalize_path, no slash merge)."""

from __future__ import annotations

import pytest

from meshmirror.routing.paths import normalize_path


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("/a/./b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/..", "/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/api/v1/../../admin", "/admin"),
        ("/a/%2e%2E/b", "/b"),
        ("/%61%62%63", "/abc"),
        ("/%7e%2D%5f", "/~-_"),
        ("/a%2fb", "/a%2Fb"),  # encoded slash is kept (DECODE_AND_MERGE_SLASHES is not the default)
        ("/a%5cb", "/a%5Cb"),
        ("/a\\b", "/a/b"),
        ("/a//b", "/a//b"),  # MERGE_SLASHES is not the default
        ("/p?x=/../y&q=%2e", "/p?x=/../y&q=%2e"),  # the query is left alone
        ("/%zz/%4", "/%zz/%4"),
        ("*", "*"),
        ("", ""),
        ("/", "/"),
    ],
)
def test_normalize_path(raw: str, normalised: str) -> None:
    assert normalize_path(raw) == normalised


def test_normalisation_is_idempotent_on_examples() -> None:
    for raw in ("/a/%2e%2e/%2e%2e/b", "/x/./y/../../z?q", "/a\\..\\b"):
        once = normalize_path(raw)
        assert normalize_path(once) == once
