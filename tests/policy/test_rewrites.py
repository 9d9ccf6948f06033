"""policy/rewrites.py: path rewrites and header operations, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from meshmirror.config.base import HeaderOperations
from meshmirror.config.virtualservice import (
    HTTPRewrite,
)
from meshmirror.policy.rewrites import (
    HeaderOps,
    compile_header_ops,
    compile_path_rewrite,
    rewrite_request,
)


def ops(**kw: Any) -> HeaderOperations:
    return HeaderOperations.model_validate(kw)


# --- path rewrite ---


@pytest.mark.parametrize(
    ("rewrite", "kind", "value", "path", "expected"),
    [
        ({"uri": "/v2"}, "prefix", "/v1", "/v1/items?x=1", "/v2/items?x=1"),
        ({"uri": "/"}, "prefix", "/api/", "/api/items", "/items"),
        ({"uri": "/new"}, "prefix", "/", "/a/b", "/newa/b"),
        ({"uri": "/x"}, "path", "/exact", "/exact?q=1", "/x?q=1"),
        ({"uri": "/x"}, "safe_regex", "/r/[0-9]+", "/r/42?q", "/x?q"),
        ({"uri": "/v2"}, "prefix", "/V1", "/v1/a", "/v2/a"),  # ignoreUriCase: same length
        (
            {
                "uriRegexRewrite": {
                    "match": "^/service/([^/]+)(/.*)$",
                    "rewrite": "\\2/instance/\\1",
                }
            },
            "prefix",
            "/",
            "/service/foo/v1/api?x=1",
            "/v1/api/instance/foo?x=1",
        ),
        (
            {"uriRegexRewrite": {"match": "a", "rewrite": "b"}},
            "prefix",
            "/",
            "/aaa?a=a",
            "/bbb?a=a",
        ),  # global replace, query untouched
        (
            {"uriRegexRewrite": {"match": "/(x)", "rewrite": "\\\\\\1\\0"}},
            "prefix",
            "/",
            "/x",
            "\\x/x",
        ),  # \\ is a backslash, \0 the whole match
        ({"authority": "only.example"}, "prefix", "/", "/a", "/a"),
    ],
    ids=[
        "prefix-keeps-query",
        "prefix-to-root",
        "catch-all-prefix",
        "exact-replaces-path",
        "regex-match-replaces-path",
        "case-folded-prefix",
        "regex-rewrite-groups",
        "regex-rewrite-global",
        "regex-rewrite-escapes",
        "authority-only",
    ],
)
def test_path_rewrite(
    rewrite: dict[str, Any], kind: str, value: str, path: str, expected: str
) -> None:
    pr = compile_path_rewrite(HTTPRewrite.model_validate(rewrite), kind, value)
    assert (pr.apply(path) if pr is not None else path) == expected


def test_bad_substitution_is_rejected() -> None:
    with pytest.raises(ValueError, match="bad escape"):
        compile_path_rewrite(
            HTTPRewrite.model_validate({"uriRegexRewrite": {"match": "a", "rewrite": "\\q"}}),
            "prefix",
            "/",
        )


# --- header operations ---

BASE = [(b"Host", b"app"), (b"X-A", b"1"), (b"x-a", b"2"), (b"X-Keep", b"k")]


@pytest.mark.parametrize(
    ("spec", "expected", "authority"),
    [
        ({"set": {"X-A": "new"}}, [(b"Host", b"app"), (b"X-Keep", b"k"), (b"x-a", b"new")], None),
        (
            {"add": {"x-a": "3"}},
            [(b"Host", b"app"), (b"X-A", b"1"), (b"x-a", b"2"), (b"X-Keep", b"k"), (b"x-a", b"3")],
            None,
        ),
        ({"remove": ["x-a", "X-KEEP"]}, [(b"Host", b"app")], None),
        (
            {"remove": ["x-a"], "add": {"x-a": "9"}},
            [(b"Host", b"app"), (b"X-Keep", b"k"), (b"x-a", b"9")],
            None,
        ),  # remove before add, as Envoy
        ({"set": {"x-p": "100%%"}}, [*BASE, (b"x-p", b"100%")], None),
        ({"set": {"host": "h1"}, "add": {":authority": "h2"}}, BASE, "h1"),  # set wins over add
        ({"add": {":authority": "h2"}}, BASE, "h2"),
        ({"set": {":path": "/x"}}, BASE, None),  # pseudo-headers dropped
    ],
    ids=[
        "set-replaces-all",
        "add-appends",
        "remove-any-case",
        "remove-then-add",
        "percent-escape",
        "authority-set-wins",
        "authority-add",
        "pseudo-dropped",
    ],
)
def test_header_ops(
    spec: dict[str, Any], expected: list[tuple[bytes, bytes]], authority: str | None
) -> None:
    compiled, auth = compile_header_ops(ops(**spec))
    assert auth == authority
    out = compiled.apply(BASE) if compiled is not None else list(BASE)
    assert out == expected


def test_rewrite_request_orders_destination_then_route() -> None:
    dest = HeaderOps(set=((b"x-who", b"dest"),), add=((b"x-d", b"1"),))
    route = HeaderOps(set=((b"x-who", b"route"),))
    path, fields, authority = rewrite_request(
        "/v1/a?q=1",
        [(b"host", b"app"), (b"x-who", b"client")],
        "app",
        ops=(dest, route),
        authority_rewrite="new.example",
        path_rewrite=compile_path_rewrite(
            HTTPRewrite.model_validate({"uri": "/v2"}), "prefix", "/v1"
        ),
    )
    assert path == "/v2/a?q=1"
    assert authority == "new.example"
    # The originals stay beside them, as Envoy's router leaves them.
    assert fields == [
        (b"host", b"app"),
        (b"x-d", b"1"),
        (b"x-who", b"route"),
        (b"x-envoy-original-host", b"app"),
        (b"x-envoy-original-path", b"/v1/a?q=1"),
    ]
