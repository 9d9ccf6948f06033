"""What a route does to the request itself, compiled once and applied per request (pure).

Envoy's `finalizeRequestHeaders` order: the weighted destination's header
operations, then the route's, then the host rewrite, then the path rewrite. The mirror copies the
request after all of it, so applying these to the flow before the copy is taken gives the copy the
same path, headers and authority as the primary (plus the shadow suffix, added by mirror/shadow.py).

Held apart from the local replies (local_reply.py) and the fault and upstream policies
(fault.py, upstream.py) because this is the per-request hot path: `rewrite_request`,
`apply_header_ops` and `HeaderOps.apply` call each other directly, with nothing in between.
`HeaderOps` also serves the response direction (mitm/primary.py applies it in `responseheaders`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from meshmirror.config.base import HeaderOperations
from meshmirror.config.virtualservice import HTTPRewrite
from meshmirror.regex import compile_regex

Header = tuple[bytes, bytes]

_AUTHORITY_NAMES = frozenset({"host", ":authority"})
ORIGINAL_PATH = b"x-envoy-original-path"
ORIGINAL_HOST = b"x-envoy-original-host"

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
    """(path, header fields, authority) after header operations, host rewrite and path rewrite.
    A rewritten path leaves the original in `x-envoy-original-path`, a rewritten authority the
    original in `x-envoy-original-host`, as Envoy's router does."""
    out = apply_header_ops(fields, ops)
    if authority_rewrite:
        if authority_rewrite != authority:
            out = [(n, v) for n, v in out if n.lower() != ORIGINAL_HOST]
            out.append((ORIGINAL_HOST, authority.encode("utf-8", "surrogateescape")))
        authority = authority_rewrite
    if path_rewrite is not None:
        original = path
        path = path_rewrite.apply(path)
        out = [(n, v) for n, v in out if n.lower() != ORIGINAL_PATH]
        out.append((ORIGINAL_PATH, original.encode("utf-8", "surrogateescape")))
    return path, out, authority
