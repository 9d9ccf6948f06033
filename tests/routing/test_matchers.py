"""matchers.py: how compiled conditions evaluate, explain a failure (`meshmirror explain`),
describe themselves (`meshmirror routes`) and dump as Envoy's RouteMatch."""

from __future__ import annotations

from typing import Any

import pytest

from meshmirror.config.virtualservice import HTTPMatchRequest
from meshmirror.routing.compile_match import compile_route_match
from meshmirror.routing.matchers import HeaderMatcher, RouteMatcher, StringMatcher
from meshmirror.routing.request_view import RequestView

JWT = "@request.auth.claims.sub"


def compiled(gateway: bool = False, **fields: Any) -> RouteMatcher:
    return compile_route_match(HTTPMatchRequest.model_validate(fields), gateway_semantics=gateway)


def req(path: str = "/", **headers: str) -> RequestView:
    return RequestView.build("GET", "http", "app", path, list(headers.items()), 80)


EVERYTHING = {
    "uri": {"prefix": "/Api"},
    "ignoreUriCase": True,
    "headers": {"x-a": {"exact": "v"}, "x-c": {}},
    "withoutHeaders": {"x-b": {"regex": "b+"}},
    "method": {"exact": "GET"},
    "queryParams": {"q": {"prefix": "1"}, "p": {}},
}


@pytest.mark.parametrize(
    ("fields", "gateway", "text"),
    [
        pytest.param({}, False, "uri prefix /", id="root"),
        pytest.param({"ignoreUriCase": True}, False, "uri prefix / (any case)", id="root-folded"),
        pytest.param({"uri": {"exact": "/e"}}, False, "uri exact /e", id="exact"),
        pytest.param(
            {"uri": {"regex": "/r.*"}, "ignoreUriCase": True},
            False,
            "uri regex /r.*",
            id="regex-never-folded",
        ),
        pytest.param(
            {"uri": {"prefix": "/s/"}},
            True,
            "uri path-separated prefix /s",
            id="path-separated",
        ),
        pytest.param(
            EVERYTHING,
            False,
            "uri prefix /Api (any case), x-a exact 'v', without x-b regex 'b+', x-c present,"
            " :method exact 'GET', ?p present, ?q prefix '1'",
            id="every-condition",
        ),
    ],
)
def test_describe(fields: dict[str, Any], gateway: bool, text: str) -> None:
    assert compiled(gateway, **fields).describe() == text


@pytest.mark.parametrize(
    ("fields", "gateway", "envoy"),
    [
        pytest.param({}, False, {"prefix": "/", "case_sensitive": True}, id="root"),
        pytest.param(
            {"uri": {"exact": "/e"}, "ignoreUriCase": True},
            False,
            {"path": "/e", "case_sensitive": False},
            id="exact-folded",
        ),
        pytest.param(
            {"uri": {"regex": "/r.*"}},
            False,
            {"safe_regex": {"regex": "/r.*"}, "case_sensitive": True},
            id="regex",
        ),
        pytest.param(
            {"uri": {"prefix": "/s"}},
            True,
            {"path_separated_prefix": "/s", "case_sensitive": True},
            id="path-separated",
        ),
        pytest.param(
            EVERYTHING,
            False,
            {
                "prefix": "/Api",
                "case_sensitive": False,
                "headers": [
                    {"name": "x-a", "string_match": {"exact": "v"}},
                    {
                        "name": "x-b",
                        "string_match": {"safe_regex": {"regex": "b+"}},
                        "invert_match": True,
                        "treat_missing_header_as_empty": True,
                    },
                    {"name": "x-c", "present_match": True},
                    {"name": ":method", "string_match": {"exact": "GET"}},
                ],
                "query_parameters": [
                    {"name": "p", "present_match": True},
                    {"name": "q", "string_match": {"prefix": "1"}},
                ],
            },
            id="every-condition",
        ),
        pytest.param(
            {"withoutHeaders": {"x": {}}},
            False,
            {
                "prefix": "/",
                "case_sensitive": True,
                "headers": [{"name": "x", "present_match": True, "invert_match": True}],
            },
            id="without-present",
        ),
    ],
)
def test_to_envoy(fields: dict[str, Any], gateway: bool, envoy: dict[str, Any]) -> None:
    assert compiled(gateway, **fields).to_envoy() == envoy


