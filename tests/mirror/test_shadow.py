from __future__ import annotations

import uuid

import pytest

from meshmirror.mirror import shadow
from meshmirror.mirror.request_head import without_hop_by_hop
from meshmirror.mirror.shadow import host_address, mirror_headers, shadow_host


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
        fields, shadow="httpbin-shadow:8000", forwarded_for="127.0.0.1", request_id="r1"
    )
    assert out[0] == (b"host", b"httpbin-shadow:8000")
    # Joined and appended with ",", as Envoy's copies carry it.
    assert (b"X-Forwarded-For", b"10.0.0.1,10.0.0.2,127.0.0.1") in out
    assert (b"Accept", b"*/*") in out
    assert (b"x-request-id", b"r1") in out
    assert sum(1 for k, _ in out if k.lower() == b"host") == 1


def test_mirror_headers_keep_existing_request_id_and_join_cookies() -> None:
    fields = [(b"x-request-id", b"keep"), (b"cookie", b"a=1"), (b"cookie", b"b=2")]
    out = mirror_headers(fields, shadow="h-shadow", forwarded_for=None, request_id="new")
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
    out = mirror_headers(fields, shadow="app-shadow", forwarded_for="127.0.0.1", request_id="rid")
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


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        pytest.param(["Authorization"], {b"authorization": None}, id="name-strips"),
        pytest.param(["X-Token=strip"], {b"x-token": None}, id="explicit-strip"),
        pytest.param([" Cookie = MASK "], {b"cookie": shadow.REDACTED}, id="mask-any-case"),
        pytest.param(
            ["A", "b=Mask", "A=mask"],
            {b"a": shadow.REDACTED, b"b": shadow.REDACTED},
            id="last-wins",
        ),
        pytest.param([], {}, id="none"),
    ],
)
def test_parse_redactions(entries: list[str], expected: dict[bytes, bytes | None]) -> None:
    assert shadow.parse_redactions(entries) == expected


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        pytest.param("", "invalid header name in mirror_redact_headers: ''", id="empty"),
        pytest.param(
            "=mask", "invalid header name in mirror_redact_headers: '=mask'", id="no-name"
        ),
        pytest.param("X Y", "invalid header name in mirror_redact_headers: 'X Y'", id="space"),
        pytest.param("X:Y", "invalid header name in mirror_redact_headers: 'X:Y'", id="colon"),
        pytest.param("X\tY", "invalid header name in mirror_redact_headers: 'X\\tY'", id="tab"),
        pytest.param(
            "X=hide", "mirror_redact_headers: 'X=hide': mode must be strip or mask", id="mode"
        ),
        pytest.param(
            "Cookie==mask",
            "mirror_redact_headers: 'Cookie==mask': mode must be strip or mask",
            id="mode-after-first-equals",
        ),
    ],
)
def test_parse_redactions_rejects(entry: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        shadow.parse_redactions(["Accept", entry])
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("host", "suffix", "expected"),
    [
        pytest.param("app-shadow", "-shadow", True, id="name"),
        pytest.param("app-shadow:8080", "-shadow", True, id="name-with-port"),
        pytest.param("APP-Shadow:80", "-shadow", True, id="host-in-capitals"),
        pytest.param("app-shadow", "-SHADOW", True, id="suffix-in-capitals"),
        pytest.param("app", "-shadow", False, id="plain"),
        pytest.param("app:8080", "-shadow", False, id="plain-with-port"),
        pytest.param("app-shadow", "", False, id="no-suffix-never"),
        pytest.param("", "", False, id="empty-never"),
        pytest.param("app-shadow:", "-shadow", False, id="empty-port-is-part-of-the-name"),
        pytest.param("app-shadow:x1", "-shadow", False, id="word-port-is-part-of-the-name"),
        pytest.param("host:notaport-shadow", "-shadow", True, id="suffix-after-a-non-port"),
        pytest.param(":8080", "8080", True, id="no-name-before-the-port"),
        pytest.param("a:b-shadow:80", "-shadow", False, id="unbracketed-ipv6-has-no-port"),
        pytest.param("[::1]-shadow:8000", "-shadow", True, id="ipv6-literal-with-port"),
        pytest.param("[::1]-shadow", "-shadow", True, id="ipv6-literal"),
        pytest.param("[::1]:8000", "-shadow", False, id="plain-ipv6-literal"),
        pytest.param("[::1]:8000", "8000", False, id="port-is-not-the-name"),
    ],
)
def test_is_shadow_host(host: str, suffix: str, expected: bool) -> None:
    assert shadow.is_shadow_host(host, suffix) is expected


