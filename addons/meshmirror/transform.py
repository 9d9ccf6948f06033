"""What a route does to a request and its response, compiled once and applied per request (pure).

Envoy's `finalizeRequestHeaders` order (spec 1.7, 4.4): the weighted destination's header
operations, then the route's, then the host rewrite, then the path rewrite. The mirror copies the
request after all of it, so applying these to the flow before the copy is taken gives the copy the
same path, headers and authority as the primary (plus the shadow suffix, added by shadow.py).

Also here, because they are data plus pure decisions: the primary-side policies that primary.py
acts on (redirect Location, direct response body, fault injection, timeout and retries).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from meshmirror.durations import parse_duration_ns
from meshmirror.match import compile_regex, strip_port
from meshmirror.model import (
    HeaderOperations,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    Percent,
)
from meshmirror.percent import MILLION

Header = tuple[bytes, bytes]

_AUTHORITY_NAMES = frozenset({"host", ":authority"})

# --- header operations ---


@dataclass(frozen=True, slots=True)
class HeaderOps:
    """Envoy header mutations as Istio sets them: `remove` first (Envoy's remove-before-add), then
    `set` (OVERWRITE_IF_EXISTS_OR_ADD), then `add` (APPEND_IF_EXISTS_OR_ADD). Names lower-case."""

    set: tuple[Header, ...] = ()
    add: tuple[Header, ...] = ()
    remove: frozenset[bytes] = frozenset()

    def apply(self, fields: Iterable[Header]) -> list[Header]:
        drop = self.remove | {name for name, _ in self.set}
        out = [(n, v) for n, v in fields if n.lower() not in drop] if drop else list(fields)
        out.extend(self.set)
        out.extend(self.add)
        return out

    def describe(self) -> str:
        parts = [f"set {n.decode()}" for n, _ in self.set]
        parts += [f"add {n.decode()}" for n, _ in self.add]
        parts += [f"remove {n.decode()}" for n in sorted(self.remove)]
        return ", ".join(parts)


def _header_value(value: str) -> bytes:
    # Envoy reads values as format strings: "%%" is a literal "%". Other %COMMAND% operators are
    # not evaluated by meshmirror; they pass through literally.
    return value.replace("%%", "%").encode("utf-8", "surrogateescape")


def compile_header_ops(ops: HeaderOperations | None) -> tuple[HeaderOps | None, str | None]:
    """Istio `TranslateHeadersOperations` for one direction: (operations, authority). `host` and
    `:authority` in set/add become the authority rewrite (set wins over add); other pseudo-headers
    are dropped, as Istio drops them."""
    if ops is None:
        return None, None
    authority: str | None = None
    sets: list[Header] = []
    adds: list[Header] = []
    for name, value in (ops.add or {}).items():
        key = name.lower()
        if key in _AUTHORITY_NAMES:
            authority = value
        elif key and not key.startswith(":"):
            adds.append((key.encode(), _header_value(value)))
    for name, value in (ops.set or {}).items():
        key = name.lower()
        if key in _AUTHORITY_NAMES:
            authority = value
        elif key and not key.startswith(":"):
            sets.append((key.encode(), _header_value(value)))
    remove = frozenset(
        n.lower().encode() for n in ops.remove or () if n and n.lower() not in _AUTHORITY_NAMES
    )
    if not (sets or adds or remove):
        return None, authority
    return HeaderOps(tuple(sets), tuple(adds), remove), authority


def apply_header_ops(fields: Iterable[Header], ops: Sequence[HeaderOps | None]) -> list[Header]:
    """Apply each set of operations in order (destination's first, then the route's)."""
    out = list(fields)
    for op in ops:
        if op is not None:
            out = op.apply(out)
    return out


# --- path rewrite ---


def split_query(path: str) -> tuple[str, str]:
    """`/a/b?x=1` -> (`/a/b`, `?x=1`)."""
    i = path.find("?")
    return (path, "") if i == -1 else (path[:i], path[i:])


def _parse_substitution(text: str) -> tuple[str | int, ...]:
    """RE2's rewrite string: `\\0`..`\\9` are groups, `\\\\` a backslash. Raises ValueError."""
    parts: list[str | int] = []
    buf: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text):
                raise ValueError(f"invalid rewrite pattern {text!r}: trailing backslash")
            n = text[i + 1]
            if n.isdigit():
                if buf:
                    parts.append("".join(buf))
                    buf = []
                parts.append(int(n))
            elif n == "\\":
                buf.append("\\")
            else:
                raise ValueError(f"invalid rewrite pattern {text!r}: bad escape \\{n}")
            i += 2
            continue
        buf.append(c)
        i += 1
    if buf:
        parts.append("".join(buf))
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class PathRewrite:
    """Envoy `prefix_rewrite` (kind prefix) or `regex_rewrite` (kind regex). The query is kept.

    `matched_prefix` is the route's uri prefix for a prefix match; None when the route matched
    the whole path (exact or regex match), so the replacement takes the whole path."""

    kind: Literal["prefix", "regex"]
    replacement: str
    matched_prefix: str | None = None
    pattern: str = ""
    _regex: Any = field(default=None, compare=False, repr=False)
    _parts: tuple[str | int, ...] = field(default=(), compare=False, repr=False)

    def apply(self, path: str) -> str:
        just_path, query = split_query(path)
        if self.kind == "prefix":
            prefix = self.matched_prefix
            if prefix is None:
                return self.replacement + query
            if len(prefix) > len(just_path):  # the prefix reached into the query
                return self.replacement + path[len(prefix) :]
            return self.replacement + just_path[len(prefix) :] + query
        parts = self._parts

        def expand(m: Any) -> str:
            return "".join(p if isinstance(p, str) else (m.group(p) or "") for p in parts)

        return str(self._regex.sub(expand, just_path)) + query

    def to_envoy(self) -> dict[str, Any]:
        if self.kind == "prefix":
            return {"prefix_rewrite": self.replacement}
        return {
            "regex_rewrite": {
                "pattern": {"regex": self.pattern},
                "substitution": self.replacement,
            }
        }


