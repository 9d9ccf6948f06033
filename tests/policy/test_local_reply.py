"""policy/local_reply.py: redirect and direct response, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from meshmirror.config.virtualservice import (
    HTTPDirectResponse,
    HTTPRedirect,
)
from meshmirror.policy.local_reply import (
    compile_direct_response,
    compile_redirect,
    grpc_local_reply,
    grpc_status_for_http,
)


@pytest.mark.parametrize(
    ("spec", "request_", "expected"),
    [
        ({"uri": "/new"}, ("http", "app", "/old?q=1"), (301, "http://app/new?q=1")),
        ({"uri": "/new?z=2"}, ("http", "app", "/old?q=1"), (301, "http://app/new?z=2")),
        (
            {"authority": "other.example", "redirectCode": 302},
            ("http", "app:8080", "/p"),
            (302, "http://other.example/p"),
        ),
        ({"scheme": "https"}, ("http", "app:80", "/p"), (301, "https://app/p")),
        ({"scheme": "https"}, ("http", "app:8080", "/p"), (301, "https://app:8080/p")),
        ({"port": 8443, "scheme": "https"}, ("http", "app:80", "/p"), (301, "https://app:8443/p")),
        ({"derivePort": "FROM_REQUEST_PORT"}, ("http", "app", "/p"), (301, "http://app:80/p")),
        ({"derivePort": "FROM_PROTOCOL_DEFAULT"}, ("http", "app", "/p"), (301, "http://app/p")),
    ],
    ids=[
        "path-keeps-query",
        "path-with-query",
        "authority-and-code",
        "scheme-drops-default-port",
        "scheme-keeps-other-port",
        "explicit-port",
        "derive-request-port",
        "derive-protocol-default",
    ],
)
def test_redirect(
    spec: dict[str, Any], request_: tuple[str, str, str], expected: tuple[int, str]
) -> None:
    rd = compile_redirect(HTTPRedirect.model_validate(spec), listener_port=80)
    assert (rd.status, rd.location(*request_)) == expected


@pytest.mark.parametrize(
    ("prefix_rewrite", "path_kind", "path_value", "path", "location"),
    [
        # The proto's examples (route prefix match /foo).
        ("/bar", "prefix", "/foo", "/foo/baz", "http://app/bar/baz"),
        ("/", "prefix", "/foo", "/foo/baz", "http://app//baz"),
        ("/", "prefix", "/foo/", "/foo/baz", "http://app/baz"),
        ("/bar", "prefix", "/foo", "/foo/baz?q=1", "http://app/bar/baz?q=1"),
        # No uri match: the route's prefix is "/".
        ("/bar/", "prefix", "/", "/x", "http://app/bar/x"),
        # Gateway API PathPrefix (path_separated_prefix): the prefix without its slash.
        (
            "/replacement",
            "path_separated_prefix",
            "/original",
            "/original/a",
            "http://app/replacement/a",
        ),
        # An exact match (only through a delegate merge): its whole path is the prefix.
        ("/bar", "path", "/foo", "/foo?q=1", "http://app/bar?q=1"),
    ],
    ids=[
        "proto-example-bar",
        "proto-example-slash-keeps-double-slash",
        "proto-example-trailing-slash-match",
        "query-kept",
        "no-uri-match",
        "path-separated-prefix",
        "exact-whole-path",
    ],
)
def test_redirect_prefix_rewrite(
    prefix_rewrite: str, path_kind: str, path_value: str, path: str, location: str
) -> None:
    rd = compile_redirect(
        HTTPRedirect.model_validate({"prefixRewrite": prefix_rewrite}), 80, path_kind, path_value
    )
    assert rd.location("http", "app", path) == location


def test_redirect_prefix_rewrite_with_authority_and_code() -> None:
    spec = {"authority": "foo.example.com", "prefixRewrite": "/", "redirectCode": 308}
    rd = compile_redirect(HTTPRedirect.model_validate(spec), 80, "prefix", "/foo/")
    assert (rd.status, rd.location("https", "example.com", "/foo/bar")) == (
        308,
        "https://foo.example.com/bar",
    )
    assert rd.describe() == "308 to (scheme)://foo.example.com, prefix /foo/ -> /"


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 13), (401, 16), (403, 7), (404, 12), (429, 14), (502, 14), (503, 14), (504, 14)]
    + [(500, 2), (200, 2), (301, 2)],
)
def test_grpc_status_for_http(status: int, code: int) -> None:
    assert grpc_status_for_http(status) == code


def test_grpc_local_reply_is_trailers_only() -> None:
    assert grpc_local_reply(503, b"fault filter abort") == [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"14"),
        (b"grpc-message", b"fault filter abort"),
    ]
    # A grpcStatus abort's own code wins over the mapping; "%" and non-ASCII are encoded.
    assert grpc_local_reply(200, b"50% \xc3\xa9", grpc_status=5) == [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"5"),
        (b"grpc-message", b"50%25 %C3%A9"),
    ]
    assert grpc_local_reply(504, b"") == [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"14"),
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"status": 503}, (503, b"")),
        ({"status": 200, "body": {"string": "hello"}}, (200, b"hello")),
        ({"status": 418, "body": {"bytes": "AAH/"}}, (418, b"\x00\x01\xff")),
    ],
    ids=["status-only", "string", "bytes-base64"],
)
def test_direct_response(spec: dict[str, Any], expected: tuple[int, bytes]) -> None:
    dr = compile_direct_response(HTTPDirectResponse.model_validate(spec))
    assert (dr.status, dr.body) == expected
