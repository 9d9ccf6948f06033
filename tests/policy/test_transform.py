"""transform.py: rewrites, header operations and the primary-side policies, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from meshmirror.config.base import HeaderOperations
from meshmirror.config.virtualservice import (
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
)
from meshmirror.percent import MILLION
from meshmirror.policy.fault import compile_fault
from meshmirror.policy.local_reply import compile_direct_response, compile_redirect
from meshmirror.policy.rewrites import (
    HeaderOps,
    compile_header_ops,
    compile_path_rewrite,
    rewrite_request,
)
from meshmirror.policy.upstream import (
    DEFAULT_RETRIABLE_CODES,
    DEFAULT_RETRY_ON,
    compile_upstream,
    parse_retry_on,
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
    assert fields == [(b"host", b"app"), (b"x-d", b"1"), (b"x-who", b"route")]


# --- redirect and direct response ---


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


# --- fault ---


@pytest.mark.parametrize(
    ("spec", "delay", "delay_pm", "status", "abort_pm"),
    [
        ({"delay": {"fixedDelay": "2s"}}, 2.0, MILLION, None, 0),
        ({"delay": {"fixedDelay": "100ms", "percentage": {"value": 10}}}, 0.1, 100_000, None, 0),
        ({"delay": {"fixedDelay": "1s", "percent": 30}}, 1.0, 300_000, None, 0),
        ({"abort": {"httpStatus": 503}}, 0.0, 0, 503, MILLION),
        ({"abort": {"httpStatus": 500, "percentage": {"value": 0.5}}}, 0.0, 0, 500, 5_000),
    ],
    ids=["delay-100", "delay-percentage", "delay-percent", "abort-100", "abort-half-percent"],
)
def test_fault(
    spec: dict[str, Any], delay: float, delay_pm: int, status: int | None, abort_pm: int
) -> None:
    f = compile_fault(HTTPFaultInjection.model_validate(spec))
    assert f is not None
    assert (f.delay, f.delay_per_million, f.abort_status, f.abort_per_million) == (
        delay,
        delay_pm,
        status,
        abort_pm,
    )
    # Sampling: below the fraction fires, at or above does not.
    if delay_pm:
        assert f.sample_delay(delay_pm - 1) == delay
        assert f.sample_delay(delay_pm) == 0.0 or delay_pm == MILLION
    if abort_pm:
        assert f.sample_abort(abort_pm - 1) == status
        assert f.sample_abort(abort_pm) is None or abort_pm == MILLION


def test_fault_with_only_grpc_abort_is_nothing() -> None:
    assert compile_fault(HTTPFaultInjection.model_validate({"abort": {"grpcStatus": "X"}})) is None


# --- timeout and retries ---


def test_retry_on_parsing() -> None:
    assert parse_retry_on(None) == (DEFAULT_RETRY_ON, DEFAULT_RETRIABLE_CODES)
    assert parse_retry_on("5xx,503, 429") == (
        frozenset({"5xx", "retriable-status-codes"}),
        frozenset({503, 429}),
    )
    assert parse_retry_on("gateway-error") == (frozenset({"gateway-error"}), frozenset())


def test_upstream_policy_compile() -> None:
    assert compile_upstream(None, None) is None
    assert compile_upstream(None, HTTPRetry(attempts=0)) is None
    p = compile_upstream("2s", None)
    assert p is not None and (p.timeout, p.retries) == (2.0, 0)
    p = compile_upstream(
        None,
        HTTPRetry.model_validate(
            {"attempts": 3, "perTryTimeout": "250ms", "retryOn": "5xx", "backoff": "10ms"}
        ),
    )
    assert p is not None
    assert (p.timeout, p.retries, p.per_try_timeout, p.backoff) == (0.0, 3, 0.25, 0.01)


@pytest.mark.parametrize(
    ("retry_on", "status", "grpc", "failure", "expected"),
    [
        ("5xx", 500, None, None, True),
        ("5xx", 404, None, None, False),
        ("gateway-error", 500, None, None, False),
        ("gateway-error", 503, None, None, True),
        ("retriable-4xx", 409, None, None, True),
        ("503", 503, None, None, True),
        ("503", 502, None, None, False),
        ("unavailable", 200, "14", None, True),
        ("connect-failure", None, None, "connect-failure", True),
        ("connect-failure", None, None, "reset", False),
        ("reset", None, None, "reset", True),
        ("5xx", None, None, "timeout", True),
        ("connect-failure", None, None, "timeout", False),
        ("refused-stream", None, None, "reset", False),  # HTTP/2 only: never on HTTP/1.1
    ],
)
def test_retry_decisions(
    retry_on: str, status: int | None, grpc: str | None, failure: Any, expected: bool
) -> None:
    p = compile_upstream(None, HTTPRetry.model_validate({"attempts": 1, "retryOn": retry_on}))
    assert p is not None
    if status is not None:
        assert p.retry_for_status(status, grpc) is expected
    else:
        assert p.retry_for_failure(failure) is expected
