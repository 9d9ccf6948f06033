"""Request matching: a RequestView against a compiled RouteTable, first match wins (pure).

The compiled condition types (`StringMatcher`, `HeaderMatcher`, `QueryMatcher`, `RouteMatcher`)
live here with the code that evaluates them; routes.py builds them once with `compile_route_match`
and this module walks the table per request. Semantics follow Envoy's route matching as Istio
configures it (spec 1.3-1.4):

- uri `prefix` tests the start of the raw `:path` (query included), `exact` the path without the
  query, `regex` a full match of the path without the query (RE2); `case_sensitive` (from
  `ignoreUriCase`) applies to prefix/exact only.
- header conditions see multiple values joined with ","; `withoutHeaders` is an inverted header
  condition that treats a missing header as "" unless it is a present-match.
- query parameters are percent-decoded; the first value of a repeated key is the one tested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

import re2

from meshmirror.model import HTTPMatchRequest
from meshmirror.model import StringMatch as StringMatchSpec
from meshmirror.paths import normalize_path

if TYPE_CHECKING:
    from meshmirror.table import Route, RouteTable, VirtualHost

StringKind = Literal["exact", "prefix", "regex", "present"]
# path_separated_prefix: Gateway API PathPrefix (element-wise), as Istio gives Envoy for routes
# with gateway semantics (converted HTTPRoutes): `/abc` matches `/abc`, `/abc/x`, not `/abcd`.
PathKind = Literal["prefix", "path", "safe_regex", "path_separated_prefix"]

# Header keys Istio ignores inside `headers` (they have their own match fields) [API-VS].
_IGNORED_HEADER_KEYS = frozenset({"uri", "scheme", "method", "authority"})
_JWT_CLAIM_PREFIX = "@request.auth.claims"

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the C++ library would otherwise print to stderr


def compile_regex(pattern: str) -> Any:
    """RE2, as Envoy and Istio use: Python's `re` accepts look-around etc. that RE2 rejects."""
    return re2.compile(pattern, options=_RE2_OPTIONS)


# --- the request ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestView:
    """What route matching sees of a request; built once per request by the addon or the CLI.

    `authority` is the Host/:authority value as sent (may carry `:port`); `path` the raw request
    target (path and query); `headers` has lower-case names with repeated values joined by ",";
    `port` is the listener port tested by `match[].port`.
    """

    method: str
    scheme: str
    authority: str
    path: str
    headers: Mapping[str, str]
    port: int

    @classmethod
    def build(
        cls,
        method: str,
        scheme: str,
        authority: str,
        path: str,
        header_items: Iterable[tuple[str, str]],
        port: int,
    ) -> RequestView:
        headers: dict[str, str] = {}
        for name, value in header_items:
            key = name.lower()
            prev = headers.get(key)
            # Envoy: "Multiple headers are concatenated with ','" before matching.
            headers[key] = value if prev is None else f"{prev},{value}"
        # Envoy matches the normalised path (Istio's default BASE normalisation, paths.py).
        return cls(method, scheme, authority, normalize_path(path), headers, port)

    # Derived views are computed on first use only: most requests never need the query parsed.

    @cached_property
    def path_only(self) -> str:
        """The path without query string and fragment (what `exact` and `regex` see)."""
        path = self.path
        for sep in ("?", "#"):
            i = path.find(sep)
            if i != -1:
                path = path[:i]
        return path

    @cached_property
    def path_lower(self) -> str:
        return self.path.lower()

    @cached_property
    def path_only_lower(self) -> str:
        return self.path_only.lower()

    @cached_property
    def host(self) -> str:
        """Host without port, lower-case: what virtual-host selection compares (Istio sets
        `ignore_port_in_host_matching`)."""
        return strip_port(self.authority).lower()

    @cached_property
    def query(self) -> Mapping[str, str]:
        """Decoded query parameters; the first value of a repeated key wins (Envoy's
        `getFirstValue`). `?key` yields "" for key."""
        out: dict[str, str] = {}
        i = self.path.find("?")
        if i == -1:
            return out
        query = self.path[i + 1 :]
        j = query.find("#")
        if j != -1:
            query = query[:j]
        for part in query.split("&"):
            if not part:
                continue
            name, _, value = part.partition("=")
            # Envoy's percent decoding does not turn "+" into a space; unquote does not either.
            key = unquote(name)
            if key not in out:
                out[key] = unquote(value)
        return out

    def header(self, name: str) -> str | None:
        """A header by lower-case name; the pseudo-headers `:authority`, `:method`, `:scheme` and
        `:path` come from the request line, as Envoy represents HTTP/1 requests."""
        if name.startswith(":"):
            if name == ":authority":
                return self.authority
            if name == ":method":
                return self.method
            if name == ":scheme":
                return self.scheme
            if name == ":path":
                return self.path
        return self.headers.get(name)


