"""Request heads for mirror copies and the primary's attempts: HTTP/1.1 (`encode_head`) and
HTTP/2 (`request_headers`, the header list h2 frames). Hop-by-hop fields dropped (`HOP_BY_HOP`,
and whatever Connection names, never Host), the body's length computed from the body sent,
CR/LF (and over HTTP/2 NUL) in any part refused (`InvalidRequest`)."""

from __future__ import annotations

from collections.abc import Sequence

from meshmirror.mirror.failures import InvalidRequest
from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest

#: Fields of a received message that must not be forwarded: the connection-specific ones of
#: RFC 9110 7.6.1 (Connection itself, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding,
#: Upgrade), whether or not Connection names them, and the framing of the message as received.
#: Every message forwarded from here is re-framed with a whole body and no trailer section, so
#: the received Content-Length and the trailer fields announced by Trailer no longer apply.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
# Never forwarded over HTTP/2 (RFC 9113 8.2.2), besides Host, which becomes :authority.
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"http2-settings"}

Header = tuple[bytes, bytes]


def encode_head(request: MirrorRequest, endpoint: MirrorEndpoint, *, close: bool = False) -> bytes:
    """The request head to send. close=True adds `Connection: close` (one exchange per
    connection)."""
    method = request.method.encode("ascii")
    # mitmproxy exposes non-UTF-8 path bytes as surrogates; this restores them byte-exact.
    target = (request.target or "/").encode("utf-8", "surrogateescape")
    if b" " in target:
        raise InvalidRequest("target contains a space")
    headers = request.headers
    lows = [name.lower() for name, _ in headers]
    drop = HOP_BY_HOP
    if b"connection" in lows:
        extra = connection_tokens(lows, headers)
        if not extra <= HOP_BY_HOP:  # usually just "keep-alive"/"close": skip the union
            drop = drop | extra
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    has_host = False
    for low, (name, value) in zip(lows, headers, strict=True):
        if low in drop:
            continue
        if low == b"host":
            has_host = True
        out += (name, b": ", value, b"\r\n")
    if not has_host:
        # HTTP/1.1 requires Host; the caller normally supplies the shadow host already.
        host = endpoint.host
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        if ":" in host:
            host = f"[{host}]"
        if endpoint.port != (443 if endpoint.tls else 80):
            host = f"{host}:{endpoint.port}"
        out[4:4] = (b"Host", b": ", host.encode("ascii"), b"\r\n")
    body_len = len(request.body)
    if body_len or method in _BODY_METHODS:
        out += (b"Content-Length: ", str(body_len).encode("ascii"), b"\r\n")
    if close:
        out += (b"Connection", b": ", b"close", b"\r\n")
    out.append(b"\r\n")
    head = b"".join(out)
    # One cheap pass instead of checking every value: each CRLF we emitted is the only one allowed.
    lines = len(out) // 4 + 1  # request line, one line per header (4 parts), final CRLF
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise InvalidRequest(_find_bad_field(method, target, headers))
    return head


def without_hop_by_hop(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` without the hop-by-hop fields: `HOP_BY_HOP` and whatever Connection names,
    never Host. Order and case are kept.

    Meant for the received message, before the proxy adds fields of its own: as Envoy does, the
    Connection tokens are applied to what the client sent, so a client cannot name (and so
    strip) a field the proxy adds afterwards. The result has no Connection field left, so
    `encode_head` drops nothing more from it."""
    lows = [name.lower() for name, _ in headers]
    drop = hop_by_hop_names(lows, headers)
    return [field for low, field in zip(lows, headers, strict=True) if low not in drop]


def hop_by_hop_names(lows: list[bytes], headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The lower-case names `without_hop_by_hop` drops from `headers`, given their names
    lower-cased (`lows`): for a caller that walks the fields once itself."""
    if b"connection" in lows:
        return HOP_BY_HOP | connection_tokens(lows, headers)
    return HOP_BY_HOP


def connection_tokens(lows: Sequence[bytes], headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    """The lower-case field names the Connection fields list (`lows`: the names, lower-cased),
    never Host."""
    extra = {
        token.strip().lower()
        for low, (_, value) in zip(lows, headers, strict=True)
        if low == b"connection"
        for token in value.split(b",")
    }
    # Never let a Connection token strip Host: the copy would become unroutable.
    extra.discard(b"host")
    return extra


def _find_bad_field(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> str:
    # Names the offending field without echoing values (they may be secrets).
    if b"\r" in method or b"\n" in method:
        return "method contains CR/LF"
    if b"\r" in target or b"\n" in target:
        return "target contains CR/LF"
    for index, (name, value) in enumerate(headers):
        if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value:
            return f"header #{index} contains CR/LF"
    return "request head contains CR/LF"


def request_headers(request: MirrorRequest, scheme: bytes, authority: bytes) -> list[Header]:
    """The copy's header list as HTTP/2 carries it: pseudo-headers first, names lower-cased,
    connection-specific fields dropped (`HOP_BY_HOP` and whatever Connection names, as
    `encode_head` drops them); `te: trailers` kept for gRPC, which requires it.
    Raises InvalidRequest for a field HTTP/2 cannot carry (CR, LF or NUL in it)."""
    method = request.method.encode("ascii")
    target = (request.target or "/").encode("utf-8", "surrogateescape")
    out: list[Header] = [
        (b":method", method),
        (b":scheme", scheme),
        (b":authority", authority),
        (b":path", target),
    ]
    grpc = False
    lows = [name.lower() for name, _ in request.headers]
    drop = _NOT_FORWARDED
    if b"connection" in lows:
        # The client spoke HTTP/1.1: the fields its Connection names are hop-by-hop too.
        drop = drop | connection_tokens(lows, request.headers)
    for index, (low, (_, value)) in enumerate(zip(lows, request.headers, strict=True)):
        if low in drop:
            continue
        if b"\r" in value or b"\n" in value or b"\0" in value or not _is_token(low):
            raise InvalidRequest(f"header #{index} cannot be sent over HTTP/2")
        if low == b"content-type" and value.startswith(b"application/grpc"):
            grpc = True
        out.append((low, value))
    if b"\r" in target or b"\n" in target or b" " in target:
        raise InvalidRequest("target cannot be sent over HTTP/2")
    if grpc:
        out.append((b"te", b"trailers"))
    body = len(request.body)
    if body or request.method in ("POST", "PUT", "PATCH"):
        out.append((b"content-length", str(body).encode("ascii")))
    return out


def _is_token(name: bytes) -> bool:
    return bool(name) and not any(c <= 32 or c >= 127 or c == 58 for c in name)


def header_bytes(fields: list[Header] | tuple[Header, ...]) -> int:
    """A header list's size as HPACK counts it (RFC 7541 4.1): name + value + 32 per field."""
    return sum(len(n) + len(v) + 32 for n, v in fields)
