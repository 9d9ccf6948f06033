"""What a comparison takes: the two responses (`Side`) and the settings (`CompareSettings`,
from the mirror_compare_* options), with the defaults those options start from. The contracts of
the comparison itself are in outcomes/compare.py."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meshmirror.outcomes.budget import COMPARE_STEPS

# Values that differ on every call, per hop or per connection. Globs (fnmatch) on lower-case names.
DEFAULT_IGNORE_HEADERS: tuple[str, ...] = (
    "date",
    "server",
    "x-request-id",
    "set-cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "age",
    "expires",
    "last-modified",
    "etag",
    "via",
    "x-envoy-*",
    "x-amzn-trace-id",
    "traceparent",
    "tracestate",
    "x-b3-*",
    "x-meshmirror-*",
)

# Headers whose values are secrets whether or not mirror_redact_headers names them.
SENSITIVE_HEADERS: frozenset[str] = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie"}
)
REDACTED = "[redacted]"  # what a masked header carries on the copy, and what examples show

# As mirror/shadow.py's DEFAULT_SUFFIX and MARKER_HEADER (outcomes/ does not import mirror/).
DEFAULT_HOST_SUFFIX = "-shadow"


@dataclass(frozen=True, slots=True)
class Side:
    """One response as the comparison sees it: body already content-decoded (or None: no body
    was available, e.g. a failed copy or a streamed primary)."""

    status: int
    headers: Sequence[tuple[str, str]]
    body: bytes | None
    body_truncated: bool = False  # only a prefix of the body is in `body`
    # Decoding stopped at the limit: `body` is the first bytes of a longer decoded body.
    over_limit: bool = False
    size: int | None = None  # the whole body's length, when `body` is only a prefix of it
    unavailable: str = ""  # why `body` is None, when it is known (e.g. cannot decode it)
    trailers: Sequence[tuple[str, str]] = ()  # HTTP/2 trailers (gRPC's status and message)


@dataclass(frozen=True, slots=True)
class CompareSettings:
    ignore_headers: tuple[str, ...] = DEFAULT_IGNORE_HEADERS
    ignore_json: tuple[str, ...] = ()
    max_body: int = 256 * 1024
    # Lower-case names of the headers the copy has stripped or masked (mirror_redact_headers).
    redact_headers: tuple[str, ...] = ()
    host_suffix: str = DEFAULT_HOST_SUFFIX  # mirror_host_suffix: the copy's Host suffix

    @classmethod
    def build(
        cls,
        extra_headers: Iterable[str] = (),
        ignore_json: Iterable[str] = (),
        max_body: int = 256 * 1024,
        redact_headers: Iterable[str] = (),
        host_suffix: str = DEFAULT_HOST_SUFFIX,
    ) -> CompareSettings:
        extra = tuple(h.strip().lower() for h in extra_headers if h.strip())
        pointers = tuple(p.strip() for p in ignore_json if p.strip())
        for p in pointers:
            parse_pointer(p)  # raises ValueError for a malformed pointer
        redact = tuple(dict.fromkeys(h.strip().lower() for h in redact_headers if h.strip()))
        return cls(DEFAULT_IGNORE_HEADERS + extra, pointers, max_body, redact, host_suffix)

    def sensitive_headers(self) -> frozenset[str]:
        """The lower-case names whose values never appear in a result."""
        return SENSITIVE_HEADERS | frozenset(self.redact_headers)


def steps_for(max_body: int) -> int:
    """The steps one comparison may take: COMPARE_STEPS, or 4 per byte of the largest body
    compared in full when that is more (walking two JSON trees of that size fits in it)."""
    return max(COMPARE_STEPS, 4 * max_body)


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """RFC 6901 JSON pointer -> tokens (`*` is kept as a wildcard token). Raises ValueError."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer must start with '/': {pointer!r}")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/"))
