"""request_head.py: the HTTP/1.1 request head of a copy or a primary attempt, byte for byte:
hop-by-hop fields dropped, Host filled in, Content-Length from the body, CR/LF refused."""

from __future__ import annotations

import pytest

from meshmirror.mirror.failures import InvalidRequest
from meshmirror.mirror.request_head import HOP_BY_HOP, encode_head, without_hop_by_hop
from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest

Fields = list[tuple[bytes, bytes]]
HOST = [(b"Host", b"app-shadow")]
PLAIN = MirrorEndpoint("10.0.0.1", 80)


def head(
    method: str = "GET",
    target: str = "/",
    headers: Fields | None = None,
    body: bytes = b"",
    endpoint: MirrorEndpoint = PLAIN,
    close: bool = False,
) -> bytes:
    request = MirrorRequest(method, target, HOST if headers is None else headers, body)
    return encode_head(request, endpoint, close=close)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, b"GET / HTTP/1.1\r\nHost: app-shadow\r\n\r\n", id="get"),
        pytest.param(
            {"target": ""}, b"GET / HTTP/1.1\r\nHost: app-shadow\r\n\r\n", id="empty-target-is-root"
        ),
        pytest.param(
            {"target": "/a?b=c", "headers": [(b"X-Case", b"Kept"), *HOST]},
            b"GET /a?b=c HTTP/1.1\r\nX-Case: Kept\r\nHost: app-shadow\r\n\r\n",
            id="order-and-case-kept",
        ),
        pytest.param(
            {"target": b"/caf\xe9".decode("utf-8", "surrogateescape")},
            b"GET /caf\xe9 HTTP/1.1\r\nHost: app-shadow\r\n\r\n",
            id="target-bytes-restored",
        ),
        pytest.param(
            {"method": "POST", "body": b"abc"},
            b"POST / HTTP/1.1\r\nHost: app-shadow\r\nContent-Length: 3\r\n\r\n",
            id="body-length",
        ),
        pytest.param(
            {"method": "GET", "body": b"x" * 12},
            b"GET / HTTP/1.1\r\nHost: app-shadow\r\nContent-Length: 12\r\n\r\n",
            id="any-method-with-a-body",
        ),
        pytest.param(
            {"method": "PUT"},
            b"PUT / HTTP/1.1\r\nHost: app-shadow\r\nContent-Length: 0\r\n\r\n",
            id="empty-put-says-zero",
        ),
        pytest.param(
            {"method": "PATCH"},
            b"PATCH / HTTP/1.1\r\nHost: app-shadow\r\nContent-Length: 0\r\n\r\n",
            id="empty-patch-says-zero",
        ),
        pytest.param(
            {"method": "POST"},
            b"POST / HTTP/1.1\r\nHost: app-shadow\r\nContent-Length: 0\r\n\r\n",
            id="empty-post-says-zero",
        ),
        pytest.param(
            {"method": "DELETE"},
            b"DELETE / HTTP/1.1\r\nHost: app-shadow\r\n\r\n",
            id="empty-delete",
        ),
        pytest.param(
            {"method": "post"},
            b"post / HTTP/1.1\r\nHost: app-shadow\r\n\r\n",
            id="methods-are-exact",
        ),
        pytest.param(
            {"close": True},
            b"GET / HTTP/1.1\r\nHost: app-shadow\r\nConnection: close\r\n\r\n",
            id="close",
        ),
        pytest.param(
            {"method": "POST", "body": b"a", "close": True},
            b"POST / HTTP/1.1\r\nHost: app-shadow\r\nContent-Length: 1\r\n"
            b"Connection: close\r\n\r\n",
            id="length-then-close",
        ),
    ],
)
def test_the_head_is_exactly(kwargs: dict[str, object], expected: bytes) -> None:
    assert head(**kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        pytest.param(MirrorEndpoint("10.0.0.1", 80), b"10.0.0.1", id="default-port"),
        pytest.param(MirrorEndpoint("10.0.0.1", 8080), b"10.0.0.1:8080", id="other-port"),
        pytest.param(MirrorEndpoint("m.local", 443, tls=True), b"m.local", id="tls-default-port"),
        pytest.param(MirrorEndpoint("m.local", 80, tls=True), b"m.local:80", id="tls-port-80"),
        pytest.param(MirrorEndpoint("m.local", 443), b"m.local:443", id="plain-port-443"),
        pytest.param(MirrorEndpoint("::1", 80), b"[::1]", id="ipv6"),
        pytest.param(MirrorEndpoint("::1", 8443, tls=True), b"[::1]:8443", id="ipv6-port"),
        pytest.param(MirrorEndpoint("bücher.example", 80), b"xn--bcher-kva.example", id="idna"),
    ],
)
def test_a_missing_host_comes_from_the_endpoint_right_after_the_request_line(
    endpoint: MirrorEndpoint, host: bytes
) -> None:
    got = head(method="POST", headers=[(b"Accept", b"*/*")], body=b"x", endpoint=endpoint)
    assert got == (
        b"POST / HTTP/1.1\r\nHost: " + host + b"\r\nAccept: */*\r\nContent-Length: 1\r\n\r\n"
    )