def test_a_rule_without_match_dumps_no_case_sensitivity() -> None:
    assert compile_route_match(None).to_envoy() == {"prefix": "/"}


@pytest.mark.parametrize(
    ("fields", "gateway", "view", "failure"),
    [
        pytest.param(
            EVERYTHING, False, req("/api?q=1&p", **{"x-a": "v", "x-c": ""}), None, id="ok"
        ),
        pytest.param(
            {"uri": {"prefix": "/a"}}, False, req("/b?q"), "uri prefix '/a': path is '/b?q'", id="p"
        ),
        pytest.param(
            {"uri": {"prefix": "/a"}, "ignoreUriCase": True},
            False,
            req("/b"),
            "uri prefix '/a' (any case): path is '/b'",
            id="prefix-folded",
        ),
        pytest.param(
            {"uri": {"exact": "/a"}},
            False,
            req("/b?q"),
            "uri exact '/a': path is '/b'",
            id="exact-shows-path-only",
        ),
        pytest.param(
            {"uri": {"regex": "/a"}, "ignoreUriCase": True},
            False,
            req("/b?q"),
            "uri regex '/a': path is '/b'",
            id="regex-never-folded",
        ),
        pytest.param(
            {"uri": {"prefix": "/a"}},
            True,
            req("/ab?q"),
            "uri path-separated prefix '/a': path is '/ab'",
            id="path-separated",
        ),
        pytest.param(
            EVERYTHING,
            False,
            req("/api", **{"x-a": "w"}),
            "header x-a exact 'v': header is 'w'",
            id="header-value",
        ),
        pytest.param(
            EVERYTHING,
            False,
            req("/api"),
            "header x-a exact 'v': header is missing",
            id="header-missing",
        ),
        pytest.param(
            EVERYTHING,
            False,
            req("/api", **{"x-a": "v", "x-b": "bb"}),
            "without-header x-b regex 'b+': header is 'bb'",
            id="without-header",
        ),
        pytest.param(
            EVERYTHING,
            False,
            req("/api?p", **{"x-a": "v", "x-c": ""}),
            "query parameter q prefix '1': parameter is missing",
            id="query-missing",
        ),
        pytest.param(
            EVERYTHING,
            False,
            req("/api?q=2&p", **{"x-a": "v", "x-c": ""}),
            "query parameter q prefix '1': parameter is '2'",
            id="query-value",
        ),
        pytest.param(
            {"headers": {JWT: {"exact": "me"}}},
            False,
            req("/", **{JWT: "me"}),
            f"{JWT}: JWT claim matches are not evaluated by meshmirror",
            id="jwt",
        ),
    ],
)
def test_first_failure(
    fields: dict[str, Any], gateway: bool, view: RequestView, failure: str | None
) -> None:
    matcher = compiled(gateway, **fields)
    assert matcher.first_failure(view) == failure
    assert matcher.matches(view) is (failure is None)


def _refuse(_: str) -> bool:
    return False


@pytest.mark.parametrize(
    ("invert", "headers", "expected"),
    [
        pytest.param(False, {"x": "v"}, True, id="present"),
        pytest.param(False, {}, False, id="missing"),
        pytest.param(True, {"x": "v"}, False, id="without-present"),
        pytest.param(True, {}, True, id="without-missing"),
    ],
)
def test_a_present_match_ignores_the_value_test(
    invert: bool, headers: dict[str, str], expected: bool
) -> None:
    matcher = HeaderMatcher("x", StringMatcher("present", "", _refuse), invert=invert)
    assert matcher.matches(req("/", **headers)) is expected


def test_the_empty_prefix_matches_every_path() -> None:
    assert RouteMatcher("prefix", "", True).matches(req("/x?y"))
    assert compiled(uri={"prefix": ""}).matches(req("/x?y"))
    assert compiled(uri={"prefix": ""}, ignoreUriCase=True).matches(req("/X"))
