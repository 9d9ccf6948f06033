"""How a mirrored copy differs from the request the primary gets (pure functions).

Envoy's shadow writer appends `-shadow` to the host part of Host/:authority, before any port
(`httpbin:8000` -> `httpbin-shadow:8000`), and appends its own address (the machine's, see
`host_address`) to X-Forwarded-For. We keep X-Request-Id so primary and copy correlate.
"""

from __future__ import annotations

import fcntl
import functools
import random
import socket
import struct
from collections.abc import Iterable

from meshmirror.mirror.request_head import hop_by_hop_names

Header = tuple[bytes, bytes]

DEFAULT_SUFFIX = "-shadow"
# Every copy carries this header; a request that already has it is never mirrored again, so two
# meshmirror instances (or a mirror that routes back to us) cannot loop.
MARKER_HEADER = b"x-meshmirror-shadow"
MARKER_VALUE = b"1"
REDACTED = b"[redacted]"


def parse_redactions(entries: Iterable[str]) -> dict[bytes, bytes | None]:
    """`Authorization` strips the header from copies; `Cookie=mask` keeps it with a masked value.

    Returns lower-case header name -> replacement value (None = strip). Raises ValueError."""
    out: dict[bytes, bytes | None] = {}
    for entry in entries:
        name, sep, mode = entry.strip().partition("=")
        name = name.strip()
        if not name or any(c in name for c in " :\t"):
            raise ValueError(f"invalid header name in mirror_redact_headers: {entry!r}")
        mode = mode.strip().lower() if sep else "strip"
        if mode not in ("strip", "mask"):
            raise ValueError(f"mirror_redact_headers: {entry!r}: mode must be strip or mask")
        out[name.lower().encode()] = None if mode == "strip" else REDACTED
    return out


def is_shadow_host(host: str, suffix: str) -> bool:
    """True when `host` without its `:port` ends with the shadow suffix, in any case: a Host
    that `shadow_host` made (a copy of a copy). Never true for an empty suffix."""
    if not suffix:
        return False
    name, colon, port = host.rpartition(":")
    # A name with a colon is an IPv6 address, whose port follows its brackets (and the suffix
    # shadow_host put after them: `[::1]-shadow:8000`).
    if not (colon and port.isdigit() and name and (":" not in name or name.startswith("["))):
        name = host
    return name.lower().endswith(suffix.lower())


def shadow_host(host: str, suffix: str = DEFAULT_SUFFIX) -> str:
    """Insert `suffix` after the host part, before any `:port` (IPv6 keeps its brackets)."""
    if not suffix:
        return host
    if host.startswith("["):
        end = host.find("]")
        if end != -1:
            return host[: end + 1] + suffix + host[end + 1 :]
        return host + suffix
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and name and ":" not in name:
        return f"{name}{suffix}:{port}"
    return host + suffix


# Request ids need to be unique, not unguessable (Envoy draws them from its ordinary random
# generator too): a seeded-from-the-OS Mersenne Twister makes one in a third of uuid4's time,
# and one is made for every routed request that comes without.
_ids = random.Random()


def new_request_id() -> str:
    """A random (version 4) UUID in its usual text form, as Envoy's x-request-id."""
    n = _ids.getrandbits(128) & ~(0xF000 << 64) | (0x4000 << 64)  # version 4
    n = n & ~(0xC000 << 48) | (0x8000 << 48)  # RFC 4122 variant
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_SIOCGIFADDR = 0x8915


@functools.cache
def host_address() -> str:
    """The machine's own IPv4 address, as Envoy's local info picks it (the first address of an
    interface that is neither loopback nor link-local; 127.0.0.1 when there is none): what
    Envoy appends to a copy's X-Forwarded-For, and to a primary's for a client on 127.0.0.1."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return "127.0.0.1"
    for name in names:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                packed = fcntl.ioctl(
                    s.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode())
                )
        except OSError:
            continue  # no IPv4 address on it
        address = socket.inet_ntoa(packed[20:24])
        if not address.startswith(("127.", "169.254.")):
            return address
    return "127.0.0.1"


def mirror_headers(
    fields: Iterable[Header],
    *,
    shadow: str,
    forwarded_for: str | None,
    request_id: str | None,
    redact: dict[bytes, bytes | None] | None = None,
) -> list[Header]:
    """The copy's header list: Host replaced by the shadow host (first, as HTTP/1.1 wants),
    X-Forwarded-For joined with "," and `forwarded_for` appended (Envoy's shadow appends its
    own address, `host_address`), X-Request-Id added when given and absent.
    Multiple Cookie headers (HTTP/2 splits them) are joined with "; " as HTTP/1.1 requires.
    Headers named in `redact` are stripped or masked; the loop-guard marker is always added.

    The client's hop-by-hop fields (and whatever its Connection names) are dropped first, before
    any field of ours is added, as Envoy does: the marker, X-Forwarded-For and X-Request-Id
    always reach the mirror, whatever Connection says. The result has no Connection field."""
    out: list[Header] = [(b"host", shadow.encode("utf-8", "surrogateescape"))]
    fields = list(fields)
    lows = [name.lower() for name, _ in fields]
    drop = hop_by_hop_names(lows, fields)
    xff_index = -1
    cookies: list[bytes] = []
    has_request_id = False
    for lname, (name, value) in zip(lows, fields, strict=True):
        if lname in drop or lname == b"host":
            continue
        if lname == b"cookie":
            cookies.append(value)
            continue
        if lname == b"x-forwarded-for":
            if xff_index == -1:
                xff_index = len(out)
                out.append((name, value))
            else:  # fold repeated XFF headers into the first one, in order, as Envoy does
                n, v = out[xff_index]
                out[xff_index] = (n, v + b"," + value)
            continue
        if lname == b"x-request-id":
            has_request_id = True
        if redact and lname in redact:
            masked = redact[lname]
            if masked is not None:
                out.append((name, masked))
            continue
        out.append((name, value))
    if cookies:
        if redact and b"cookie" in redact:
            if redact[b"cookie"] is not None:
                out.append((b"cookie", REDACTED))
        else:
            out.append((b"cookie", b"; ".join(cookies)))
    if forwarded_for:
        ip = forwarded_for.encode()
        if xff_index == -1:
            out.append((b"x-forwarded-for", ip))
        else:
            n, v = out[xff_index]
            out[xff_index] = (n, v + b"," + ip if v else ip)
    if request_id and not has_request_id:
        out.append((b"x-request-id", request_id.encode()))
    out.append((MARKER_HEADER, MARKER_VALUE))
    return out
