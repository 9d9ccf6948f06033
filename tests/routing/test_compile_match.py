"""compile_match.py: Istio's TranslateRouteMatch, one match block -> RouteMatcher (the conditions
it builds, their order, and how their prebuilt tests decide)."""

from __future__ import annotations

from typing import Any

import pytest

from meshmirror.config.base import StringMatch
from meshmirror.config.virtualservice import HTTPMatchRequest
from meshmirror.routing.compile_match import CATCH_ALL, compile_route_match, compile_string_match
from meshmirror.routing.matchers import HeaderMatcher, QueryMatcher, RouteMatcher, StringMatcher
from meshmirror.routing.request_view import RequestView

JWT = "@request.auth.claims.sub"


def nothing(_: str) -> bool:
    raise AssertionError("a compiled matcher's test is not compared")


def s(kind: str, value: str = "") -> StringMatcher:
    return StringMatcher(kind, value, nothing)  # type: ignore[arg-type]


def spec(**fields: Any) -> HTTPMatchRequest:
    return HTTPMatchRequest.model_validate(fields)


def req(path: str = "/", headers: dict[str, str] | None = None, **kw: str) -> RequestView:
    return RequestView.build(
        kw.get("method", "GET"),
        kw.get("scheme", "http"),
        kw.get("authority", "app"),
        path,
        list((headers or {}).items()),
        80,
    )


@pytest.mark.parametrize(
    ("fields", "gateway", "expected"),
    [
        pytest.param(None, False, RouteMatcher("prefix", "/", None), id="no-match-block"),
        pytest.param({}, False, RouteMatcher("prefix", "/", True), id="empty-block"),
        pytest.param(
            {"ignoreUriCase": True}, False, RouteMatcher("prefix", "/", False), id="fold-only"
        ),
        pytest.param({"uri": {}}, False, RouteMatcher("prefix", "/", True), id="empty-uri"),
        pytest.param({"uri": {"exact": "/A"}}, False, RouteMatcher("path", "/A", True), id="exact"),
        pytest.param(
            {"uri": {"prefix": "/A"}, "ignoreUriCase": True},
            False,
            RouteMatcher("prefix", "/A", False),
            id="prefix-any-case",
        ),
        pytest.param(
            {"uri": {"regex": "/a.*"}}, False, RouteMatcher("safe_regex", "/a.*", True), id="regex"
        ),
        pytest.param(
            {"uri": {"prefix": "/api/"}},
            True,
            RouteMatcher("path_separated_prefix", "/api", True),
            id="gateway-prefix-is-path-separated",
        ),
        pytest.param(
            {"uri": {"prefix": "/"}}, True, RouteMatcher("prefix", "/", True), id="gateway-root"
        ),
        pytest.param(
            {
                "headers": {
                    "uri": {"exact": "ignored"},
                    "X-B": {"exact": "v"},
                    "x-a": {"prefix": "p"},
                    "x-c": {},
                    "x-d": {"regex": "*"},
                    "x-e": {"regex": "a+"},
                },
                "withoutHeaders": {
                    "scheme": {"exact": "ignored"},
                    "x-bb": {"exact": "w"},
                    "x-aa": {},
                },
            },
            False,
            RouteMatcher(
                "prefix",
                "/",
                True,
                (
                    HeaderMatcher("x-a", s("prefix", "p")),
                    HeaderMatcher("x-aa", s("present"), invert=True),
                    HeaderMatcher("x-b", s("exact", "v")),
                    HeaderMatcher(
                        "x-bb", s("exact", "w"), invert=True, treat_missing_as_empty=True
                    ),
                    HeaderMatcher("x-c", s("present")),
                    HeaderMatcher("x-d", s("present")),
                    HeaderMatcher("x-e", s("regex", "a+")),
                ),
            ),
            id="headers-sorted-by-name",
        ),
        pytest.param(
            {
                "scheme": {"exact": "https"},
                "authority": {"prefix": "app"},
                "method": {"exact": "GET"},
                "headers": {"z": {"exact": "1"}},
                "queryParams": {"b": {"exact": "1"}, "a": {}},
            },
            False,
            RouteMatcher(
                "prefix",
                "/",
                True,
                (
                    HeaderMatcher("z", s("exact", "1")),
                    HeaderMatcher(":method", s("exact", "GET")),
                    HeaderMatcher(":authority", s("prefix", "app")),
                    HeaderMatcher(":scheme", s("exact", "https")),
                ),
                (QueryMatcher("a", s("present")), QueryMatcher("b", s("exact", "1"))),
            ),
            id="pseudo-headers-last-query-sorted",
        ),
        pytest.param(
            {"headers": {JWT: {"exact": "me"}}, "withoutHeaders": {JWT + ".x": {"exact": "me"}}},
            False,
            RouteMatcher(
                "prefix",
                "/",
                True,
                (
                    HeaderMatcher(
                        JWT,
                        s("present"),
                        unsupported=f"{JWT}: JWT claim matches are not evaluated by meshmirror",
                    ),
                    HeaderMatcher(
                        JWT + ".x",
                        s("present"),
                        invert=True,
                        unsupported=f"{JWT}.x: JWT claim matches are not evaluated by meshmirror",
                    ),
                ),
            ),
            id="jwt-claims-unsupported",
        ),
    ],
)
def test_compiled_conditions(
    fields: dict[str, Any] | None, gateway: bool, expected: RouteMatcher
) -> None:
    m = None if fields is None else spec(**fields)
    assert compile_route_match(m, gateway_semantics=gateway) == expected