@pytest.mark.parametrize(
    "host",
    ["httpbin", "httpbin:8000", "a.b.example.com:443", "127.0.0.1:8080", "[::1]:8080", "[::1]"],
)
@pytest.mark.parametrize("suffix", ["-shadow", "-Canary", "2"])
def test_a_shadow_host_is_recognised_as_one(host: str, suffix: str) -> None:
    assert not shadow.is_shadow_host(host, suffix)
    assert shadow.is_shadow_host(shadow_host(host, suffix), suffix)
    assert shadow.is_shadow_host(shadow_host(host, suffix).upper(), suffix)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("[::1]x]:80", "[::1]-shadowx]:80", id="suffix-after-the-first-bracket"),
        pytest.param("[::1", "[::1-shadow", id="unclosed-bracket"),
        pytest.param("[]", "[]-shadow", id="empty-brackets"),
        pytest.param("a:b:8000", "a:b:8000-shadow", id="two-colons-no-port"),
        pytest.param(":8000", ":8000-shadow", id="port-without-name"),
        pytest.param("app:", "app:-shadow", id="empty-port"),
    ],
)
def test_shadow_host_edge_cases(host: str, expected: str) -> None:
    assert shadow_host(host, "-shadow") == expected


def test_new_request_ids_have_122_random_bits() -> None:
    values = [int(shadow.new_request_id().replace("-", ""), 16) for _ in range(2000)]
    fixed = (0xF000 << 64) | (0xC000 << 48)  # the version nibble and the variant bits
    random_bits = (2**128 - 1) & ~fixed
    ones = zeros = 0
    for v in values:
        ones |= v
        zeros |= ~v & (2**128 - 1)
    assert ones & random_bits == random_bits  # each random bit came out 1 at least once
    assert zeros & random_bits == random_bits  # and 0 at least once
    assert {(v >> 76) & 0xF for v in values} == {4}
    assert {(v >> 62) & 0x3 for v in values} == {2}


@pytest.mark.parametrize(
    ("fields", "redact", "expected"),
    [
        pytest.param(
            [(b"Authorization", b"Bearer t"), (b"Accept", b"*/*")],
            {b"authorization": None},
            [(b"Accept", b"*/*")],
            id="strip-keeps-what-follows",
        ),
        pytest.param(
            [(b"X-Token", b"t"), (b"Accept", b"*/*")],
            {b"x-token": shadow.REDACTED},
            [(b"X-Token", shadow.REDACTED), (b"Accept", b"*/*")],
            id="mask-keeps-the-name-as-sent",
        ),
        pytest.param(
            [(b"cookie", b"a=1"), (b"Cookie", b"b=2")],
            {b"cookie": None},
            [],
            id="stripped-cookie",
        ),
        pytest.param(
            [(b"cookie", b"a=1"), (b"Cookie", b"b=2")],
            {b"cookie": shadow.REDACTED},
            [(b"cookie", shadow.REDACTED)],
            id="masked-cookie-once",
        ),
        pytest.param(
            [(b"cookie", b"a=1"), (b"Accept", b"*/*")],
            {b"authorization": None},
            [(b"Accept", b"*/*"), (b"cookie", b"a=1")],
            id="cookie-kept-when-not-redacted",
        ),
    ],
)
def test_mirror_headers_redaction(
    fields: list[tuple[bytes, bytes]],
    redact: dict[bytes, bytes | None],
    expected: list[tuple[bytes, bytes]],
) -> None:
    out = mirror_headers(fields, shadow="s", forwarded_for=None, request_id=None, redact=redact)
    assert out == [(b"host", b"s"), *expected, (shadow.MARKER_HEADER, shadow.MARKER_VALUE)]


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        pytest.param([], b"10.0.0.9", id="none"),
        pytest.param([b""], b"10.0.0.9", id="empty"),
        pytest.param([b"1.1.1.1"], b"1.1.1.1,10.0.0.9", id="one"),
        pytest.param([b"", b"2.2.2.2"], b",2.2.2.2,10.0.0.9", id="empty-then-one"),
    ],
)
def test_the_proxys_address_is_appended_to_x_forwarded_for(
    xff: list[bytes], expected: bytes
) -> None:
    fields = [(b"X-Forwarded-For", v) for v in xff]
    out = mirror_headers(fields, shadow="s", forwarded_for="10.0.0.9", request_id=None)
    assert [v for n, v in out if n.lower() == b"x-forwarded-for"] == [expected]


def test_the_shadow_host_keeps_bytes_that_were_not_utf8() -> None:
    host = b"caf\xe9-shadow".decode("utf-8", "surrogateescape")
    out = mirror_headers([], shadow=host, forwarded_for=None, request_id="r")
    assert out == [
        (b"host", b"caf\xe9-shadow"),
        (b"x-request-id", b"r"),
        (shadow.MARKER_HEADER, shadow.MARKER_VALUE),
    ]


def test_the_host_address_is_the_machines_own_and_never_loopback_when_there_is_another() -> None:
    import socket

    address = host_address()
    socket.inet_aton(address)  # an IPv4 address
    names = [name for _, name in socket.if_nameindex()]
    assert address != "127.0.0.1" or names == ["lo"]
