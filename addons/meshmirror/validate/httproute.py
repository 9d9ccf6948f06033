"""One VirtualService `http` rule: Istio `validateHTTPRoute` and the policies it carries."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence

from pydantic.alias_generators import to_snake

from meshmirror.config.base import Headers, Percent
from meshmirror.config.virtualservice import (
    CorsPolicy,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    HTTPRoute,
)
from meshmirror.diagnostics import Path
from meshmirror.golang import go_atoi_ok, go_quote, go_value
from meshmirror.validate.checker import Checker
from meshmirror.validate.destinations import (
    check_percent,
    validate_destination,
    validate_http_route_destinations,
    validate_mirror_policy,
)
from meshmirror.validate.headers import HEADER_NAME_RE, is_authority_header
from meshmirror.validate.matches import (
    regex_error,
    set_fields,
    validate_http_match_requests,
    validate_string_match,
)

_KB = 1024
_MB = 1024 * _KB

# Go's http.StatusText keys: retryOn accepts any status code Go knows by name.
_GO_STATUS_CODES = frozenset(
    [100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226]
    + [300, 301, 302, 303, 304, 305, 307, 308]
    + list(range(400, 419))
    + [421, 422, 423, 424, 425, 426, 428, 429, 431, 451]
    + [500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511]
)
_RETRY_ON = frozenset(
    "5xx gateway-error reset reset-before-request connect-failure retriable-4xx "
    "refused-stream retriable-status-codes retriable-headers envoy-ratelimited "
    "http3-post-connect-failure cancelled deadline-exceeded internal "
    "resource-exhausted unavailable".split()
)
_CORS_METHODS = frozenset("GET HEAD POST PUT PATCH DELETE CONNECT OPTIONS TRACE *".split())
_GRPC_STATUSES = frozenset(
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS "
    "PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE "
    "UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED".split()
)


def validate_http_route(c: Checker, p: Path, h: HTTPRoute, *, delegate: bool) -> None:
    """Istio `validateHTTPRoute`."""
    root = not delegate and h.delegate is not None
    _validate_http_route_conflict(c, p, h, delegate=delegate, root=root)
    validate_http_match_requests(c, p, h)
    c.header_operations(p + ("headers",), h.headers)
    if h.cors_policy is not None:
        _validate_cors(c, p + ("corsPolicy",), h.cors_policy)
    if h.fault is not None:
        _validate_fault(c, p + ("fault",), h.fault)
    if h.mirror_percent is not None:
        mp = p + ("mirrorPercent",)
        if h.mirror_percent > 100:
            # Istio's message states the value: no `(got ...)` repeats it.
            c.err(mp, f"mirror_percent must have a max value of 100 (it has {h.mirror_percent})")
        elif h.mirror_percent < 0:
            # Not reachable in Istio (uint32 in the proto); the CRD schema rejects it.
            c.err(mp, "mirrorPercent should be greater than or equal to 0", h.mirror_percent)
        c.warn(mp, 'using deprecated setting "mirrorPercent", use "mirrorPercentage" instead')
    if h.mirror_percentage is not None:
        check_percent(c, p + ("mirrorPercentage",), h.mirror_percentage, "mirror_percentage")
    if h.mirror is not None:
        validate_destination(c, p + ("mirror",), h.mirror)
    for i, m in enumerate(h.mirrors or []):
        validate_mirror_policy(c, p + ("mirrors", i), m)
    if h.redirect is not None:
        _validate_redirect(c, p + ("redirect",), h.redirect, h.match or ())
    if h.direct_response is not None:
        _validate_direct_response(c, p + ("directResponse",), h.direct_response)
    if h.retries is not None:
        _validate_retries(c, p + ("retries",), h.retries)
    if h.rewrite is not None:
        _validate_rewrite(c, p + ("rewrite",), h.rewrite)
    _validate_authority_rewrite(c, p, h.rewrite, h.headers)
    validate_http_route_destinations(c, p + ("route",), h.route or [])
    c.duration(p + ("timeout",), h.timeout)


def _validate_http_route_conflict(
    c: Checker, p: Path, h: HTTPRoute, *, delegate: bool, root: bool
) -> None:
    """Istio `validateHTTPRouteConflict`."""
    if root:
        # A root rule that delegates may only carry the delegate (and matches).
        if h.redirect is not None:
            c.err(p + ("redirect",), f"root HTTP route {h.name or ''} must not specify redirect")
        if h.route:
            c.err(p + ("route",), f"root HTTP route {h.name or ''} must not specify route")
        return
    if delegate and h.delegate is not None:
        c.err(p + ("delegate",), "delegate HTTP route cannot contain delegate")
    if h.redirect is not None:
        _action_conflicts(c, p, h, "redirect")
        if h.direct_response is not None:
            c.err(p, "HTTP route rule cannot contain both direct_response and redirect")
    elif h.direct_response is not None:
        _action_conflicts(c, p, h, "direct_response")
    elif not h.route:
        c.err(p, "HTTP route, redirect or direct_response is required")
    if h.mirror is not None and h.mirrors:
        c.err(p, "HTTP route cannot contain both mirror and mirrors")


def _action_conflicts(c: Checker, p: Path, h: HTTPRoute, action: str) -> None:
    """A redirect or direct_response answers the request itself: nothing may forward or alter it."""
    if h.route:
        c.err(p, f"HTTP route cannot contain both route and {action}")
    if h.fault is not None:
        c.err(p, f"HTTP route cannot contain both fault and {action}")
    if h.rewrite is not None:
        c.err(p, f"HTTP route rule cannot contain both rewrite and {action}")


def _validate_cors(c: Checker, p: Path, cors: CorsPolicy) -> None:
    for i, origin in enumerate(cors.allow_origins or []):
        op = p + ("allowOrigins", i)
        fields = set_fields(origin)
        match = next((getattr(origin, f) for f in fields), "") or ""
        if match == "":
            c.err(op, f"'{match}' is not a valid match type for CORS allow origins")
        else:
            validate_string_match(c, op, origin, "corsPolicy.allowOrigins")
    for i, method in enumerate(cors.allow_methods or []):
        if method not in _CORS_METHODS:
            c.err(
                p + ("allowMethods", i),
                f"{go_quote(method)} is not a supported HTTP method",
                method,
            )
    for field in ("allowHeaders", "exposeHeaders"):
        for i, name in enumerate(getattr(cors, to_snake(field)) or []):
            if not name:
                c.err(p + (field, i), "header name cannot be empty")
            elif name != "*" and HEADER_NAME_RE.match(name) is None:
                c.err(p + (field, i), f"header name {name} is not a valid header name", name)
    ns = c.duration(p + ("maxAge",), cors.max_age)
    if ns is not None and ns % 1_000_000_000:
        c.err(
            p + ("maxAge",), "max_age duration is accurate only to seconds precision", cors.max_age
        )


def _fault_percentage(c: Checker, path: Path, pct: Percent | None) -> None:
    """Istio `validatePercentage` (fault injection): 0, or 0.0001..100."""
    if pct is None:
        return
    v = pct.value
    if math.isnan(v) or v < 0.0 or v > 100.0 or (0.0 < v < 0.0001):
        c.err(
            path + ("value",),
            f"percentage {go_value(v)} is neither 0.0, nor in range [0.0001, 100.0]",
            v,
        )


def _http_status_error(status: int) -> str | None:
    # Istio's code tests `> 600` but says 200-599; Envoy rejects 600, so 600 is rejected here too.
    if status < 200 or status > 599:
        return f"HTTP status {status} is not in range 200-599"
    return None


def _validate_fault(c: Checker, p: Path, f: HTTPFaultInjection) -> None:
    if f.abort is None and f.delay is None:
        c.err(p, "HTTP fault injection must have an abort and/or a delay")
    if f.abort is not None:
        a, ap = f.abort, p + ("abort",)
        _fault_percentage(c, ap + ("percentage",), a.percentage)
        kinds = [
            k
            for k, v in (
                ("httpStatus", a.http_status),
                ("grpcStatus", a.grpc_status),
                ("http2Error", a.http2_error),
            )
            if v is not None
        ]
        if len(kinds) > 1:
            c.err(
                ap,
                f"only one of httpStatus, grpcStatus or http2Error may be set (found "
                f"{' and '.join(kinds)})",
            )
        if a.grpc_status is not None and a.grpc_status not in _GRPC_STATUSES:
            c.err(
                ap + ("grpcStatus",),
                f"gRPC status {go_quote(a.grpc_status)} is not supported. See "
                "https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of "
                "supported codes, for example 'NOT_FOUND'",
                a.grpc_status,
            )
        if a.http2_error is not None:
            c.err(ap + ("http2Error",), "HTTP/2 abort fault injection not supported yet")
        if a.http_status is not None:
            c.opt(ap + ("httpStatus",), _http_status_error(a.http_status), a.http_status)
        if not kinds:
            c.warn(ap, "abort configured, but error type not set")
    if f.delay is not None:
        d, dp = f.delay, p + ("delay",)
        _fault_percentage(c, dp + ("percentage",), d.percentage)
        if d.percent is not None and not 0 <= d.percent <= 100:
            c.err(dp + ("percent",), f"percentage {d.percent} is not in range 0..100", d.percent)
        if d.fixed_delay is not None and d.exponential_delay is not None:
            c.err(dp, "only one of fixedDelay or exponentialDelay may be set")
        c.duration(dp + ("fixedDelay",), d.fixed_delay)
        if d.exponential_delay is not None:
            c.duration(dp + ("exponentialDelay",), d.exponential_delay)
            c.err(dp + ("exponentialDelay",), "exponentialDelay not supported yet")


def _validate_redirect(
    c: Checker, p: Path, r: HTTPRedirect, matches: Sequence[HTTPMatchRequest | None]
) -> None:
    """Istio `validateHTTPRedirect`, reporting every problem instead of the first."""
    if r.uri and r.prefix_rewrite:
        c.err(p, "redirect may only specify one of uri or prefix_rewrite")
    if r.prefix_rewrite and any(
        m is not None and m.uri is not None and m.uri.prefix is None for m in matches
    ):
        # Envoy swaps the matched prefix: an exact or regex match has none to swap.
        c.err(
            p + ("prefixRewrite",),
            "redirect prefix_rewrite requires all URI matches to use prefix match type",
            r.prefix_rewrite,
        )
    if (
        not r.uri
        and not r.prefix_rewrite
        and not r.authority
        and r.port is None
        and r.derive_port is None
        and not r.scheme
    ):
        c.err(p, "redirect must specify URI, authority, scheme, or port")
    if r.port is not None and r.derive_port is not None:
        c.err(p, "only one of port or derivePort may be set")
    if r.redirect_code is not None and r.redirect_code != 0 and not 300 <= r.redirect_code <= 399:
        c.err(
            p + ("redirectCode",),
            f"{r.redirect_code} is not a valid redirect code, must be 3xx",
            r.redirect_code,
        )
    if r.scheme and r.scheme not in ("http", "https"):
        c.err(p + ("scheme",), 'invalid redirect scheme, must be "http" or "https"', r.scheme)
    if r.port is not None and r.port != 0:
        c.port(p + ("port",), r.port)


def _validate_direct_response(c: Checker, p: Path, d: HTTPDirectResponse) -> None:
    if d.body is not None:
        bp = p + ("body",)
        if d.body.string is not None and d.body.bytes is not None:
            c.err(bp, "only one of string or bytes may be set")
        size = len(d.body.string.encode("utf-8")) if d.body.string is not None else 0
        if d.body.bytes is not None:
            try:
                size = max(size, len(base64.b64decode(d.body.bytes, validate=True)))
            except (binascii.Error, ValueError):
                c.err(bp + ("bytes",), "bytes must be base64-encoded")
        if size > _MB:
            c.err(
                bp,
                "large direct_responses may impact control plane performance, must be less "
                "than 1MB",
                size,
            )
        elif size > 100 * _KB:
            c.warn(bp, "large direct_responses may impact control plane performance", size)
    c.opt(p + ("status",), _http_status_error(d.status), d.status)


def _validate_retries(c: Checker, p: Path, r: HTTPRetry) -> None:
    attempts = r.attempts or 0
    if attempts < 0:
        c.err(p + ("attempts",), "attempts cannot be negative", attempts)
    if attempts == 0 and (
        r.per_try_timeout is not None or r.retry_on or r.retry_remote_localities is not None
    ):
        c.err(p, "http retry policy configured when attempts are set to 0 (disabled)")
    c.duration(p + ("perTryTimeout",), r.per_try_timeout)
    if r.retry_on:
        # Split on "," only, as Istio does: " reset" (with a space) is not a policy.
        for token in r.retry_on.split(","):
            code = int(token) if go_atoi_ok(token) else 0
            if code not in _GO_STATUS_CODES and token not in _RETRY_ON:
                c.err(
                    p + ("retryOn",), f"{go_quote(token)} is not a valid retryOn policy", r.retry_on
                )
    c.duration(p + ("backoff",), r.backoff)


def _validate_rewrite(c: Checker, p: Path, r: HTTPRewrite) -> None:
    if r.uri and r.uri_regex_rewrite is not None:
        c.err(p, "rewrite may only contain one of URI or UriRegexRewrite")
    if not r.uri and r.uri_regex_rewrite is None and not r.authority:
        c.err(
            p,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of "
            "URI or UriRegexRewrite may be specified",
        )
    rr = r.uri_regex_rewrite
    if rr is not None:
        rp = p + ("uriRegexRewrite",)
        if not rr.match or not rr.rewrite:
            c.err(
                rp,
                "UriRegexRewrite has errors: UriRegexRewrite requires both Rewrite and Match "
                "fields to be specified",
            )
        else:
            error = regex_error(rr.match, "HTTPRewrite.UriRegexRewrite.Match")
            if error:
                c.err(rp + ("match",), f"UriRegexRewrite has errors: {error}", rr.match)


def _validate_authority_rewrite(
    c: Checker, p: Path, rewrite: HTTPRewrite | None, headers: Headers | None
) -> None:
    current = rewrite.authority if rewrite is not None and rewrite.authority else ""
    request = headers.request if headers is not None else None
    if request is None:
        return
    for op in ("set", "add"):
        for name, value in (getattr(request, op) or {}).items():
            if not is_authority_header(name):
                continue
            if current:
                c.err(
                    p + ("headers", "request", op, name),
                    f"authority header cannot be set multiple times: have {go_quote(current)}, "
                    f"attempting to set {go_quote(value)}",
                )
                return
            current = value
