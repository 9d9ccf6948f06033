"""Compiling match blocks: Istio's `TranslateRouteMatch`, HTTPMatchRequest -> RouteMatcher.

Runs once per route at configure time (the route compiler calls `compile_route_match`); it
prebuilds the test closures that the matchers call per request. Regexes are RE2, as in Envoy and
Istio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshmirror.config.base import StringMatch as StringMatchSpec
from meshmirror.config.virtualservice import HTTPMatchRequest
from meshmirror.regex import compile_regex
from meshmirror.routing.matchers import (
    HeaderMatcher,
    PathKind,
    QueryMatcher,
    RouteMatcher,
    StringMatcher,
    any_path,
)
from meshmirror.routing.request_view import RequestView

# Header keys Istio ignores inside `headers` (they have their own match fields).
_IGNORED_HEADER_KEYS = frozenset({"uri", "scheme", "method", "authority"})
_JWT_CLAIM_PREFIX = "@request.auth.claims"


def _always(_: str) -> bool:
    return True


def _never(_: str) -> bool:
    return False


def compile_string_match(sm: StringMatchSpec | None, *, lower: bool = False) -> StringMatcher:
    """StringMatch -> StringMatcher. `{}` and `regex: "*"` are present-matches, as Istio's
    `canBeConvertedToPresentMatch` says. `lower` folds exact/prefix values for ignoreUriCase.
    Raises re2.error for a bad regex (validation reports those first)."""
    if sm is None:
        return StringMatcher("present", "", _always)
    if sm.exact is not None:
        v = sm.exact.lower() if lower else sm.exact
        return StringMatcher("exact", v, v.__eq__)
    if sm.prefix is not None:
        p = sm.prefix.lower() if lower else sm.prefix
        return StringMatcher("prefix", p, _prefix_test(p))
    if sm.regex is not None and sm.regex != "*":
        rx = compile_regex(sm.regex)
        return StringMatcher("regex", sm.regex, _regex_test(rx))
    return StringMatcher("present", "", _always)


def _prefix_test(prefix: str) -> Callable[[str], bool]:
    def test(value: str) -> bool:
        return value.startswith(prefix)

    return test


def _regex_test(rx: Any) -> Callable[[str], bool]:
    fullmatch = rx.fullmatch

    def test(value: str) -> bool:
        return fullmatch(value) is not None

    return test


def _path_prefix(prefix: str, case_sensitive: bool) -> Callable[[RequestView], bool]:
    if prefix == "":
        return any_path
    if case_sensitive:

        def test(req: RequestView) -> bool:
            return req.path.startswith(prefix)

        return test
    low = prefix.lower()

    def test_fold(req: RequestView) -> bool:
        return req.path_lower.startswith(low)

    return test_fold


def _path_separated_prefix(prefix: str, case_sensitive: bool) -> Callable[[RequestView], bool]:
    """Envoy `path_separated_prefix`: the path without query equals `prefix` or continues with
    "/" after it."""
    n = len(prefix)
    if case_sensitive:

        def test(req: RequestView) -> bool:
            p = req.path_only
            return p.startswith(prefix) and (len(p) == n or p[n] == "/")

        return test
    low = prefix.lower()

    def test_fold(req: RequestView) -> bool:
        p = req.path_only_lower
        return p.startswith(low) and (len(p) == n or p[n] == "/")

    return test_fold


def _path_exact(path: str, case_sensitive: bool) -> Callable[[RequestView], bool]:
    if case_sensitive:

        def test(req: RequestView) -> bool:
            return req.path_only == path

        return test
    low = path.lower()

    def test_fold(req: RequestView) -> bool:
        return req.path_only_lower == low

    return test_fold


def _path_regex(rx: Any) -> Callable[[RequestView], bool]:
    fullmatch = rx.fullmatch

    def test(req: RequestView) -> bool:
        return fullmatch(req.path_only) is not None

    return test


CATCH_ALL = RouteMatcher("prefix", "/", None, (), (), _path_prefix("/", True))


def compile_route_match(
    m: HTTPMatchRequest | None, *, gateway_semantics: bool = False
) -> RouteMatcher:
    """Istio `TranslateRouteMatch` for one match block (None = a rule without `match`).

    `gateway_semantics` (VirtualServices converted from Gateway API HTTPRoutes) turns a prefix
    other than "/" into Envoy's path_separated_prefix, as Istio does for such routes.
    Raises re2.error for a regex RE2 rejects; the caller reports it against the resource.
    """
    if m is None:
        return CATCH_ALL
    case_sensitive = not bool(m.ignore_uri_case)
    path_kind: PathKind = "prefix"
    path_value = "/"
    path_test: Callable[[RequestView], bool] = _path_prefix("/", True)
    uri = m.uri
    if uri is not None:
        if uri.exact is not None:
            path_kind, path_value = "path", uri.exact
            path_test = _path_exact(uri.exact, case_sensitive)
        elif uri.prefix is not None:
            path_kind, path_value = "prefix", uri.prefix
            path_test = _path_prefix(uri.prefix, case_sensitive)
            if gateway_semantics and uri.prefix != "/":
                path_kind, path_value = "path_separated_prefix", uri.prefix.removesuffix("/")
                path_test = _path_separated_prefix(path_value, case_sensitive)
        elif uri.regex is not None:
            path_kind, path_value = "safe_regex", uri.regex
            path_test = _path_regex(compile_regex(uri.regex))
    else:
        path_test = _path_prefix("/", case_sensitive)

    headers: list[HeaderMatcher] = []
    for name, sm in (m.headers or {}).items():
        key = name.lower()
        if key in _IGNORED_HEADER_KEYS:
            continue
        headers.append(_header(key, sm, invert=False))
    for name, sm in (m.without_headers or {}).items():
        key = name.lower()
        if key in _IGNORED_HEADER_KEYS:
            continue
        headers.append(_header(key, sm, invert=True))
    # Istio sorts header matchers by name, then appends :method, :authority, :scheme.
    headers.sort(key=lambda h: h.name)
    for pseudo, sm in ((":method", m.method), (":authority", m.authority), (":scheme", m.scheme)):
        if sm is not None:
            headers.append(HeaderMatcher(pseudo, compile_string_match(sm)))
    query = [
        QueryMatcher(name, compile_string_match(sm))
        for name, sm in sorted((m.query_params or {}).items())
    ]
    return RouteMatcher(
        path_kind, path_value, case_sensitive, tuple(headers), tuple(query), path_test
    )


def _header(name: str, sm: StringMatchSpec | None, *, invert: bool) -> HeaderMatcher:
    if name.startswith(_JWT_CLAIM_PREFIX):
        return HeaderMatcher(
            name,
            StringMatcher("present", "", _never),
            invert=invert,
            unsupported=f"{name}: JWT claim matches are not evaluated by meshmirror",
        )
    matcher = compile_string_match(sm)
    # Istio: an inverted matcher treats a missing header as "" unless it is a present-match.
    missing_empty = invert and matcher.kind != "present"
    return HeaderMatcher(name, matcher, invert=invert, treat_missing_as_empty=missing_empty)
