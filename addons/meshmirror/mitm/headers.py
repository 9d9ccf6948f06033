"""One walk over a request's header fields: everything the request path needs from them.

Route matching wants the headers by lower-case name with repeated values joined by "," (as
Envoy joins them); the loop guard wants to know whether the request is itself a copy (our
marker header) or an upgrade; virtual-host selection wants the Host; tracing and sampling want
the first X-Request-Id. Each `name in headers` or `headers.get(name)` would be a scan of its own,
so all of it comes out of this one pass. The copy's own header list is built later, once, after
the route's rewrites (`mirror.shadow.mirror_headers`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from meshmirror.mirror.request_head import connection_tokens
from meshmirror.mirror.shadow import MARKER_HEADER

_MARKER = MARKER_HEADER.decode()


class RequestHeaders(NamedTuple):
    # lower-case name -> values joined with ","; empty unless asked for (`index=True`)
    joined: dict[str, str]
    host: str | None  # the Host value(s), as mitmproxy's `headers.get("Host")` gives them
    marker: bool  # carries the loop-guard marker: the request is itself a copy
    upgrade: bool
    request_id: str | None  # the first X-Request-Id value, as sent
    host_fields: int  # how many Host fields the request has (more than one: no copy is made)
    connection: bool  # has a Connection field


# The names the request path needs when it does not match on headers, by length: most
# fields are passed over without being lowered or decoded.
_NEEDED = {len(name): name for name in (b"host", b"x-request-id", b"upgrade", b"connection")}
_MARKER_BYTES = _MARKER.encode()


def scan_request_headers(
    fields: Iterable[tuple[bytes, bytes]], *, index: bool = True
) -> RequestHeaders:
    """Decode and index the raw fields as mitmproxy decodes them (UTF-8, surrogate escapes).
    With `index=False` (no route matches on headers) only the fields the request path needs
    are decoded, and `joined` stays empty."""
    if not index:
        return _scan_needed(fields)
    joined: dict[str, str] = {}
    host = request_id = None
    marker = upgrade = False
    host_fields = 0
    for raw_name, raw_value in fields:
        name = raw_name.decode("utf-8", "surrogateescape").lower()
        value = raw_value.decode("utf-8", "surrogateescape")
        prev = joined.get(name)
        if prev is not None:
            joined[name] = f"{prev},{value}"
            if name == "host":  # as mitmproxy's `Request.host_header` reads repeated Hosts
                host = f"{host}, {value}"
                host_fields += 1
            continue
        joined[name] = value
        if name == "host":
            host = value
            host_fields = 1
        elif name == "x-request-id":
            request_id = value
        elif name == "upgrade":
            upgrade = True
        elif name == _MARKER:
            marker = True
    return RequestHeaders(
        joined, host, marker, upgrade, request_id, host_fields, "connection" in joined
    )


def _scan_needed(fields: Iterable[tuple[bytes, bytes]]) -> RequestHeaders:
    host = request_id = None
    marker = upgrade = connection = False
    host_fields = 0
    needed = _NEEDED
    marker_length = len(_MARKER_BYTES)
    for raw_name, raw_value in fields:
        n = len(raw_name)
        if n == marker_length and raw_name.lower() == _MARKER_BYTES:
            marker = True
            continue
        want = needed.get(n)
        if want is None or raw_name.lower() != want:
            continue
        if want == b"host":
            value = raw_value.decode("utf-8", "surrogateescape")
            host = value if host is None else f"{host}, {value}"
            host_fields += 1
        elif want == b"x-request-id":
            if request_id is None:
                request_id = raw_value.decode("utf-8", "surrogateescape")
        elif want == b"upgrade":
            upgrade = True
        else:
            connection = True
    return RequestHeaders({}, host, marker, upgrade, request_id, host_fields, connection)


Fields = tuple[tuple[bytes, bytes], ...]


def without_connection_token(fields: Fields, token: bytes) -> Fields:
    """`fields` with `token` (lower case) taken out of every Connection field, and a Connection
    field left empty by that dropped: a header the proxy adds itself must not be named
    hop-by-hop by the client, or the next hop would remove it."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in fields:
        if name.lower() == b"connection":
            kept = [t for t in value.split(b",") if t.strip().lower() != token]
            if not any(t.strip() for t in kept):
                continue
            value = b",".join(kept).strip()
        out.append((name, value))
    return tuple(out)


def for_http2_upstream(fields: Fields) -> Fields:
    """An HTTP/1.1 request's fields as they may go on over HTTP/2 (RFC 9110 7.6.1, RFC 9113
    8.2.2): without Connection and the fields it names (never Host), and without a TE other
    than `te: trailers` (which gRPC needs, named in Connection or not). mitmproxy drops only
    Connection and the fixed connection-specific fields when it converts a request."""
    lows = [name.lower() for name, _ in fields]
    named = (connection_tokens(lows, fields) - {b"te", b""}) | {b"connection"}
    return tuple(
        (name, value)
        for low, (name, value) in zip(lows, fields, strict=True)
        if low not in named and (low != b"te" or value.strip().lower() == b"trailers")
    )