def strip_port(authority: str) -> str:
    """`host:8000` -> `host`; `[::1]:80` -> `[::1]`; a bare IPv6 literal is left alone."""
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] if end != -1 else authority
    name, colon, port = authority.rpartition(":")
    if colon and ":" not in name and (port.isdigit() or port == ""):
        return name
    return authority


# --- compiled conditions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringMatcher:
    """One compiled StringMatch. `test` is a prebuilt callable so matching allocates nothing."""

    kind: StringKind
    value: str
    test: Callable[[str], bool] = field(compare=False, repr=False)

    def describe(self) -> str:
        return "present" if self.kind == "present" else f"{self.kind} {self.value!r}"

    def to_envoy(self) -> dict[str, Any]:
        if self.kind == "regex":
            return {"safe_regex": {"regex": self.value}}
        return {self.kind: self.value}


def _always(_: str) -> bool:
    return True


def _never(_: str) -> bool:
    return False


def _always_req(_: RequestView) -> bool:
    return True


def compile_string_match(sm: StringMatchSpec | None, *, lower: bool = False) -> StringMatcher:
    """StringMatch -> StringMatcher. `{}` and `regex: "*"` are present-matches, as Istio's
    `canBeConvertedToPresentMatch` says. `lower` folds exact/prefix values for ignoreUriCase.
    Raises re2.error for a bad regex (validation reports those first)."""
    if sm is None:
        return StringMatcher("present", "", _always)
    if sm.exact is not None:
        v = sm.exact.lower() if lower else sm.exact
        return StringMatcher("exact", v, v.__eq__)
    if sm.prefix is not None:
        p = sm.prefix.lower() if lower else sm.prefix
        return StringMatcher("prefix", p, _prefix_test(p))
    if sm.regex is not None and sm.regex != "*":
        rx = compile_regex(sm.regex)
        return StringMatcher("regex", sm.regex, _regex_test(rx))
    return StringMatcher("present", "", _always)


def _prefix_test(prefix: str) -> Callable[[str], bool]:
    def test(value: str) -> bool:
        return value.startswith(prefix)

    return test


