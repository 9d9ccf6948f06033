"""The one-pass header scan and the Connection-token helper (mitm/headers.py)."""

from __future__ import annotations

import pytest

from meshmirror.mitm.headers import (
    for_http2_upstream,
    scan_request_headers,
    without_connection_token,
)


def test_scan_joins_repeats_and_counts_hosts() -> None:
    h = scan_request_headers(
        [
            (b"Host", b"a"),
            (b"X-Request-Id", b"r1"),
            (b"x-request-id", b"r2"),
            (b"host", b"b"),
            (b"X-Meshmirror-Shadow", b"1"),
        ]
    )
    assert h.joined["x-request-id"] == "r1,r2"
    assert h.request_id == "r1"
    assert (h.host, h.host_fields, h.marker, h.upgrade) == ("a, b", 2, True, False)


@pytest.mark.parametrize(
    "fields",
    [
        [],
        [(b"Host", b"a"), (b"X-Request-Id", b"r1"), (b"x-request-id", b"r2"), (b"host", b"b")],
        [(b"X-Meshmirror-Shadow", b"1"), (b"UPGRADE", b"websocket"), (b"Connection", b"up")],
        [(b"hosT", b"\xff\xfe"), (b"x-request-ie", b"no"), (b"connectiox", b"no")],
        [(b"upgrade-insecure-requests", b"1"), (b"x-meshmirror-shadowy", b"1"), (b"hos", b"x")],
        [(b"cookie", b"a=b"), (b"user-agent", b"wrk"), (b"x-request-id", b"")],
    ],
)
def test_scan_without_index_agrees_with_the_full_scan(fields: list[tuple[bytes, bytes]]) -> None:
    # Used when no route matches on headers: everything but `joined` must be the same.
    full = scan_request_headers(fields)
    light = scan_request_headers(fields, index=False)
    assert light.joined == {}
    assert light._replace(joined=full.joined) == full


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ([(b"Connection", b"x-request-id")], []),
        ([(b"Connection", b"close, X-Request-Id ,x-b")], [(b"Connection", b"close,x-b")]),
        (
            [(b"a", b"1"), (b"connection", b"keep-alive"), (b"connection", b" x-request-id ")],
            [(b"a", b"1"), (b"connection", b"keep-alive")],
        ),
        ([(b"x-request-id-like", b"x-request-id")], [(b"x-request-id-like", b"x-request-id")]),
        ([(b"Connection", b"x-request-idx")], [(b"Connection", b"x-request-idx")]),
    ],
)
def test_without_connection_token(
    fields: list[tuple[bytes, bytes]], expected: list[tuple[bytes, bytes]]
) -> None:
    assert without_connection_token(tuple(fields), b"x-request-id") == tuple(expected)


def test_for_http2_upstream_drops_connection_what_it_names_and_te_but_trailers() -> None:
    fields = (
        (b"Host", b"h"),
        (b"Connection", b"keep-alive, X-Hop, Host"),
        (b"connection", b" TE ,,"),
        (b"TE", b" Trailers "),
        (b"x-hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Keep", b"2"),
    )
    # Host stays whatever Connection says, and `te: trailers` may go on over HTTP/2.
    assert for_http2_upstream(fields) == (
        (b"Host", b"h"),
        (b"TE", b" Trailers "),
        (b"X-Keep", b"2"),
    )
    # As libwww-perl sends it: a TE other than trailers cannot go on, named or not.
    lwp = ((b"TE", b"deflate,gzip;q=0.3"), (b"Connection", b"TE, close"), (b"a", b"1"))
    assert for_http2_upstream(lwp) == ((b"a", b"1"),)
    assert for_http2_upstream(((b"te", b"gzip"), (b"a", b"1"))) == ((b"a", b"1"),)
    assert for_http2_upstream(((b"a", b"1"),)) == ((b"a", b"1"),)