def compile_path_rewrite(
    rewrite: HTTPRewrite | None, path_kind: str, path_value: str
) -> PathRewrite | None:
    """`rewrite.uri` / `rewrite.uriRegexRewrite` for a route whose path matcher is `path_kind`
    (`prefix`, `path`, `safe_regex`). Raises ValueError / re2.error for a bad regex rewrite."""
    if rewrite is None:
        return None
    rr = rewrite.uri_regex_rewrite
    if rr is not None and rr.match and rr.rewrite is not None:
        return PathRewrite(
            "regex",
            rr.rewrite,
            pattern=rr.match,
            _regex=compile_regex(rr.match),
            _parts=_parse_substitution(rr.rewrite),
        )
    if rewrite.uri:
        prefix = path_value if path_kind == "prefix" else None
        return PathRewrite("prefix", rewrite.uri, matched_prefix=prefix)
    return None


def rewrite_request(
    path: str,
    fields: Iterable[Header],
    authority: str,
    *,
    ops: Sequence[HeaderOps | None] = (),
    authority_rewrite: str | None = None,
    path_rewrite: PathRewrite | None = None,
) -> tuple[str, list[Header], str]:
    """(path, header fields, authority) after header operations, host rewrite and path rewrite."""
    out = apply_header_ops(fields, ops)
    if authority_rewrite:
        authority = authority_rewrite
    if path_rewrite is not None:
        path = path_rewrite.apply(path)
    return path, out, authority


# --- redirect and direct response ---


_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class RedirectPolicy:
    """Envoy RedirectAction as Istio's `ApplyRedirect` builds it."""

    status: int = 301
    path: str | None = None
    authority: str | None = None
    scheme: str | None = None
    port: int | None = None  # port_redirect (explicit, or the listener port for FROM_REQUEST_PORT)

    def location(self, scheme: str, authority: str, path: str) -> str:
        """The Location header for a request (scheme, Host, path with query)."""
        new_scheme = self.scheme or scheme
        host = self.authority or authority
        if self.port:
            host = f"{strip_port(host)}:{self.port}"
        elif new_scheme != scheme:
            # Envoy drops the original scheme's default port when the scheme changes.
            name, _, port = host.rpartition(":")
            if name and ":" not in name and port == str(_DEFAULT_PORTS.get(scheme)):
                host = name
        new_path = path
        if self.path is not None:
            # A query in the redirect path replaces the request's; otherwise the query is kept.
            new_path = self.path if "?" in self.path else self.path + split_query(path)[1]
        return f"{new_scheme}://{host}{new_path}"


def compile_redirect(rd: HTTPRedirect, listener_port: int) -> RedirectPolicy:
    port = rd.port or None
    if port is None and rd.derive_port == "FROM_REQUEST_PORT":
        port = listener_port
    return RedirectPolicy(
        status=rd.redirect_code or 301,
        path=rd.uri or None,
        authority=rd.authority or None,
        scheme=rd.scheme or None,
        port=port,
    )


@dataclass(frozen=True, slots=True)
class DirectResponsePolicy:
    status: int
    body: bytes = b""


def compile_direct_response(dr: HTTPDirectResponse) -> DirectResponsePolicy:
    body = b""
    if dr.body is not None:
        if dr.body.string is not None:
            body = dr.body.string.encode("utf-8")
        elif dr.body.bytes is not None:
            try:
                body = base64.b64decode(dr.body.bytes, validate=True)
            except (binascii.Error, ValueError):
                body = b""  # validation reports it as an error first
    return DirectResponsePolicy(dr.status, body)


# --- fault injection ---


