"""Bounded decoding: every coding mitmproxy accepts, stacked codings, bombs stopped at the
limit, prefixes and garbage."""

from __future__ import annotations

import resource
import zlib

import pytest

from meshmirror.outcomes.decoding import decode_body
from tests.support import bombs

TEXT = b"hello, bounded world\n" * 100
LIMIT = 64 * 1024


def encoded(coding: str, data: bytes) -> bytes:
    from mitmproxy.net import encoding  # the tests may use mitmproxy's own encoders

    for c in [c.strip() for c in coding.split(",")]:
        data = encoding.encode(data, c)
    return data


@pytest.mark.parametrize(
    "coding", ["gzip", "deflate", "br", "zstd", "identity", "gzip, br", "br, zstd, gzip", ""]
)
def test_every_coding_and_stack_decodes(coding: str) -> None:
    assert decode_body(encoded(coding, TEXT) if coding else TEXT, coding, LIMIT) == (
        TEXT,
        False,
        "",
    )


def test_raw_deflate_and_upper_case_names() -> None:
    raw = zlib.compress(TEXT)[2:-4]  # no zlib header: some servers send that as deflate
    assert decode_body(raw, "Deflate", LIMIT).body == TEXT


@pytest.mark.parametrize("coding", ["zstd", "gzip", "br", "deflate", "br, gzip"])
def test_a_bomb_stops_at_the_limit_without_inflating(coding: str) -> None:
    bomb = bombs.bombs(64)[coding]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    decoded = decode_body(bomb, coding, LIMIT)
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert decoded.over and decoded.body == b"\0" * LIMIT
    assert grew_mib < 32  # 64 MiB decoded in full would show


def test_a_prefix_decodes_to_a_prefix() -> None:
    data = encoded("gzip", TEXT)
    decoded = decode_body(data[: len(data) // 2], "gzip", LIMIT)
    assert decoded.body is not None and TEXT.startswith(decoded.body) and not decoded.over


@pytest.mark.parametrize(
    ("data", "coding", "error"),
    [
        (b"not gzip", "gzip", "cannot decode gzip"),
        (b"x", "compress", "unsupported content coding 'compress'"),
        (b"x", "gzip, gzip, gzip, gzip, gzip", "more than 4 content codings"),
    ],
)
def test_what_cannot_be_decoded_says_why(data: bytes, coding: str, error: str) -> None:
    decoded = decode_body(data, coding, LIMIT)
    assert decoded.body is None and error in decoded.error
