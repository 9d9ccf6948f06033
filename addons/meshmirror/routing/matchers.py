"""The compiled condition types: what one Envoy RouteMatch is and how it evaluates (pure).

`StringMatcher`, `HeaderMatcher`, `QueryMatcher` and `RouteMatcher` are frozen, built once at
configure time by compile_match.py, and read per request by match.py (`matches`), by explain.py
(`first_failure`, `failure`) and by the route dump (`describe`, `to_envoy`). Their `test`
callables are prebuilt closures, so evaluating a condition allocates nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from meshmirror.routing.request_view import RequestView

StringKind = Literal["exact", "prefix", "regex", "present"]
# path_separated_prefix: Gateway API PathPrefix (element-wise), as Istio gives Envoy for routes
# with gateway semantics (converted HTTPRoutes): `/abc` matches `/abc`, `/abc/x`, not `/abcd`.
PathKind = Literal["prefix", "path", "safe_regex", "path_separated_prefix"]


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


def any_path(_: RequestView) -> bool:
    """The path test that accepts every request: RouteMatcher's default, the empty prefix."""
    return True


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
    _path_test: Callable[[RequestView], bool] = field(default=any_path, compare=False, repr=False)

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
