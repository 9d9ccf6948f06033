"""The path that route matching sees, normalised as Envoy does under Istio's defaults (pure).

Istio's default `PATH_NORMALIZATION` is `BASE`: Envoy's `normalize_path: true` (RFC 3986
normalisation through Chromium's URL canonicaliser) and nothing more: slashes are *not* merged
(`MERGE_SLASHES`) and `%2F` / `%5C` are *not* decoded (`DECODE_AND_MERGE_SLASHES`). Concretely,
on the path part only (the query is kept byte for byte):

- percent-encoded unreserved characters are decoded (`%41` -> `A`, `%2e` -> `.`, `%7E` -> `~`);
  every other escape is kept, with its hex digits upper-cased (`%2f` -> `%2F`);
- a backslash becomes a slash (`/a\\b` -> `/a/b`);
- dot segments are removed (`/a/./b/../c` -> `/a/c`; `..` never climbs above `/`), including
  encoded ones (`/a/%2e%2e/b` -> `/b`);
- adjacent slashes stay (`/a//b` stays `/a//b`).

meshmirror uses the result for matching only: the primary and the mirror get the path exactly as
the client sent it (Envoy would forward the normalised path; we stay a transparent proxy).
"""

from __future__ import annotations

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")


def _decode_unreserved(path: str) -> str:
    if "%" not in path:
        return path
    out: list[str] = []
    i, n = 0, len(path)
    while i < n:
        ch = path[i]
        if ch == "%" and i + 2 < n and path[i + 1] in _HEX and path[i + 2] in _HEX:
            decoded = chr(int(path[i + 1 : i + 3], 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + path[i + 1 : i + 3].upper())
            i += 3
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, on an absolute path."""
    segments = path.split("/")
    out: list[str] = []
    last = len(segments) - 1
    for i, seg in enumerate(segments[1:], start=1):
        if seg == ".":
            if i == last:
                out.append("")
            continue
        if seg == "..":
            if out:
                out.pop()
            if i == last:
                out.append("")
            continue
        out.append(seg)
    return "/" + "/".join(out)


def normalize_path(path: str) -> str:
    """Normalise the path part of a request target for matching; the query is kept as is.

    Targets that are not origin-form (`*`, or anything not starting with `/` after backslash
    conversion) are returned unchanged.
    """
    q = path.find("?")
    head, query = (path, "") if q == -1 else (path[:q], path[q:])
    if "\\" in head:
        head = head.replace("\\", "/")
    if not head.startswith("/"):
        return path
    if "%" in head:
        head = _decode_unreserved(head)
    if "." in head:
        head = _remove_dot_segments(head)
    return head + query