def test_the_host_sent_is_never_replaced_whatever_its_case() -> None:
    got = head(headers=[(b"HOST", b"given")], endpoint=MirrorEndpoint("other", 81))
    assert got == b"GET / HTTP/1.1\r\nHOST: given\r\n\r\n"


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        pytest.param(
            [*HOST, *((name.title(), b"v") for name in sorted(HOP_BY_HOP)), (b"Accept", b"*/*")],
            [*HOST, (b"Accept", b"*/*")],
            id="every-hop-by-hop-field",
        ),
        pytest.param(
            [*HOST, (b"Connection", b"keep-alive"), (b"Keep-Alive", b"5"), (b"Accept", b"*/*")],
            [*HOST, (b"Accept", b"*/*")],
            id="usual-connection",
        ),
        pytest.param(
            [
                *HOST,
                (b"Connection", b" X-Hop ,x-other"),
                (b"connection", b"X-Third"),
                (b"x-hop", b"1"),
                (b"X-Other", b"2"),
                (b"X-Third", b"3"),
                (b"X-Kept", b"4"),
            ],
            [*HOST, (b"X-Kept", b"4")],
            id="fields-connection-names",
        ),
        pytest.param(
            [(b"Connection", b"Host, close"), (b"Host", b"h"), (b"X", b"1")],
            [(b"Host", b"h"), (b"X", b"1")],
            id="never-host",
        ),
    ],
)
def test_hop_by_hop_fields_are_not_sent(headers: Fields, kept: Fields) -> None:
    lines = b"".join(n + b": " + v + b"\r\n" for n, v in kept)
    assert head(headers=headers) == b"GET / HTTP/1.1\r\n" + lines + b"\r\n"
    assert without_hop_by_hop(headers) == kept


def test_without_hop_by_hop_keeps_everything_else_as_it_is() -> None:
    fields = [(b"A", b"1"), (b"Te", b"x"), (b"b", b"2"), (b"Connection", b"c"), (b"C", b"3")]
    assert without_hop_by_hop(fields) == [(b"A", b"1"), (b"b", b"2")]
    assert without_hop_by_hop([(b"A", b"1")]) == [(b"A", b"1")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"target": "/a b"}, "target contains a space", id="space-in-target"),
        pytest.param({"method": "GE\rT"}, "method contains CR/LF", id="cr-in-method"),
        pytest.param({"method": "GE\nT"}, "method contains CR/LF", id="lf-in-method"),
        pytest.param({"target": "/a\r"}, "target contains CR/LF", id="cr-in-target"),
        pytest.param({"target": "/a\nb"}, "target contains CR/LF", id="lf-in-target"),
        pytest.param(
            {"headers": [*HOST, (b"X", b"a\r\nInjected: 1")]},
            "header #1 contains CR/LF",
            id="crlf-in-a-value",
        ),
        pytest.param(
            {"headers": [*HOST, (b"A", b"1"), (b"X\n", b"v")]},
            "header #2 contains CR/LF",
            id="lf-in-a-name",
        ),
        pytest.param(
            {"headers": [(b"X\r", b"v"), *HOST]}, "header #0 contains CR/LF", id="cr-in-a-name"
        ),
        pytest.param(
            {"headers": [*HOST, (b"X", b"v\r")]}, "header #1 contains CR/LF", id="cr-in-a-value"
        ),
        pytest.param(
            {"headers": [*HOST, (b"X", b"\nv")]}, "header #1 contains CR/LF", id="lf-in-a-value"
        ),
        pytest.param(
            {"headers": [], "endpoint": MirrorEndpoint("a\nb", 80)},
            "request head contains CR/LF",
            id="lf-in-the-endpoint-host",
        ),
    ],
)
def test_a_head_that_cannot_be_framed_safely_is_refused(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        head(**kwargs)  # type: ignore[arg-type]
    assert str(raised.value) == message
    assert "Injected" not in str(raised.value)


def test_a_hop_by_hop_field_with_cr_lf_is_dropped_not_refused() -> None:
    assert head(headers=[*HOST, (b"Keep-Alive", b"a\r\nb")]) == (
        b"GET / HTTP/1.1\r\nHost: app-shadow\r\n\r\n"
    )


def test_a_connection_stays_open_unless_asked() -> None:
    request = MirrorRequest("GET", "/", HOST, b"")
    assert encode_head(request, PLAIN) == b"GET / HTTP/1.1\r\nHost: app-shadow\r\n\r\n"
