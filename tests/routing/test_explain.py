"""routing/explain.py `policy_lines`: what `meshmirror explain` says a matched route does with
the request besides routing it (the CORS filter's answer, a redirect's Location, the retries)."""

from __future__ import annotations

import pytest

from meshmirror.routing.explain import explain_request, policy_lines
from meshmirror.routing.request_view import RequestView
from tests.routing.test_compile import compile_ok, vs

CORS = "    corsPolicy: {allowOrigins: [{exact: 'https://a.example'}], allowMethods: [GET]}\n"
HTTP = (
    "  - match: [{uri: {prefix: /old/}}]\n    redirect: {prefixRewrite: /new/, redirectCode: 302}\n"
    + CORS
    + "  - route: [{destination: {host: a}}]\n"
    + CORS
)


def explain(method: str, path: str, *headers: tuple[str, str]) -> tuple[list[str], bool]:
    table, _ = compile_ok(vs(HTTP))
    view = RequestView.build(
        method=method,
        scheme="http",
        authority="app.example.com",
        path=path,
        header_items=[("host", "app.example.com"), *headers],
        port=80,
    )
    route = explain_request(table, view).route
    assert route is not None
    return policy_lines(route, view, path)


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected", "preflight"),
    [
        pytest.param(
            "OPTIONS",
            "/x",
            [("Origin", "https://a.example"), ("Access-Control-Request-Method", "GET")],
            [
                "cors: a preflight, answered 200 by the proxy (never routed, never mirrored); "
                "headers access-control-allow-origin: https://a.example, "
                "access-control-allow-methods: GET"
            ],
            True,
            id="preflight-answered",
        ),
        pytest.param(
            "GET",
            "/x",
            [("Origin", "https://a.example")],
            [
                "cors: the response gets access-control-allow-origin: https://a.example",
                "retries: not applied by meshmirror (mirror_default_retries=off); Istio would "
                "apply its mesh default: 2 retries on connect-failure,refused-stream,unavailable,"
                "cancelled,retriable-status-codes",
            ],
            False,
            id="actual-request",
        ),
        pytest.param(
            "GET",
            "/old/a?q=1",
            [("Origin", "https://evil.example")],
            [
                "cors: origin 'https://evil.example' is not allowed; the response is unchanged",
                "redirect: 302, Location: http://app.example.com/new/a?q=1",
            ],
            False,
            id="redirect-with-prefix-rewrite",
        ),
    ],
)
def test_policy_lines(
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    expected: list[str],
    preflight: bool,
) -> None:
    assert explain(method, path, *headers) == (expected, preflight)
