"""policy/local_reply.py: redirect and direct response, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from meshmirror.config.virtualservice import (
    HTTPDirectResponse,
    HTTPRedirect,
)
from meshmirror.policy.local_reply import compile_direct_response, compile_redirect


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