def test_without_gateway_semantics_by_default() -> None:
    assert compile_route_match(spec(uri={"prefix": "/api"})).path_kind == "prefix"
    assert compile_route_match(None) is CATCH_ALL


@pytest.mark.parametrize(
    ("fields", "gateway", "path", "expected"),
    [
        pytest.param({}, False, "/anything?q", True, id="default-prefix-root"),
        pytest.param({"uri": {}}, False, "/anything", True, id="empty-uri-is-root"),
        pytest.param({"ignoreUriCase": True}, False, "/X", True, id="fold-root"),
        pytest.param({"uri": {"prefix": "/a"}}, False, "/A", False, id="prefix-case-sensitive"),
        pytest.param(
            {"uri": {"prefix": "/Api"}, "ignoreUriCase": True}, False, "/aPI/x", True, id="fold-p"
        ),
        pytest.param(
            {"uri": {"prefix": "/api"}, "ignoreUriCase": True},
            False,
            "/API/users",
            True,
            id="fold-capitals-in-the-request-path",
        ),
        pytest.param({"uri": {"prefix": "/a?x"}}, False, "/a?x=1", True, id="prefix-sees-query"),
        pytest.param({"uri": {"exact": "/a"}}, False, "/a?x=1", True, id="exact-ignores-query"),
        pytest.param({"uri": {"exact": "/a"}}, False, "/A", False, id="exact-case-sensitive"),
        pytest.param(
            {"uri": {"exact": "/a"}, "ignoreUriCase": True}, False, "/A?q", True, id="exact-fold"
        ),
        pytest.param({"uri": {"exact": "/a"}}, False, "/ab", False, id="exact-is-whole"),
        pytest.param({"uri": {"regex": "/a+"}}, False, "/aaa?b", True, id="regex-path-only"),
        pytest.param({"uri": {"regex": "/a+"}}, False, "/aab", False, id="regex-full-match"),
        pytest.param({"uri": {"prefix": "/abc"}}, True, "/abc", True, id="separated-equal"),
        pytest.param({"uri": {"prefix": "/abc"}}, True, "/abc/x", True, id="separated-below"),
        pytest.param({"uri": {"prefix": "/abc/"}}, True, "/abc?q", True, id="separated-trailing"),
        pytest.param({"uri": {"prefix": "/abc"}}, True, "/abcd", False, id="separated-not-a-part"),
        pytest.param({"uri": {"prefix": "/abc"}}, True, "/ab", False, id="separated-shorter"),
        pytest.param({"uri": {"prefix": "/abc"}}, True, "/x/abc", False, id="separated-start"),
        pytest.param({"uri": {"prefix": "/abc"}}, True, "/ABC", False, id="separated-case"),
        pytest.param(
            {"uri": {"prefix": "/Abc"}, "ignoreUriCase": True},
            True,
            "/aBC/x",
            True,
            id="separated-fold",
        ),
        pytest.param(
            {"uri": {"prefix": "/abc"}, "ignoreUriCase": True},
            True,
            "/ABCD",
            False,
            id="separated-fold-not-a-part",
        ),
        pytest.param(
            {"uri": {"prefix": "/abc"}, "ignoreUriCase": True},
            True,
            "/ABC",
            True,
            id="separated-fold-equal",
        ),
        pytest.param(
            {"uri": {"prefix": "/abc"}, "ignoreUriCase": True},
            True,
            "/x/ABC",
            False,
            id="separated-fold-start",
        ),
    ],
)
def test_compiled_path_tests(
    fields: dict[str, Any], gateway: bool, path: str, expected: bool
) -> None:
    assert compile_route_match(spec(**fields), gateway_semantics=gateway).matches(req(path)) is (
        expected
    )


