"""gRPC on the wire, the one place meshmirror reads it: the content-type test, status codes and
their names, `grpc-message` percent-encoding, message framing, and protobuf messages decoded
without a schema (field numbers and wire types), for the comparison.

Pure and stdlib-only: the policies (local replies, fault aborts), the outcomes (counters,
metrics, report, comparison) and the mitm glue (streaming, the primary path) share it.
"""

from __future__ import annotations

import struct
from typing import Any

CONTENT_TYPE = "application/grpc"

#: The status codes' names (google.rpc.Code), by code; Istio's `grpcStatus` takes these names.
STATUS_NAMES = (
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS "
    "PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE "
    "UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED"
).split()
STATUS_CODES = {name: code for code, name in enumerate(STATUS_NAMES)}
OTHER = "other"  # any code past UNAUTHENTICATED: a bounded label for counters and metrics


def is_grpc(content_type: str) -> bool:
    """Envoy `Grpc::Common::hasGrpcContentType`: `application/grpc` or `application/grpc+...`
    (gRPC-Web, `application/grpc-web`, is not gRPC)."""
    if not content_type.startswith(CONTENT_TYPE):
        return False
    rest = content_type[len(CONTENT_TYPE) :]
    return rest == "" or rest[0] == "+"


def status_label(code: int) -> str:
    """`OK`, `UNAVAILABLE`, ...; `other` for a code gRPC does not define."""
    return STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else OTHER


def parse_status(value: bytes | str) -> int | None:
    """A `grpc-status` field's value; None when it is not a small decimal number."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    return int(text) if text.isdigit() and len(text) <= 3 else None


def percent_encode(value: bytes) -> bytes:
    """gRPC's Percent-Byte-Unencoded: printable ASCII (space included) except "%" stays."""
    return b"".join(bytes([c]) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c for c in value)


def percent_decode(value: bytes) -> str:
    """A `grpc-message` as text (invalid escapes are kept as they are)."""
    out = bytearray()
    i = 0
    while i < len(value):
        c = value[i]
        if c == 0x25 and i + 2 < len(value) and _is_hex(value[i + 1 : i + 3]):
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(two: bytes) -> bool:
    return len(two) == 2 and all(c in b"0123456789abcdefABCDEF" for c in two)


# --- messages ---------------------------------------------------------------------------------


class FramingError(ValueError):
    """The body is not a sequence of gRPC length-prefixed messages."""


def split_messages(body: bytes, *, limit: int = 1000) -> list[tuple[bool, bytes]]:
    """The (compressed?, payload) of each length-prefixed message in a gRPC body, at most
    `limit` of them. Raises FramingError on a truncated prefix or payload."""
    out: list[tuple[bool, bytes]] = []
    pos = 0
    while pos < len(body):
        if len(out) >= limit:
            raise FramingError(f"more than {limit} messages")
        if len(body) - pos < 5:
            raise FramingError("truncated message prefix")
        flag, size = struct.unpack_from(">BI", body, pos)
        pos += 5
        if pos + size > len(body):
            raise FramingError("truncated message")
        out.append((bool(flag & 1), body[pos : pos + size]))
        pos += size
    return out


# --- protobuf without a schema ----------------------------------------------------------------


class DecodeError(ValueError):
    """Not a protobuf message (as far as the wire format tells)."""


_MAX_DEPTH = 32


def decode_protobuf(
    data: bytes, *, depth: int = 0, budget: list[int] | None = None
) -> dict[str, Any]:
    """A protobuf message as nested dicts keyed by field number (`"1"`, `"2"`, ...), each value
    a list of the field's occurrences: varints and fixed-width numbers as ints, length-delimited
    fields as a nested message when they parse as one wholly (and are not printable text), else
    as text (UTF-8) or hex. Without the schema this is what the wire says, as
    `protoc --decode_raw` shows it. `budget` bounds the fields decoded in all (DecodeError past
    it). Raises DecodeError for bytes that are not a message."""
    if budget is None:
        budget = [100_000]
    if depth > _MAX_DEPTH:
        raise DecodeError("nested too deep")
    out: dict[str, list[Any]] = {}
    pos = 0
    end = len(data)
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise DecodeError("too many fields")
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise DecodeError("field number 0")
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise DecodeError("truncated fixed64")
            value = struct.unpack_from("<Q", data, pos)[0]
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                raise DecodeError("truncated fixed32")
            value = struct.unpack_from("<I", data, pos)[0]
            pos += 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise DecodeError("truncated length-delimited field")
            value = _bytes_value(data[pos : pos + size], depth, budget)
            pos += size
        else:
            raise DecodeError(f"wire type {wire}")
        out.setdefault(str(number), []).append(value)
    return out


def _bytes_value(raw: bytes, depth: int, budget: list[int]) -> Any:
    text = _text(raw)
    if text is not None:
        return text
    if raw:
        saved = budget[0]
        try:
            return decode_protobuf(raw, depth=depth + 1, budget=budget)
        except DecodeError:
            budget[0] = saved
    return "0x" + raw.hex()


def _text(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() or not text else None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise DecodeError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long")
