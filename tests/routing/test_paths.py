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


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        pytest.param("/%2f", "/%2F", id="kept-escape-right-after-the-slash"),
        pytest.param("/x/%5c%2f/y", "/x/%5C%2F/y", id="kept-escapes-in-a-row"),
        pytest.param("/%g1", "/%g1", id="first-digit-not-hex"),
        pytest.param("/%1g", "/%1g", id="second-digit-not-hex"),
        pytest.param("/a%4", "/a%4", id="escape-cut-short"),
        pytest.param("/a%41", "/aA", id="escape-at-the-end"),
        pytest.param("/p?a=/./b?c", "/p?a=/./b?c", id="query-starts-at-the-first-mark"),
        pytest.param("a/../b", "a/../b", id="relative-target-unchanged"),
        pytest.param("\\a\\..\\b", "/b", id="backslashes-make-it-absolute"),
    ],
)
def test_normalize_path_edges(raw: str, normalised: str) -> None:
    assert normalize_path(raw) == normalised
