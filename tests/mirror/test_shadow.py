from __future__ import annotations

import uuid

import pytest

from meshmirror.mirror import shadow
from meshmirror.mirror.request_head import without_hop_by_hop
from meshmirror.mirror.shadow import mirror_headers, shadow_host


@pytest.mark.parametrize(
    ("host", "suffix", "expected"),
    [
        ("httpbin", "-shadow", "httpbin-shadow"),
        ("httpbin:8000", "-shadow", "httpbin-shadow:8000"),
        ("cluster-1", "-shadow", "cluster-1-shadow"),
        ("a.b.example.com:443", "-shadow", "a.b.example.com-shadow:443"),
        ("127.0.0.1:8080", "-shadow", "127.0.0.1-shadow:8080"),
        ("[::1]:8080", "-shadow", "[::1]-shadow:8080"),
        ("[::1]", "-shadow", "[::1]-shadow"),
        ("httpbin:8000", "", "httpbin:8000"),
        ("httpbin", "-canary", "httpbin-canary"),
        ("", "-shadow", "-shadow"),
        ("host:notaport", "-shadow", "host:notaport-shadow"),
    ],
)
def test_shadow_host_inserts_suffix_before_port(host: str, suffix: str, expected: str) -> None:
    assert shadow_host(host, suffix) == expected


def test_mirror_headers_replace_host_and_extend_xff() -> None:
    fields = [
        (b"Host", b"httpbin:8000"),
        (b"X-Forwarded-For", b"10.0.0.1"),
        (b"Accept", b"*/*"),
        (b"X-Forwarded-For", b"10.0.0.2"),
    ]
    out = mirror_headers(
        fields, shadow="httpbin-shadow:8000", client_ip="127.0.0.1", request_id="r1"
    )
    assert out[0] == (b"host", b"httpbin-shadow:8000")
    assert (b"X-Forwarded-For", b"10.0.0.1, 10.0.0.2, 127.0.0.1") in out
    assert (b"Accept", b"*/*") in out
    assert (b"x-request-id", b"r1") in out
    assert sum(1 for k, _ in out if k.lower() == b"host") == 1


def test_mirror_headers_keep_existing_request_id_and_join_cookies() -> None:
    fields = [(b"x-request-id", b"keep"), (b"cookie", b"a=1"), (b"cookie", b"b=2")]
    out = mirror_headers(fields, shadow="h-shadow", client_ip=None, request_id="new")
    assert (b"x-request-id", b"keep") in out
    assert (b"x-request-id", b"new") not in out
    assert (b"cookie", b"a=1; b=2") in out
    assert not any(k == b"x-forwarded-for" for k, _ in out)


def test_new_request_ids_are_distinct_version_4_uuids() -> None:
    ids = [shadow.new_request_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:50]:
        u = uuid.UUID(text)
        assert str(u) == text  # the canonical lower-case 8-4-4-4-12 form
        assert (u.version, u.variant) == (4, uuid.RFC_4122)


def test_connection_tokens_never_strip_the_proxys_own_fields() -> None:
    fields = [
        (b"Host", b"app"),
        (b"Connection", b"close, x-meshmirror-shadow, X-Forwarded-For"),
        (b"Connection", b"x-request-id, host, x-hop"),
        (b"X-Forwarded-For", b"10.9.9.9"),
        (b"x-request-id", b"appended-by-the-proxy"),
        (b"X-Hop", b"h"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Accept", b"*/*"),
    ]
    out = mirror_headers(fields, shadow="app-shadow", client_ip="127.0.0.1", request_id="rid")
    assert out == [
        (b"host", b"app-shadow"),
        (b"Accept", b"*/*"),
        (b"x-forwarded-for", b"127.0.0.1"),
        (b"x-request-id", b"rid"),
        (shadow.MARKER_HEADER, shadow.MARKER_VALUE),
    ]


def test_without_hop_by_hop_keeps_host_and_order() -> None:
    fields = [(b"Host", b"a"), (b"Connection", b"host, X-A"), (b"x-a", b"1"), (b"B", b"2")]
    assert without_hop_by_hop(fields) == [(b"Host", b"a"), (b"B", b"2")]
    assert without_hop_by_hop([(b"B", b"2"), (b"TE", b"trailers")]) == [(b"B", b"2")]
