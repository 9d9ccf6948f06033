"""request_head.py: the HTTP/1.1 request head of a copy or a primary attempt, byte for byte:
hop-by-hop fields dropped, Host filled in, Content-Length from the body, CR/LF refused; and the
HTTP/2 header list of the same request (`request_headers`), field for field."""

from __future__ import annotations

import pytest

from meshmirror.mirror.failures import InvalidRequest
from meshmirror.mirror.request_head import (
    HOP_BY_HOP,
    encode_head,
    request_headers,
    without_hop_by_hop,
)
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


# --- the HTTP/2 header list --------------------------------------------------------------------


def h2_fields(
    method: str = "GET", target: str = "/", headers: Fields | None = None, body: bytes = b""
) -> Fields:
    """The regular fields of the copy's HTTP/2 header list (the pseudo-headers checked apart)."""
    request = MirrorRequest(method, target, HOST if headers is None else headers, body)
    fields = request_headers(request, b"http", b"app-shadow")
    assert fields[:3] == [
        (b":method", method.encode()),
        (b":scheme", b"http"),
        (b":authority", b"app-shadow"),
    ]
    assert fields[3][0] == b":path"
    return fields[4:]


@pytest.mark.parametrize(
    ("target", "path"),
    [
        pytest.param("/a?b=c", b"/a?b=c", id="as-given"),
        pytest.param("", b"/", id="empty-target-is-root"),
        pytest.param(
            b"/caf\xe9?q=\xff".decode("utf-8", "surrogateescape"),
            b"/caf\xe9?q=\xff",
            id="target-bytes-restored",
        ),
        pytest.param("/café", "/café".encode(), id="utf-8"),
    ],
)
def test_the_http2_path_is_the_target(target: str, path: bytes) -> None:
    request = MirrorRequest("GET", target, HOST, b"")
    assert request_headers(request, b"https", b"a")[:4] == [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"a"),
        (b":path", path),
    ]


@pytest.mark.parametrize(
    ("kwargs", "fields"),
    [
        pytest.param({}, [], id="get"),
        pytest.param(
            {"headers": [(b"X-Case", b"Kept"), (b"Accept", b"application/grpc")]},
            [(b"x-case", b"Kept"), (b"accept", b"application/grpc")],
            id="names-lower-cased-and-no-te-without-grpc-content",
        ),
        pytest.param(
            {"headers": [(b"Content-Type", b"application/json")]},
            [(b"content-type", b"application/json")],
            id="no-te-for-other-content",
        ),
        pytest.param(
            {"headers": [(b"Content-Type", b"application/grpc+proto")]},
            [(b"content-type", b"application/grpc+proto"), (b"te", b"trailers")],
            id="te-trailers-for-grpc",
        ),
        pytest.param(
            {"headers": [(b"Content-Type", b"text/plain; application/grpc")]},
            [(b"content-type", b"text/plain; application/grpc")],
            id="grpc-only-at-the-start",
        ),
        pytest.param(
            {"headers": [(b"TE", b"trailers"), (b"Host", b"h"), (b"HTTP2-Settings", b"x")]},
            [],
            id="connection-specific-fields-dropped",
        ),
        pytest.param(
            {
                "headers": [
                    (b"Connection", b"keep-alive, X-Hop"),
                    (b"x-hop", b"1"),
                    (b"X-Keep", b"2"),
                    (b"connection", b" Other "),
                    (b"OTHER", b"3"),
                ]
            },
            [(b"x-keep", b"2")],
            id="fields-connection-names-dropped-as-over-http1",
        ),
        pytest.param(
            {"method": "POST", "body": b"abc"}, [(b"content-length", b"3")], id="body-length"
        ),
        pytest.param(
            {"method": "GET", "body": b"x" * 12},
            [(b"content-length", b"12")],
            id="any-method-with-a-body",
        ),
        pytest.param({"method": "POST"}, [(b"content-length", b"0")], id="empty-post-says-zero"),
        pytest.param({"method": "PUT"}, [(b"content-length", b"0")], id="empty-put-says-zero"),
        pytest.param({"method": "PATCH"}, [(b"content-length", b"0")], id="empty-patch-says-zero"),
        pytest.param({"method": "DELETE"}, [], id="empty-delete"),
        pytest.param({"method": "post"}, [], id="methods-are-exact"),
        pytest.param(
            {"method": "POST", "headers": [(b"Content-Length", b"99")], "body": b"ab"},
            [(b"content-length", b"2")],
            id="length-from-the-body-sent",
        ),
    ],
)
def test_the_http2_fields_are_exactly(kwargs: dict[str, object], fields: Fields) -> None:
    assert h2_fields(**kwargs) == fields  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(b"x!a", id="bang"),
        pytest.param(b"x;a", id="semicolon"),
        pytest.param(b"~x", id="tilde"),
        pytest.param(b"X-UPPER", id="upper-case-lowered"),
    ],
)
def test_a_field_name_http2_allows_is_sent(name: bytes) -> None:
    # RFC 9113 8.2.1 forbids only 0x00-0x20, 0x7f-0xff, upper case (lowered here) and a colon.
    assert h2_fields(headers=[(name, b"v")]) == [(name.lower(), b"v")]


