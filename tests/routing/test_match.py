"""match.py: Envoy route matching as Istio configures it (first match wins)."""

from __future__ import annotations

import pytest

from meshmirror.config.loader import load_text
from meshmirror.hosts import strip_port
from meshmirror.routing.compile import compile_route_table
from meshmirror.routing.explain import explain_request
from meshmirror.routing.match import match_request
from meshmirror.routing.request_view import RequestView
from meshmirror.routing.table import RouteTable


def table_of(http: str, hosts: str = "[app.example.com]", gateway: bool = False) -> RouteTable:
    docs = []
    extra = ""
    if gateway:
        docs.append(
            "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: gw}\n"
            "spec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n"
            '    hosts: ["*"]\n'
        )
        extra = "  gateways: [gw]\n"
    docs.append(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: app}\n"
        f"spec:\n  hosts: {hosts}\n{extra}  http:\n{http}"
    )
    loaded = load_text("---\n".join(docs), "test.yaml")
    assert not loaded.errors, [d.format() for d in loaded.errors]
    table, diags = compile_route_table(loaded.resources)
    assert table is not None, [d.format() for d in diags]
    return table


def req(
    path: str = "/",
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
    authority: str = "app.example.com",
    scheme: str = "http",
) -> RequestView:
    return RequestView.build(method, scheme, authority, path, headers or [], 80)


def matched(table: RouteTable, request: RequestView) -> str | None:
    found = match_request(table, request)
    return None if found is None else found.route.label


def one_rule(match: str) -> RouteTable:
    """A table with one rule `match: [<match>]` and nothing else."""
    return table_of(f"  - match: [{match}]\n    route: [{{destination: {{host: b}}}}]\n")


# --- RequestView ----------------------------------------------------------------------------------


def test_request_view_build_lowercases_and_joins() -> None:
    v = req("/p?q=1", [("X-A", "1"), ("x-a", "2"), ("Host", "h")])
    assert v.headers == {"x-a": "1,2", "host": "h"}
    assert v.path_only == "/p"
    assert v.header(":authority") == "app.example.com"
    assert v.header(":method") == "GET"


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("httpbin:8000", "httpbin"),
        ("httpbin", "httpbin"),
        ("[::1]:80", "[::1]"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("::1", "::1"),
    ],
    ids=["name-port", "name", "ipv6-port", "ipv4-port", "bare-ipv6"],
)
def test_strip_port(authority: str, expected: str) -> None:
    assert strip_port(authority) == expected


# --- first match, uri -----------------------------------------------------------------------------


def test_first_matching_rule_wins() -> None:
    table = table_of(
        "  - match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: a}}]\n"
        "  - match: [{uri: {prefix: /api/v2}}]\n    route: [{destination: {host: b}}]\n"
        "  - route: [{destination: {host: c}}]\n"
    )
    assert matched(table, req("/api/v2/x")) == "default/app[0]"
    assert matched(table, req("/other")) == "default/app[2]"


def test_match_blocks_are_or() -> None:
    table = one_rule("{uri: {exact: /a}}, {uri: {exact: /b}}")
    assert matched(table, req("/b")) == "default/app[0.1]"
    assert matched(table, req("/c")) is None


@pytest.mark.parametrize(
    ("match", "path", "expected"),
    [
        ("{uri: {exact: /a}}", "/a", True),
        ("{uri: {exact: /a}}", "/a?x=1", True),
        ("{uri: {exact: /a}}", "/a/b", False),
        ("{uri: {exact: /a}}", "/A", False),
        ("{uri: {prefix: /a}}", "/ab", True),
        ("{uri: {prefix: /a}}", "/a/b?c", True),
        ("{uri: {prefix: /a}}", "/b/a", False),
        ("{uri: {regex: '/a/[0-9]+'}}", "/a/12", True),
        ("{uri: {regex: '/a/[0-9]+'}}", "/a/12?x=y", True),
        ("{uri: {regex: '/a/[0-9]+'}}", "/a/12x", False),
        ("{uri: {regex: '/a/[0-9]+'}}", "/x/a/12", False),
        ("{uri: {prefix: /API}, ignoreUriCase: true}", "/api/x", True),
        ("{uri: {exact: /Api}, ignoreUriCase: true}", "/aPI?q", True),
        ("{uri: {regex: '/api'}, ignoreUriCase: true}", "/API", False),
        ("{uri: {regex: '(?i)/api'}}", "/API", True),
    ],
    ids=[
        "exact",
        "exact-ignores-query",
        "exact-not-prefix",
        "exact-case-sensitive",
        "prefix-not-segment",
        "prefix-with-query",
        "prefix-anchored",
        "regex-full",
        "regex-ignores-query",
        "regex-not-partial-end",
        "regex-not-partial-start",
        "ignoreUriCase-prefix",
        "ignoreUriCase-exact",
        "ignoreUriCase-not-for-regex",
        "regex-inline-case-flag",
    ],
)
def test_uri(match: str, path: str, expected: bool) -> None:
    assert (matched(one_rule(match), req(path)) is not None) is expected


