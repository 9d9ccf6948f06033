"""`corsPolicy`, compiled once, decided per request as Envoy's CORS filter does under Istio.

Istio (`TranslateCORSPolicy`) gives each route with a `corsPolicy` a per-route CORS filter
config: `allowOrigins` as Envoy string matchers (else the deprecated `allowOrigin` as exact
ones), methods, headers and expose headers joined with ",", `maxAge` in whole seconds,
`allowCredentials`, always enabled, and `forward_not_matching_preflights` false only for
`unmatchedPreflights: IGNORE`. The filter sits after the fault filter and before the router:

- A preflight (OPTIONS with a non-empty Origin and Access-Control-Request-Method) is answered
  200 by the proxy itself: never routed, never mirrored. One from an origin that is not
  allowed is forwarded instead, unless `unmatchedPreflights: IGNORE` (then it is answered
  without Access-Control-Allow-Origin).
- Any other request with an allowed Origin gets Access-Control-Allow-Origin (the request's
  origin), -Allow-Credentials and -Expose-Headers on its response, whatever the response.

Pure: the mitm glue (mitm/primary.py) reads the request's headers and applies the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meshmirror.config.base import StringMatch
from meshmirror.config.virtualservice import CorsPolicy
from meshmirror.golang import parse_duration_ns
from meshmirror.regex import compile_regex

Header = tuple[bytes, bytes]

ALLOW_ORIGIN = b"access-control-allow-origin"
ALLOW_CREDENTIALS = b"access-control-allow-credentials"
ALLOW_METHODS = b"access-control-allow-methods"
ALLOW_HEADERS = b"access-control-allow-headers"
EXPOSE_HEADERS = b"access-control-expose-headers"
MAX_AGE = b"access-control-max-age"


@dataclass(frozen=True, slots=True)
class OriginMatcher:
    """An Envoy StringMatcher: case-sensitive exact or prefix, or an RE2 full match."""

    kind: Literal["exact", "prefix", "regex"]
    value: str
    _regex: Any = field(default=None, compare=False, repr=False)

    def matches(self, origin: str) -> bool:
        if self.kind == "exact":
            return origin == self.value
        if self.kind == "prefix":
            return origin.startswith(self.value)
        return self._regex.fullmatch(origin) is not None

    def to_envoy(self) -> dict[str, Any]:
        if self.kind == "regex":
            return {"safe_regex": {"regex": self.value}}
        return {self.kind: self.value}


@dataclass(frozen=True, slots=True)
class CrossOriginPolicy:
    """One route's CORS filter config. Empty strings are Envoy's unset fields."""

    allow_origins: tuple[OriginMatcher, ...] = ()
    allow_methods: str = ""
    allow_headers: str = ""
    expose_headers: str = ""
    max_age: str = ""
    allow_credentials: bool | None = None
    forward_not_matching_preflights: bool = True

    def origin_allowed(self, origin: str) -> bool:
        # Envoy also accepts any origin when a matcher matches the literal "*".
        return any(m.matches("*") or m.matches(origin) for m in self.allow_origins)

    def preflight_answer(self, method: str, headers: Mapping[str, str]) -> list[Header] | None:
        """The headers of the proxy's 200 answer when this request is a preflight the filter
        answers; None when the request goes on (not a preflight, or a preflight from an origin
        not allowed, forwarded). `headers`: lower-case names, values of repeated fields joined."""
        origin = headers.get("origin", "")
        request_method = headers.get("access-control-request-method", "")
        if not origin or method != "OPTIONS" or not request_method:
            return None
        allowed = self.origin_allowed(origin)
        if not allowed and self.forward_not_matching_preflights:
            return None
        out: list[Header] = []
        if allowed:
            out.append((ALLOW_ORIGIN, _b(origin)))
        if self.allow_credentials:
            out.append((ALLOW_CREDENTIALS, b"true"))
        if self.allow_methods:
            methods = request_method if self.allow_methods == "*" else self.allow_methods
            out.append((ALLOW_METHODS, _b(methods)))
        if self.allow_headers:
            requested = headers.get("access-control-request-headers", "")
            out.append(
                (ALLOW_HEADERS, _b(requested if self.allow_headers == "*" else self.allow_headers))
            )
        if self.max_age:
            out.append((MAX_AGE, _b(self.max_age)))
        # The answer passes the filter's own response step too (Envoy encodes a local reply
        # through every encoder filter): the expose headers join it.
        if allowed and self.expose_headers:
            out.append((EXPOSE_HEADERS, _b(self.expose_headers)))
        return out

    def response_headers(self, headers: Mapping[str, str]) -> tuple[Header, ...]:
        """What the filter sets on the response to a request that was not answered as a
        preflight: nothing unless its Origin is allowed."""
        origin = headers.get("origin", "")
        if not origin or not self.origin_allowed(origin):
            return ()
        out: list[Header] = [(ALLOW_ORIGIN, _b(origin))]
        if self.allow_credentials:
            out.append((ALLOW_CREDENTIALS, b"true"))
        if self.expose_headers:
            out.append((EXPOSE_HEADERS, _b(self.expose_headers)))
        return tuple(out)

    def describe(self) -> str:
        origins = ", ".join(f"{m.kind} {m.value}" for m in self.allow_origins) or "none"
        parts = [f"origins {origins}"]
        for label, value in (
            ("methods", self.allow_methods),
            ("headers", self.allow_headers),
            ("expose", self.expose_headers),
            ("max age", self.max_age and f"{self.max_age}s"),
        ):
            if value:
                parts.append(f"{label} {value}")
        if self.allow_credentials:
            parts.append("credentials")
        if not self.forward_not_matching_preflights:
            parts.append("unmatched preflights answered")
        return "; ".join(parts)

    def to_envoy(self) -> dict[str, Any]:
        """The route's `typed_per_filter_config` entry, as Istio writes it."""
        out: dict[str, Any] = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
        }
        if self.allow_origins:
            out["allow_origin_string_match"] = [m.to_envoy() for m in self.allow_origins]
        for key, value in (
            ("allow_methods", self.allow_methods),
            ("allow_headers", self.allow_headers),
            ("expose_headers", self.expose_headers),
            ("max_age", self.max_age),
        ):
            if value:
                out[key] = value
        if self.allow_credentials is not None:
            out["allow_credentials"] = self.allow_credentials
        out["filter_enabled"] = {"default_value": {"numerator": 100}}
        out["forward_not_matching_preflights"] = self.forward_not_matching_preflights
        return {"envoy.filters.http.cors": out}


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _origin_matcher(sm: StringMatch) -> OriginMatcher | None:
    """Istio `ConvertToEnvoyMatch`; a match without a kind is dropped, as Istio drops it."""
    if sm.exact is not None:
        return OriginMatcher("exact", sm.exact)
    if sm.prefix is not None:
        return OriginMatcher("prefix", sm.prefix)
    if sm.regex is not None:
        return OriginMatcher("regex", sm.regex, compile_regex(sm.regex))
    return None


def compile_cors(cors: CorsPolicy | None) -> CrossOriginPolicy | None:
    """Istio `TranslateCORSPolicy`. Raises `re2.error` for an origin regex RE2 rejects
    (validation reports it first)."""
    if cors is None:
        return None
    origins: list[OriginMatcher] = []
    if cors.allow_origins:
        origins = [m for m in (_origin_matcher(o) for o in cors.allow_origins) if m is not None]
    elif cors.allow_origin:
        origins = [OriginMatcher("exact", o) for o in cors.allow_origin]
    max_age = ""
    if cors.max_age is not None:
        try:
            max_age = str(parse_duration_ns(cors.max_age) // 1_000_000_000)
        except ValueError:
            max_age = ""  # validation rejects it first
    return CrossOriginPolicy(
        allow_origins=tuple(origins),
        allow_methods=",".join(cors.allow_methods or ()),
        allow_headers=",".join(cors.allow_headers or ()),
        expose_headers=",".join(cors.expose_headers or ()),
        max_age=max_age,
        allow_credentials=cors.allow_credentials,
        forward_not_matching_preflights=cors.unmatched_preflights != "IGNORE",
    )
