"""grpc.py: the content-type test, status names, grpc-message coding, framing, and protobuf
messages decoded without a schema."""

from __future__ import annotations

import struct

import pytest

from meshmirror import grpc


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/grpc", True),
        ("application/grpc+proto", True),
        ("application/grpc-web", False),
        ("application/grpc-web+proto", False),
        ("application/json", False),
        ("", False),
    ],
)
def test_is_grpc(content_type: str, expected: bool) -> None:
    assert grpc.is_grpc(content_type) is expected


@pytest.mark.parametrize(
    ("code", "label"), [(0, "OK"), (14, "UNAVAILABLE"), (16, "UNAUTHENTICATED"), (17, "other")]
)
def test_status_label_is_bounded(code: int, label: str) -> None:
    assert grpc.status_label(code) == label


@pytest.mark.parametrize(
    ("value", "code"), [(b"0", 0), (b" 14 ", 14), ("3", 3), (b"x", None), (b"1234", None)]
)
def test_parse_status(value: bytes | str, code: int | None) -> None:
    assert grpc.parse_status(value) == code


def test_percent_coding_round_trips() -> None:
    text = "fault filter abort: 100% \u00e9\n"
    encoded = grpc.percent_encode(text.encode())
    assert encoded == b"fault filter abort: 100%25 %C3%A9%0A"
    assert grpc.percent_decode(encoded) == text
    assert grpc.percent_decode(b"bad %zz and %4") == "bad %zz and %4"


def frame(payload: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", int(compressed), len(payload)) + payload


def test_split_messages() -> None:
    body = frame(b"a") + frame(b"", compressed=True) + frame(b"ccc")
    assert grpc.split_messages(body) == [(False, b"a"), (True, b""), (False, b"ccc")]
    assert grpc.split_messages(b"") == []
    with pytest.raises(grpc.FramingError, match="truncated message prefix"):
        grpc.split_messages(b"\x00\x00")
    with pytest.raises(grpc.FramingError, match="truncated message"):
        grpc.split_messages(frame(b"abc")[:-1])
    with pytest.raises(grpc.FramingError, match="more than 2"):
        grpc.split_messages(frame(b"") * 3, limit=2)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, wire: int, payload: bytes) -> bytes:
    return varint(number << 3 | wire) + payload


def test_decode_protobuf_without_a_schema() -> None:
    inner = field(1, 0, varint(7)) + field(2, 2, varint(2) + b"hi")
    message = (
        field(1, 0, varint(150))
        + field(2, 2, varint(len(inner)) + inner)
        + field(2, 2, varint(3) + b"abc")
        + field(3, 1, struct.pack("<Q", 5))
        + field(4, 5, struct.pack("<I", 9))
        + field(5, 2, varint(2) + b"\xff\xfe")
    )
    assert grpc.decode_protobuf(message) == {
        "1": [150],
        "2": [{"1": [7], "2": ["hi"]}, "abc"],
        "3": [5],
        "4": [9],
        "5": ["0xfffe"],
    }


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x08", "truncated varint"),
        (field(1, 2, varint(5) + b"ab"), "truncated length-delimited"),
        (field(1, 3, b""), "wire type 3"),
        (b"\x00", "field number 0"),
        (b"\xff" * 11, "varint too long"),
    ],
)
def test_decode_protobuf_refuses_what_is_not_a_message(data: bytes, why: str) -> None:
    with pytest.raises(grpc.DecodeError, match=why):
        grpc.decode_protobuf(data)


def test_decode_protobuf_is_bounded() -> None:
    many = field(1, 0, varint(1)) * 50
    with pytest.raises(grpc.DecodeError, match="too many fields"):
        grpc.decode_protobuf(many, budget=[10])
    deep = b""
    for _ in range(40):
        deep = field(1, 2, varint(len(deep)) + deep) if deep else field(1, 0, varint(1))
    decoded = grpc.decode_protobuf(deep)  # past the depth cap the rest is shown as hex
    assert "0x" in repr(decoded)