def _regex_test(rx: Any) -> Callable[[str], bool]:
    fullmatch = rx.fullmatch

    def test(value: str) -> bool:
        return fullmatch(value) is not None

    return test


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    """Envoy HeaderMatcher as Istio builds it (`translateHeaderMatch`)."""

    name: str
    match: StringMatcher
    invert: bool = False
    treat_missing_as_empty: bool = False
    # Conditions Envoy evaluates against data we do not have (JWT claims) never match.
    unsupported: str | None = None

    def matches(self, req: RequestView) -> bool:
        if self.unsupported is not None:
            return False
        value = req.header(self.name)
        if value is None:
            if not self.treat_missing_as_empty:
                return self.invert
            value = ""
        if self.match.kind == "present":
            return not self.invert
        return self.match.test(value) != self.invert

    def failure(self, req: RequestView) -> str:
        if self.unsupported is not None:
            return self.unsupported
        value = req.header(self.name)
        shown = "missing" if value is None else repr(value)
        if self.invert:
            return f"without-header {self.name} {self.match.describe()}: header is {shown}"
        return f"header {self.name} {self.match.describe()}: header is {shown}"

    def describe(self) -> str:
        prefix = "without " if self.invert else ""
        return f"{prefix}{self.name} {self.match.describe()}"

    def to_envoy(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.match.kind == "present":
            out["present_match"] = True
        else:
            out["string_match"] = self.match.to_envoy()
        if self.invert:
            out["invert_match"] = True
        if self.treat_missing_as_empty:
            out["treat_missing_header_as_empty"] = True
        return out


@dataclass(frozen=True, slots=True)
class QueryMatcher:
    name: str
    match: StringMatcher

    def matches(self, req: RequestView) -> bool:
        value = req.query.get(self.name)
        if value is None:
            return False
        return self.match.test(value)

    def failure(self, req: RequestView) -> str:
        value = req.query.get(self.name)
        shown = "missing" if value is None else repr(value)
        return f"query parameter {self.name} {self.match.describe()}: parameter is {shown}"

    def describe(self) -> str:
        return f"?{self.name} {self.match.describe()}"

    def to_envoy(self) -> dict[str, Any]:
        if self.match.kind == "present":
            return {"name": self.name, "present_match": True}
        return {"name": self.name, "string_match": self.match.to_envoy()}


@dataclass(frozen=True, slots=True)
class RouteMatcher:
    """One Envoy RouteMatch: a path specifier plus header and query conditions (AND)."""

    path_kind: PathKind
    path_value: str
    case_sensitive: bool | None  # None: not set in the dump (a rule without `match`)
    headers: tuple[HeaderMatcher, ...] = ()
    query_params: tuple[QueryMatcher, ...] = ()
    _path_test: Callable[[RequestView], bool] = field(
        default=_always_req, compare=False, repr=False
    )

    def matches(self, req: RequestView) -> bool:
        if not self._path_test(req):
            return False
        for h in self.headers:
            if not h.matches(req):
                return False
        for q in self.query_params:
            if not q.matches(req):
                return False
        return True

    def first_failure(self, req: RequestView) -> str | None:
        """The first condition that fails, in evaluation order, or None when the route matches."""
        if not self._path_test(req):
            what = {
                "prefix": "uri prefix",
                "path": "uri exact",
                "safe_regex": "uri regex",
                "path_separated_prefix": "uri path-separated prefix",
            }
            fold = (
                ""
                if self.case_sensitive is not False or self.path_kind == "safe_regex"
                else " (any case)"
            )
            shown = req.path if self.path_kind == "prefix" else req.path_only
            return f"{what[self.path_kind]} {self.path_value!r}{fold}: path is {shown!r}"
        for h in self.headers:
            if not h.matches(req):
                return h.failure(req)
        for q in self.query_params:
            if not q.matches(req):
                return q.failure(req)
        return None

    @property
    def is_catch_all(self) -> bool:
        """Istio's `IsCatchAllRoute`: prefix "/" (or regex ".*") and no header/query matcher."""
        catch_all = (self.path_kind == "prefix" and self.path_value == "/") or (
            self.path_kind == "safe_regex" and self.path_value == ".*"
        )
        return catch_all and not self.headers and not self.query_params

    def describe(self) -> str:
        kind = {
            "prefix": "prefix",
            "path": "exact",
            "safe_regex": "regex",
            "path_separated_prefix": "path-separated prefix",
        }[self.path_kind]
        parts = [f"uri {kind} {self.path_value}"]
        if self.case_sensitive is False and self.path_kind != "safe_regex":
            parts[0] += " (any case)"
        parts.extend(h.describe() for h in self.headers)
        parts.extend(q.describe() for q in self.query_params)
        return ", ".join(parts)

    def to_envoy(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.path_kind == "safe_regex":
            out["safe_regex"] = {"regex": self.path_value}
        else:
            out[self.path_kind] = self.path_value
        if self.case_sensitive is not None:
            out["case_sensitive"] = self.case_sensitive
        if self.headers:
            out["headers"] = [h.to_envoy() for h in self.headers]
        if self.query_params:
            out["query_parameters"] = [q.to_envoy() for q in self.query_params]
        return out


def _path_prefix(prefix: str, case_sensitive: bool) -> Callable[[RequestView], bool]:
    if prefix == "":
        return _always_req
    if case_sensitive:

        def test(req: RequestView) -> bool:
            return req.path.startswith(prefix)

        return test
    low = prefix.lower()

    def test_fold(req: RequestView) -> bool:
        return req.path_lower.startswith(low)

    return test_fold


def _path_separated_prefix(prefix: str, case_sensitive: bool) -> Callable[[RequestView], bool]:
    """Envoy `path_separated_prefix`: the path without query equals `prefix` or continues with
    "/" after it."""
    n = len(prefix)
    if case_sensitive:

        def test(req: RequestView) -> bool:
            p = req.path_only
            return p.startswith(prefix) and (len(p) == n or p[n] == "/")

        return test
    low = prefix.lower()

    def test_fold(req: RequestView) -> bool:
        p = req.path_only_lower
        return p.startswith(low) and (len(p) == n or p[n] == "/")

    return test_fold


def _path_exact(path: str, case_sensitive: bool) -> Callable[[RequestView], bool]:
    if case_sensitive:

        def test(req: RequestView) -> bool:
            return req.path_only == path

        return test
    low = path.lower()

    def test_fold(req: RequestView) -> bool:
        return req.path_only_lower == low

    return test_fold


def _path_regex(rx: Any) -> Callable[[RequestView], bool]:
    fullmatch = rx.fullmatch

    def test(req: RequestView) -> bool:
        return fullmatch(req.path_only) is not None

    return test


CATCH_ALL = RouteMatcher("prefix", "/", None, (), (), _path_prefix("/", True))


def compile_route_match(
    m: HTTPMatchRequest | None, *, gateway_semantics: bool = False
) -> RouteMatcher:
    """Istio `TranslateRouteMatch` for one match block (None = a rule without `match`).

    `gateway_semantics` (VirtualServices converted from Gateway API HTTPRoutes) turns a prefix
    other than "/" into Envoy's path_separated_prefix, as Istio does for such routes.
    Raises re2.error for a regex RE2 rejects; the caller reports it against the resource.
    """
    if m is None:
        return CATCH_ALL
    case_sensitive = not bool(m.ignore_uri_case)
    path_kind: PathKind = "prefix"
    path_value = "/"
    path_test: Callable[[RequestView], bool] = _path_prefix("/", True)
    uri = m.uri
    if uri is not None:
        if uri.exact is not None:
            path_kind, path_value = "path", uri.exact
            path_test = _path_exact(uri.exact, case_sensitive)
        elif uri.prefix is not None:
            path_kind, path_value = "prefix", uri.prefix
            path_test = _path_prefix(uri.prefix, case_sensitive)
            if gateway_semantics and uri.prefix != "/":
                path_kind, path_value = "path_separated_prefix", uri.prefix.removesuffix("/")
                path_test = _path_separated_prefix(path_value, case_sensitive)
        elif uri.regex is not None:
            path_kind, path_value = "safe_regex", uri.regex
            path_test = _path_regex(compile_regex(uri.regex))
    else:
        path_test = _path_prefix("/", case_sensitive)

    headers: list[HeaderMatcher] = []
    for name, sm in (m.headers or {}).items():
        key = name.lower()
        if key in _IGNORED_HEADER_KEYS:
            continue
        headers.append(_header(key, sm, invert=False))
    for name, sm in (m.without_headers or {}).items():
        key = name.lower()
        if key in _IGNORED_HEADER_KEYS:
            continue
        headers.append(_header(key, sm, invert=True))
    # Istio sorts header matchers by name, then appends :method, :authority, :scheme.
    headers.sort(key=lambda h: h.name)
    for pseudo, sm in ((":method", m.method), (":authority", m.authority), (":scheme", m.scheme)):
        if sm is not None:
            headers.append(HeaderMatcher(pseudo, compile_string_match(sm)))
    query = [
        QueryMatcher(name, compile_string_match(sm))
        for name, sm in sorted((m.query_params or {}).items())
    ]
    return RouteMatcher(
        path_kind, path_value, case_sensitive, tuple(headers), tuple(query), path_test
    )


def _header(name: str, sm: StringMatchSpec | None, *, invert: bool) -> HeaderMatcher:
    if name.startswith(_JWT_CLAIM_PREFIX):
        return HeaderMatcher(
            name,
            StringMatcher("present", "", _never),
            invert=invert,
            unsupported=f"{name}: JWT claim matches are not evaluated by meshmirror",
        )
    matcher = compile_string_match(sm)
    # Istio: an inverted matcher treats a missing header as "" unless it is a present-match.
    missing_empty = invert and matcher.kind != "present"
    return HeaderMatcher(name, matcher, invert=invert, treat_missing_as_empty=missing_empty)


# --- walking the table ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteMatch:
    virtual_host: VirtualHost
    route: Route


def match_request(table: RouteTable, req: RequestView) -> RouteMatch | None:
    """The route Envoy would pick: the virtual host for the Host, then the first matching route."""
    vh = table.select_virtual_host(req.authority)
    if vh is None:
        return None
    for route in vh.routes:
        if route.matcher.matches(req):
            return RouteMatch(vh, route)
    return None


@dataclass(frozen=True)
class RouteTrial:
    route: Route
    failure: str | None  # None: this route matched


@dataclass(frozen=True)
class Explanation:
    """Why a request got (or did not get) a route: for `meshmirror explain`."""

    host: str
    virtual_host: VirtualHost | None
    domain: str | None  # the domain of the virtual host that matched the Host
    trials: tuple[RouteTrial, ...]
    route: Route | None
    reason: str | None = None  # why no virtual host / no route

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.virtual_host is None:
            out.append(f"virtual host: none ({self.reason})")
            return out
        out.append(
            f"virtual host: {self.virtual_host.name} (Host {self.host!r} matched domain "
            f"{self.domain!r})"
        )
        for t in self.trials:
            if t.failure is None:
                out.append(f"  {t.route.label}: matched ({t.route.matcher.describe()})")
            else:
                out.append(f"  {t.route.label}: no match: {t.failure}")
        if self.route is None and self.reason:
            out.append(f"route: none ({self.reason})")
        return out


def explain_request(table: RouteTable, req: RequestView) -> Explanation:
    found = table.select_virtual_host_domain(req.authority)
    if found is None:
        domains = [d for vh in table.virtual_hosts for d in vh.domains]
        shown = ", ".join(domains[:10]) + (" ..." if len(domains) > 10 else "")
        return Explanation(
            req.host,
            None,
            None,
            (),
            None,
            f"Host {req.host!r} matches no domain ({shown or 'the table is empty'})",
        )
    vh, domain = found
    trials: list[RouteTrial] = []
    for route in vh.routes:
        failure = route.matcher.first_failure(req)
        trials.append(RouteTrial(route, failure))
        if failure is None:
            return Explanation(req.host, vh, domain, tuple(trials), route)
    return Explanation(
        req.host, vh, domain, tuple(trials), None, "no route of the virtual host matched"
    )
