"""Compare the primary's response with the shadow's (pure; Diffy-style, without a third copy).

Three parts, each reported as differing *fields* so that a report can count which fields differ
most often:
- `status`;
- `header:<name>` for headers present on one side only or with different values, except the
  ignored ones (defaults: values that differ on every call or per hop: Date, Server, X-Request-Id,
  Set-Cookie, Content-Length, X-Envoy-*, ...). Header values never appear in the result: they
  may be secrets;
- the body: when both sides parse as JSON, a structural diff whose fields are JSON pointers
  (`body:/user/id`), minus ignored pointers (`*` matches any one key or index); otherwise a text
  diff (`body`) with the first differing line as the example. Bodies beyond `max_body` are
  compared by length and hash only.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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

_MAX_FIELDS = 50  # differing fields kept per comparison (the count is always exact)
_EXAMPLE_CHARS = 160


@dataclass(frozen=True, slots=True)
class Side:
    """One response as the comparison sees it: body already content-decoded (or None: no body
    was available, e.g. a failed copy or a streamed primary)."""

    status: int
    headers: Sequence[tuple[str, str]]
    body: bytes | None
    body_truncated: bool = False  # only a prefix of the body is in `body`


@dataclass(frozen=True, slots=True)
class CompareSettings:
    ignore_headers: tuple[str, ...] = DEFAULT_IGNORE_HEADERS
    ignore_json: tuple[str, ...] = ()
    max_body: int = 256 * 1024

    @classmethod
    def build(
        cls,
        extra_headers: Iterable[str] = (),
        ignore_json: Iterable[str] = (),
        max_body: int = 256 * 1024,
    ) -> CompareSettings:
        extra = tuple(h.strip().lower() for h in extra_headers if h.strip())
        pointers = tuple(p.strip() for p in ignore_json if p.strip())
        for p in pointers:
            parse_pointer(p)  # raises ValueError for a malformed pointer
        return cls(DEFAULT_IGNORE_HEADERS + extra, pointers, max_body)


@dataclass(frozen=True, slots=True)
class Comparison:
    match: bool
    fields: tuple[str, ...]  # differing fields, most significant first (status, headers, body)
    examples: Mapping[str, str] = field(default_factory=dict)  # field -> short diff text
    differing: int = 0  # how many fields differ (fields may be capped)
    note: str = ""  # e.g. "body over 262144 bytes: compared by size and hash"

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly form used by the outcome log and flow comments."""
        out: dict[str, Any] = {"match": self.match}
        if not self.match:
            out["fields"] = list(self.fields)
            out["differing"] = self.differing
            out["examples"] = dict(self.examples)
        if self.note:
            out["note"] = self.note
        return out

    def short(self) -> str:
        if self.match:
            return "match"
        shown = ", ".join(self.fields[:5])
        more = f" (+{self.differing - 5} more)" if self.differing > 5 else ""
        return f"mismatch: {shown}{more}"


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """RFC 6901 JSON pointer -> tokens (`*` is kept as a wildcard token). Raises ValueError."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer must start with '/': {pointer!r}")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/"))


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _ignored(path: tuple[str, ...], patterns: Sequence[tuple[str, ...]]) -> bool:
    """A path is ignored when an ignore pattern is a prefix of it (wildcards match one token)."""
    for pat in patterns:
        if len(pat) <= len(path) and all(
            p == "*" or p == t for p, t in zip(pat, path, strict=False)
        ):
            return True
    return False


def _header_ignored(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _clip(text: str) -> str:
    return text if len(text) <= _EXAMPLE_CHARS else text[: _EXAMPLE_CHARS - 3] + "..."


def _json_text(value: Any) -> str:
    return _clip(json.dumps(value, sort_keys=True, ensure_ascii=False))


def compare_responses(primary: Side, shadow: Side, settings: CompareSettings) -> Comparison:
    fields: list[str] = []
    examples: dict[str, str] = {}
    notes: list[str] = []

    if primary.status != shadow.status:
        fields.append("status")
        examples["status"] = f"{primary.status} != {shadow.status}"

    _compare_headers(primary, shadow, settings, fields, examples)
    _compare_bodies(primary, shadow, settings, fields, examples, notes)

    differing = len(fields)
    kept = tuple(fields[:_MAX_FIELDS])
    return Comparison(
        match=not fields,
        fields=kept,
        examples={k: v for k, v in examples.items() if k in kept},
        differing=differing,
        note="; ".join(notes),
    )


def _header_map(side: Side, ignore: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in side.headers:
        lname = name.lower()
        if _header_ignored(lname, ignore):
            continue
        out.setdefault(lname, []).append(value)
    return out


def _compare_headers(
    primary: Side,
    shadow: Side,
    settings: CompareSettings,
    fields: list[str],
    examples: dict[str, str],
) -> None:
    a = _header_map(primary, settings.ignore_headers)
    b = _header_map(shadow, settings.ignore_headers)
    for name in sorted(a.keys() | b.keys()):
        key = f"header:{name}"
        if name not in b:
            fields.append(key)
            examples[key] = "only in primary"
        elif name not in a:
            fields.append(key)
            examples[key] = "only in shadow"
        elif a[name] != b[name]:
            fields.append(key)
            examples[key] = "value differs"


def _compare_bodies(
    primary: Side,
    shadow: Side,
    settings: CompareSettings,
    fields: list[str],
    examples: dict[str, str],
    notes: list[str],
) -> None:
    pa, pb = primary.body, shadow.body
    if pa is None or pb is None:
        if pa is not pb:
            notes.append(
                "body not compared: "
                + ("primary" if pa is None else "shadow")
                + " body unavailable"
            )
        return
    cap = settings.max_body
    if primary.body_truncated or shadow.body_truncated or len(pa) > cap or len(pb) > cap:
        if primary.body_truncated or shadow.body_truncated:
            notes.append("body not compared: only a prefix was captured")
            if pa[: len(pb)] != pb[: len(pa)]:
                fields.append("body")
                examples["body"] = "bodies differ within the captured prefix"
            return
        notes.append(f"body over {cap} bytes: compared by size and hash")
        if len(pa) != len(pb) or hashlib.sha256(pa).digest() != hashlib.sha256(pb).digest():
            fields.append("body")
            examples["body"] = (
                f"{len(pa)} bytes != {len(pb)} bytes"
                if len(pa) != len(pb)
                else "same size, different bytes"
            )
        return
    if pa == pb:
        return
    ja, jb = _try_json(pa), _try_json(pb)
    if ja is not _NOT_JSON and jb is not _NOT_JSON:
        patterns = [parse_pointer(p) for p in settings.ignore_json]
        diffs: list[tuple[str, str]] = []
        _json_diff(ja, jb, (), patterns, diffs)
        for pointer, text in diffs:
            key = f"body:{pointer or '/'}"
            fields.append(key)
            examples[key] = text
        return
    if ja is not _NOT_JSON or jb is not _NOT_JSON:
        fields.append("body")
        examples["body"] = "JSON in " + ("primary" if ja is not _NOT_JSON else "shadow") + " only"
        return
    fields.append("body")
    examples["body"] = _text_example(pa, pb)


_NOT_JSON = object()


def _try_json(data: bytes) -> Any:
    stripped = data.strip()
    if not stripped or stripped[:1] not in b'{["-0123456789tfn':
        return _NOT_JSON
    try:
        return json.loads(stripped)
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


def _json_diff(
    a: Any,
    b: Any,
    path: tuple[str, ...],
    ignore: Sequence[tuple[str, ...]],
    out: list[tuple[str, str]],
) -> None:
    if _ignored(path, ignore) or len(out) >= _MAX_FIELDS:
        return
    pointer = "".join("/" + _escape(t) for t in path)
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            sub = (*path, str(key))
            if _ignored(sub, ignore):
                continue
            sub_pointer = pointer + "/" + _escape(str(key))
            if key not in b:
                out.append((sub_pointer, f"only in primary: {_json_text(a[key])}"))
            elif key not in a:
                out.append((sub_pointer, f"only in shadow: {_json_text(b[key])}"))
            else:
                _json_diff(a[key], b[key], sub, ignore, out)
        return
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            sub = (*path, str(i))
            if _ignored(sub, ignore):
                continue
            sub_pointer = f"{pointer}/{i}"
            if i >= len(b):
                out.append((sub_pointer, f"only in primary: {_json_text(a[i])}"))
            elif i >= len(a):
                out.append((sub_pointer, f"only in shadow: {_json_text(b[i])}"))
            else:
                _json_diff(a[i], b[i], sub, ignore, out)
        return
    # bool is an int in Python: 1 == True must still be a difference in JSON.
    if a != b or type(a) is not type(b):
        out.append((pointer, f"{_json_text(a)} != {_json_text(b)}"))


def _text_example(a: bytes, b: bytes) -> str:
    """The first removed and added lines, e.g. `-version: 1 | +version: 2`."""
    ta = a.decode("utf-8", "replace").splitlines()
    tb = b.decode("utf-8", "replace").splitlines()
    lines = list(difflib.unified_diff(ta, tb, n=0, lineterm=""))[2:]  # skip the ---/+++ header
    changed = [x for x in lines if x[:1] in ("-", "+")]
    if changed:
        return _clip(" | ".join(changed[:2]))
    return f"{len(a)} bytes != {len(b)} bytes"