# --- headers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "headers", "expected"),
    [
        ("{headers: {x-user: {exact: alice}}}", [("X-User", "alice")], True),
        ("{headers: {x-user: {exact: alice}}}", [("x-user", "bob")], False),
        ("{headers: {x-user: {exact: alice}}}", [], False),
        ("{headers: {x-user: {exact: ''}}}", [], False),
        ("{headers: {x-user: {prefix: al}}}", [("x-user", "alice")], True),
        ("{headers: {x-user: {regex: 'a.*e'}}}", [("x-user", "alice")], True),
        ("{headers: {x-user: {regex: 'a.*e'}}}", [("x-user", "alicex")], False),
        ("{headers: {x-user: {}}}", [("x-user", "")], True),
        ("{headers: {x-user: {}}}", [], False),
        ("{headers: {x-user: {regex: '*'}}}", [("x-user", "anything")], True),
        ("{headers: {x-user: {regex: '*'}}}", [], False),
        ("{headers: {x-v: {exact: 'a,b'}}}", [("x-v", "a"), ("x-v", "b")], True),
        ("{headers: {x-a: {exact: '1'}, x-b: {exact: '2'}}}", [("x-a", "1")], False),
        ("{headers: {x-a: {exact: '1'}, x-b: {exact: '2'}}}", [("x-a", "1"), ("x-b", "2")], True),
        ("{withoutHeaders: {x-user: {exact: alice}}}", [], True),
        ("{withoutHeaders: {x-user: {exact: alice}}}", [("x-user", "bob")], True),
        ("{withoutHeaders: {x-user: {exact: alice}}}", [("x-user", "alice")], False),
        ("{withoutHeaders: {x-user: {exact: ''}}}", [], False),
        ("{withoutHeaders: {x-user: {}}}", [], True),
        ("{withoutHeaders: {x-user: {}}}", [("x-user", "x")], False),
        ("{withoutHeaders: {x-user: {regex: '*'}}}", [("x-user", "x")], False),
        ("{headers: {uri: {exact: /nope}}}", [], True),
    ],
    ids=[
        "exact",
        "exact-other-value",
        "exact-missing",
        "exact-empty-missing",
        "prefix",
        "regex-full",
        "regex-not-partial",
        "present-empty-value",
        "present-missing",
        "regex-star-is-present",
        "regex-star-missing",
        "repeated-joined-with-comma",
        "all-headers-and-one-missing",
        "all-headers-and",
        "without-missing-matches",
        "without-other-value-matches",
        "without-same-value-fails",
        "without-empty-missing-treated-as-empty",
        "without-present-missing-matches",
        "without-present-there-fails",
        "without-regex-star-is-present",
        "uri-key-in-headers-ignored",
    ],
)
def test_headers(match: str, headers: list[tuple[str, str]], expected: bool) -> None:
    assert (matched(one_rule(match), req("/", headers)) is not None) is expected


# --- query parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "path", "expected"),
    [
        ("{queryParams: {q: {exact: 'a b'}}}", "/?q=a%20b", True),
        ("{queryParams: {q: {exact: 'a+b'}}}", "/?q=a+b", True),
        ("{queryParams: {q: {exact: x}}}", "/?q=y", False),
        ("{queryParams: {q: {exact: x}}}", "/", False),
        ("{queryParams: {q: {exact: ''}}}", "/?q", True),
        ("{queryParams: {q: {exact: ''}}}", "/?q=", True),
        ("{queryParams: {q: {prefix: ab}}}", "/?q=abc", True),
        ("{queryParams: {q: {regex: '\\d+$'}}}", "/?q=123", True),
        ("{queryParams: {q: {regex: '\\d+$'}}}", "/?q=a123", False),
        ("{queryParams: {q: {regex: '\\d+$'}}}", "/?q=123a", False),
        ("{queryParams: {q: {}}}", "/?a=1&q=", True),
        ("{queryParams: {q: {}}}", "/?a=1", False),
        ("{queryParams: {q: {exact: first}}}", "/?q=first&q=second", True),
        ("{queryParams: {q: {exact: second}}}", "/?q=first&q=second", False),
    ],
    ids=[
        "exact-decoded",
        "plus-is-not-space",
        "exact-other",
        "exact-missing",
        "bare-key-exact-empty",
        "empty-value",
        "prefix",
        "regex-doc-example-123",
        "regex-doc-example-a123",
        "regex-doc-example-123a",
        "present",
        "present-missing",
        "first-value-wins",
        "second-value-ignored",
    ],
)
def test_query_params(match: str, path: str, expected: bool) -> None:
    assert (matched(one_rule(match), req(path)) is not None) is expected