@dataclass(frozen=True, slots=True)
class FaultPolicy:
    """Envoy's fault filter as Istio configures it: delay first, then abort; each sampled per
    request with probability numerator / MILLION."""

    delay: float = 0.0  # seconds; 0 = no delay
    delay_per_million: int = 0
    abort_status: int | None = None  # None = no (HTTP) abort
    abort_per_million: int = 0

    def sample_delay(self, rand: int) -> float:
        """`rand` uniform in [0, MILLION)."""
        return self.delay if self.delay > 0 and rand < self.delay_per_million else 0.0

    def sample_abort(self, rand: int) -> int | None:
        if self.abort_status is None or rand >= self.abort_per_million:
            return None
        return self.abort_status


def _per_million(percentage: Percent | None, percent: int | None = None) -> int:
    """Istio `translatePercentToFractionalPercent`; unset -> 100%."""
    if percentage is not None:
        return max(0, min(MILLION, int(percentage.value * 10000)))
    if percent is not None:
        return max(0, min(MILLION, percent * 10000))
    return MILLION


def compile_fault(f: HTTPFaultInjection | None) -> FaultPolicy | None:
    if f is None:
        return None
    delay, delay_pm = 0.0, 0
    if f.delay is not None and f.delay.fixed_delay:
        try:
            delay = parse_duration_ns(f.delay.fixed_delay) / 1e9
        except ValueError:
            delay = 0.0
        delay_pm = _per_million(f.delay.percentage, f.delay.percent)
    status: int | None = None
    abort_pm = 0
    if f.abort is not None and f.abort.http_status:
        status = f.abort.http_status
        abort_pm = _per_million(f.abort.percentage)
    if delay <= 0 and status is None:
        return None  # only unserved kinds (grpcStatus, exponentialDelay): nothing to do
    return FaultPolicy(delay, delay_pm, status, abort_pm)


# --- timeout and retries ---

# Istio's DefaultPolicy when `retryOn` is unset in a `retries` block.
DEFAULT_RETRY_ON = frozenset(
    {"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"}
)
DEFAULT_RETRIABLE_CODES = frozenset({503})
_GRPC_CODES = {
    "cancelled": "1",
    "deadline-exceeded": "4",
    "resource-exhausted": "8",
    "internal": "13",
    "unavailable": "14",
}
# Why an attempt produced no response.
Failure = Literal["connect-failure", "reset", "timeout"]


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    """Route timeout plus retry policy for the primary. `timeout` 0 = none (Istio's default);
    `retries` = extra attempts (Envoy `num_retries`); `per_try_timeout` 0 = only the global."""

    timeout: float = 0.0
    retries: int = 0
    per_try_timeout: float = 0.0
    retry_on: frozenset[str] = frozenset()
    retriable_codes: frozenset[int] = frozenset()
    backoff: float = 0.025

    def retry_for_status(self, status: int, grpc_status: str | None = None) -> bool:
        on = self.retry_on
        if "5xx" in on and status >= 500:
            return True
        if "gateway-error" in on and status in (502, 503, 504):
            return True
        if "retriable-4xx" in on and status == 409:
            return True
        if "retriable-status-codes" in on and status in self.retriable_codes:
            return True
        if grpc_status is not None:
            for token, code in _GRPC_CODES.items():
                if token in on and grpc_status == code:
                    return True
        return False

    def retry_for_failure(self, failure: Failure) -> bool:
        on = self.retry_on
        if failure == "timeout":  # Envoy retries a per-try timeout under 5xx / gateway-error
            return bool(on & {"5xx", "gateway-error"})
        if failure == "connect-failure":
            return bool(on & {"connect-failure", "5xx", "gateway-error", "reset"})
        return bool(on & {"5xx", "gateway-error", "reset"})


def _seconds(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return parse_duration_ns(text) / 1e9
    except ValueError:
        return 0.0


def parse_retry_on(text: str | None) -> tuple[frozenset[str], frozenset[int]]:
    """Istio `parseRetryOn`: numeric tokens become retriable status codes (and imply the
    `retriable-status-codes` policy); unset -> Istio's default policy."""
    if not text:
        return DEFAULT_RETRY_ON, DEFAULT_RETRIABLE_CODES
    tokens: set[str] = set()
    codes: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part.isdigit():
            codes.add(int(part))
        else:
            tokens.add(part)
    if codes:
        tokens.add("retriable-status-codes")
    return frozenset(tokens), frozenset(codes)


def compile_upstream(timeout: str | None, retries: HTTPRetry | None) -> UpstreamPolicy | None:
    """None when neither is set: the primary then goes through mitmproxy untouched. meshmirror
    does not apply Istio's mesh-default retry policy to routes without `retries`."""
    total = _seconds(timeout)
    attempts = retries.attempts or 0 if retries is not None else 0
    if total <= 0 and attempts <= 0:
        return None
    if attempts <= 0 or retries is None:
        return UpstreamPolicy(timeout=total)
    on, codes = parse_retry_on(retries.retry_on)
    return UpstreamPolicy(
        timeout=total,
        retries=attempts,
        per_try_timeout=_seconds(retries.per_try_timeout),
        retry_on=on,
        retriable_codes=codes,
        backoff=_seconds(retries.backoff) or 0.025,
    )
