"""One comparison as a unit of work: the two responses as received, decoded and compared.

`CompareJob` holds what a comparison needs and nothing of mitmproxy (plain data, so it can be
pickled to the comparison process: outcomes/comparer.py); `run_job` decodes both bodies
within the limit (outcomes/decoding.py) and compares them within the budget
(outcomes/compare.py). Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshmirror.outcomes.compare import Comparison, compare_responses, not_compared
from meshmirror.outcomes.compare_inputs import CompareSettings, Side
from meshmirror.outcomes.decoding import decode_body


@dataclass(frozen=True, slots=True)
class RawSide:
    """A response as it came: header fields and the body still content-encoded (None: no body
    was available). `truncated`: `body` is only its first bytes; `size`: the whole body's
    length then, when known."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    truncated: bool = False
    size: int | None = None
    trailers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class CompareJob:
    primary: RawSide
    shadow: RawSide
    settings: CompareSettings
    secrets: tuple[str, ...] = ()

    def size(self) -> int:
        """The bytes of both bodies: what the job costs to hand over and to hold."""
        return len(self.primary.body or b"") + len(self.shadow.body or b"")


def raw_side(
    status: int,
    headers: tuple[tuple[str, str], ...],
    body: bytes | None,
    limit: int,
    trailers: tuple[tuple[str, str], ...] = (),
) -> RawSide:
    """A whole response as a comparison needs it, with no more of its body than that: an
    identity body longer than `limit` is compared by its size and first bytes, and an encoded
    one decodes to more than `limit` from far fewer bytes than this keeps."""
    if body is None:
        return RawSide(status, headers, None, trailers=trailers)
    keep = limit
    if content_coding(headers):
        # Deflate, brotli and zstd expand incompressible data by well under 1/8 (plus framing).
        keep = limit + limit // 8 + 4096
    if len(body) <= keep:
        return RawSide(status, headers, body, trailers=trailers)
    return RawSide(status, headers, body[:keep], truncated=True, size=len(body), trailers=trailers)


def content_coding(headers: Sequence[tuple[str, str]]) -> str:
    """The Content-Encoding of a response (several fields joined as one list)."""
    return ", ".join(v for n, v in headers if n.lower() == "content-encoding").strip()


def decoded_side(raw: RawSide, limit: int) -> Side:
    """`raw` with its body decoded, at most `limit` bytes of it."""
    if raw.body is None:
        return Side(raw.status, raw.headers, None, trailers=raw.trailers)
    coding = content_coding(raw.headers)
    if not coding:
        return Side(
            raw.status, raw.headers, raw.body, raw.truncated, size=raw.size, trailers=raw.trailers
        )
    decoded = decode_body(raw.body, coding, limit)
    if decoded.body is None:
        return Side(raw.status, raw.headers, None, unavailable=decoded.error, trailers=raw.trailers)
    return Side(
        raw.status,
        raw.headers,
        decoded.body,
        raw.truncated and not decoded.over,
        over_limit=decoded.over,
        trailers=raw.trailers,
    )


def run_job(job: CompareJob) -> Comparison:
    """Decode and compare; never raises (an unexpected error is a comparison not made)."""
    try:
        limit = job.settings.max_body
        primary = decoded_side(job.primary, limit)
        shadow = decoded_side(job.shadow, limit)
        return compare_responses(primary, shadow, job.settings, job.secrets)
    except Exception as e:  # a bug must cost one comparison, not the process doing them
        return not_compared("error", detail=f"{type(e).__name__}: {e}")