@pytest.mark.parametrize(
    ("headers", "target", "message"),
    [
        pytest.param(
            [(b"x-a", b"1\r2")], "/", "header #0 cannot be sent over HTTP/2", id="cr-in-a-value"
        ),
        pytest.param(
            [(b"x-a", b"1\n2")], "/", "header #0 cannot be sent over HTTP/2", id="lf-in-a-value"
        ),
        pytest.param([(b"x-a", b"\r")], "/", "header #0 cannot be sent over HTTP/2", id="only-cr"),
        pytest.param([(b"x-a", b"\n")], "/", "header #0 cannot be sent over HTTP/2", id="only-lf"),
        pytest.param(
            [(b"x-a", b"1\x002")], "/", "header #0 cannot be sent over HTTP/2", id="nul-in-a-value"
        ),
        pytest.param(
            [(b"A", b"1"), (b"x:a", b"1")],
            "/",
            "header #1 cannot be sent over HTTP/2",
            id="colon-in-a-name",
        ),
        pytest.param(
            [(b":path", b"/x")],
            "/",
            "header #0 cannot be sent over HTTP/2",
            id="pseudo-header-as-a-field",
        ),
        pytest.param(
            [(b"x a", b"1")], "/", "header #0 cannot be sent over HTTP/2", id="space-in-a-name"
        ),
        pytest.param(
            [(b"x\x1fa", b"1")], "/", "header #0 cannot be sent over HTTP/2", id="control-in-a-name"
        ),
        pytest.param(
            [(b"x\x7f", b"1")], "/", "header #0 cannot be sent over HTTP/2", id="del-in-a-name"
        ),
        pytest.param(
            [(b"x\x80", b"1")], "/", "header #0 cannot be sent over HTTP/2", id="0x80-in-a-name"
        ),
        pytest.param([(b"", b"1")], "/", "header #0 cannot be sent over HTTP/2", id="empty-name"),
        pytest.param([], "/a\rb", "target cannot be sent over HTTP/2", id="cr-in-the-target"),
        pytest.param([], "/a\nb", "target cannot be sent over HTTP/2", id="lf-in-the-target"),
        pytest.param([], "/a b", "target cannot be sent over HTTP/2", id="space-in-the-target"),
    ],
)
def test_a_request_http2_cannot_carry_is_refused_with_what_is_wrong(
    headers: Fields, target: str, message: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        request_headers(MirrorRequest("GET", target, headers, b""), b"http", b"h")
    assert str(raised.value) == message


def test_a_hop_by_hop_field_http2_could_not_carry_is_dropped_not_refused() -> None:
    assert h2_fields(headers=[(b"Keep-Alive", b"a\r\nb"), (b"Connection", b"\0")]) == []