# --- method, scheme, authority --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "view", "expected"),
    [
        ("{method: {exact: POST}}", req(method="POST"), True),
        ("{method: {exact: POST}}", req(method="GET"), False),
        ("{method: {regex: 'GET|HEAD'}}", req(method="HEAD"), True),
        ("{scheme: {exact: https}}", req(scheme="http"), False),
        ("{scheme: {exact: https}}", req(scheme="https"), True),
        ("{authority: {exact: app.example.com}}", req(authority="app.example.com"), True),
        ("{authority: {exact: app.example.com}}", req(authority="app.example.com:8080"), False),
        ("{authority: {prefix: app.example.com}}", req(authority="app.example.com:8080"), True),
    ],
    ids=[
        "method",
        "method-other",
        "method-regex",
        "scheme-other",
        "scheme",
        "authority-exact",
        "authority-is-full-host-value",
        "authority-prefix-with-port",
    ],
)
def test_pseudo_headers(match: str, view: RequestView, expected: bool) -> None:
    assert (matched(one_rule(match), view) is not None) is expected


# --- virtual host selection -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "authority",
    ["app.example.com", "app.example.com:8080", "APP.Example.COM", "App.example.com:80"],
    ids=["plain", "port-ignored", "case-insensitive", "case-and-port"],
)
def test_host_port_and_case_ignored(authority: str) -> None:
    table = table_of("  - route: [{destination: {host: b}}]\n")
    assert matched(table, req(authority=authority)) == "default/app[0]"


def test_unknown_host_matches_nothing() -> None:
    table = table_of("  - route: [{destination: {host: b}}]\n")
    assert match_request(table, req(authority="other.example.com")) is None


def test_short_name_alternates_match() -> None:
    table = table_of("  - route: [{destination: {host: b}}]\n", hosts="[httpbin]")
    for authority in (
        "httpbin",
        "httpbin:8000",
        "httpbin.default",
        "httpbin.default.svc",
        "httpbin.default.svc.cluster.local",
    ):
        assert matched(table, req(authority=authority)) == "default/app[0]", authority


WILDCARD_DOMAINS = (
    '["a.foo.com", "*.foo.com", "*-bar.foo.com", "*.b.foo.com", "foo.*", "fo.*", "*"]'
)


@pytest.mark.parametrize(
    ("host", "expected_domain"),
    [
        ("a.foo.com", "a.foo.com"),
        ("x.foo.com", "*.foo.com"),
        ("x-bar.foo.com", "*-bar.foo.com"),
        ("y.b.foo.com", "*.b.foo.com"),
        ("foo.com", "foo.*"),
        ("foo.org", "foo.*"),
        ("fo.org", "fo.*"),
        ("-bar.foo.com", "*.foo.com"),
        ("bar.net", "*"),
        ("foo.", "*"),
    ],
    ids=[
        "exact-first",
        "suffix",
        "longer-suffix-wins",
        "longest-suffix-wins",
        "suffix-needs-nonempty-then-prefix",
        "prefix",
        "shorter-prefix",
        "wildcard-not-empty",
        "star-last",
        "prefix-not-empty",
    ],
)
def test_wildcard_virtual_host_order(host: str, expected_domain: str) -> None:
    table = table_of(
        "  - route: [{destination: {host: b}}]\n", hosts=WILDCARD_DOMAINS, gateway=True
    )
    found = table.select_virtual_host_domain(host)
    assert found is not None and found[1] == expected_domain


# --- explain --------------------------------------------------------------------------------------


def test_explain_lists_each_route_and_first_failure() -> None:
    table = table_of(
        "  - match: [{uri: {prefix: /api}, headers: {x-user: {exact: alice}}}]\n"
        "    route: [{destination: {host: a}}]\n"
        "  - match: [{uri: {exact: /api/x}, method: {exact: POST}}]\n"
        "    route: [{destination: {host: b}}]\n"
        "  - match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: c}}]\n"
    )
    ex = explain_request(table, req("/api/x"))
    assert ex.route is not None and ex.route.label == "default/app[2]"
    assert [t.failure for t in ex.trials] == [
        "header x-user exact 'alice': header is missing",
        "header :method exact 'POST': header is 'GET'",
        None,
    ]
    text = "\n".join(ex.lines())
    assert "matched domain 'app.example.com'" in text
    assert "default/app[2]: matched" in text


def test_explain_no_virtual_host_and_no_route() -> None:
    table = table_of("  - match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: a}}]\n")
    ex = explain_request(table, req("/a", authority="nope.example.com"))
    assert ex.virtual_host is None and ex.route is None
    assert "matches no domain (app.example.com)" in ex.lines()[0]
    ex = explain_request(table, req("/b"))
    assert ex.route is None
    assert ex.trials[0].failure == "uri prefix '/a': path is '/b'"


def test_table_match_method_agrees() -> None:
    table = table_of("  - route: [{destination: {host: b}}]\n")
    found = match_request(table, req())
    assert found is not None and found.virtual_host.name == "app.example.com:80"