@pytest.mark.parametrize(
    ("fields", "headers", "expected"),
    [
        pytest.param({"headers": {"x": {"prefix": "P"}}}, {"x": "Px"}, True, id="prefix"),
        pytest.param({"headers": {"x": {"prefix": "P"}}}, {"x": "px"}, False, id="prefix-case"),
        pytest.param({"headers": {"x": {"exact": "V"}}}, {"x": "v"}, False, id="exact-case"),
        pytest.param({"headers": {"uri": {"exact": "/"}}}, {}, True, id="ignored-key-no-condition"),
        pytest.param({"headers": {JWT: {"exact": "me"}}}, {JWT: "me"}, False, id="jwt-never"),
        pytest.param({"withoutHeaders": {JWT: {}}}, {}, False, id="jwt-without-never"),
        pytest.param({"withoutHeaders": {"x": {"exact": "v"}}}, {}, True, id="without-missing"),
        pytest.param({"withoutHeaders": {"x": {}}}, {}, True, id="without-present-missing"),
        pytest.param({"withoutHeaders": {"x": {}}}, {"x": ""}, False, id="without-present-there"),
        pytest.param(
            {"withoutHeaders": {"x": {"exact": ""}}}, {}, False, id="without-empty-matches-missing"
        ),
    ],
)
def test_compiled_header_conditions(
    fields: dict[str, Any], headers: dict[str, str], expected: bool
) -> None:
    assert compile_route_match(spec(**fields)).matches(req("/", headers)) is expected


@pytest.mark.parametrize(
    ("match", "lower", "expected", "accepts", "refuses"),
    [
        pytest.param(None, False, s("present"), "anything", None, id="none-is-present"),
        pytest.param(StringMatch(), False, s("present"), "", None, id="empty-is-present"),
        pytest.param(StringMatch(regex="*"), False, s("present"), "x", None, id="star-is-present"),
        pytest.param(StringMatch(exact="AbC"), False, s("exact", "AbC"), "AbC", "abc", id="exact"),
        pytest.param(
            StringMatch(exact="AbC"), True, s("exact", "abc"), "abc", "AbC", id="exact-folded"
        ),
        pytest.param(StringMatch(prefix="Ab"), False, s("prefix", "Ab"), "Abx", "abx", id="pre"),
        pytest.param(
            StringMatch(prefix="Ab"), True, s("prefix", "ab"), "abx", "Abx", id="prefix-folded"
        ),
        pytest.param(
            StringMatch(regex="A.c"), True, s("regex", "A.c"), "Abc", "abc", id="regex-not-folded"
        ),
    ],
)
def test_compile_string_match(
    match: StringMatch | None,
    lower: bool,
    expected: StringMatcher,
    accepts: str,
    refuses: str | None,
) -> None:
    compiled = compile_string_match(match, lower=lower)
    assert compiled == expected
    assert compiled.test(accepts)
    if refuses is not None:
        assert not compiled.test(refuses)
