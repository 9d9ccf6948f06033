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
  diff (`body`) with the first differing lines as the example. Bodies beyond `max_body` are
  compared by length and hash only.

Contract: cost. A comparison takes at most `steps_for(max_body)` steps of its `Budget`
(outcomes/budget.py): the JSON walk, the alignment of changed lines (outcomes/textdiff.py) and
the search for secrets in examples all spend from it. One that would take more is not made: its
`Comparison` says `not_compared="too_costly"`. A side whose body was decoded only up to the
limit (`Side.over_limit`, outcomes/decoding.py) is not compared either (`body_over_limit`).

Contract: secrets. *Sensitive* headers are Authorization, Proxy-Authorization,
Cookie, Set-Cookie and every header named in `redact_headers` (mirror_redact_headers). No
result of `compare_responses` (field names, examples, note) contains:
- the value under a JSON key that names a sensitive header (case-insensitively, at any depth),
  whether the difference is at that key or above it (an example printing a whole object prints
  such values as "[redacted]");
- in a text diff, a changed line that contains a sensitive header's name followed by `:` or `=`
  (`Authorization: ...`, `cookie=...`, `"Cookie": ...`) or one of the `secrets`: such a line is
  shown as `-[redacted]` / `+[redacted]`;
- anywhere, a secret: one of the `secrets` given (`secret_values`: the request's sensitive
  header values, their credentials after the scheme, each cookie's value), or a string found in
  either body under a sensitive JSON key or on a sensitive `Name: value` text line. Secrets of
  at least 4 characters are replaced by "[redacted]" before examples are cut to length, so no
  prefix of one is left either.

Contract: the proxy's own changes to the copy (mirror/shadow.py) are not differences. Echo
services answer with the request headers they got, so the copy's answer shows what the proxy
changed. A difference is disregarded when it is at a header of that name (JSON: the last key of
the pointer, case-insensitively, at any depth; text: a changed `Name: value` or `Name=value`
line, paired by name with the other side's changed line of that name) and is exactly what the
proxy's change explains (`primary` / `shadow` are the two sides' values, absent or present):
- X-Forwarded-For: any difference (the proxy appends the client address; the value is per hop);
- Host: the shadow's is the primary's with `host_suffix` inserted before any `:port`
  (case-insensitively; nothing is disregarded when `host_suffix` is empty);
- a header of `redact_headers`: present on the primary, and absent (strip) or `[redacted]`
  (mask) on the shadow;
- X-Meshmirror-Shadow (the loop-guard marker) and X-Request-Id (added to a recorded request's
  copy): absent on the primary, present on the shadow.
A JSON value is compared as text when it is a string or a list of strings (joined with ", ");
other values are never explained. Any other difference at those names still counts (with its
example redacted when the header is sensitive).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshmirror import grpc
from meshmirror.outcomes.budget import COMPARE_STEPS, Budget, TooCostly
from meshmirror.outcomes.counters import safe_field
from meshmirror.outcomes.textdiff import changed_lines

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
_MARKER = "x-meshmirror-shadow"
# Headers the proxy changes on every copy, whatever the options (see `_Rules.explained`).
_PROXY_CHANGED = frozenset({"host", "x-forwarded-for", _MARKER, "x-request-id"})
_MIN_SECRET = 4  # shorter strings are not searched for (they would blank every example)

_MAX_FIELDS = 50  # differing fields kept per comparison (the count is always exact)
_EXAMPLE_CHARS = 160
_FIELD_CHARS = 512


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


@dataclass(frozen=True, slots=True)
class Comparison:
    match: bool
    fields: tuple[str, ...]  # differing fields, most significant first (status, headers, body)
    examples: Mapping[str, str] = field(default_factory=dict)  # field -> short diff text
    differing: int = 0  # how many fields differ (fields may be capped)
    note: str = ""  # e.g. "body over 262144 bytes: compared by size and hash"
    # Set when the copy was not compared at all (match is then False, fields empty): one of
    # NOT_COMPARED's keys, with `note` saying why in words.
    not_compared: str = ""
    # With noise learned from a baseline (outcomes/noise.py): what differed before the noise
    # was removed, and the fields removed as noise.
    raw_fields: tuple[str, ...] = ()
    noise: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly form used by the outcome log and flow comments."""
        if self.not_compared:
            return {"not_compared": self.not_compared, "note": self.note}
        out: dict[str, Any] = {"match": self.match}
        if not self.match:
            out["fields"] = list(self.fields)
            out["differing"] = self.differing
            out["examples"] = dict(self.examples)
        if self.noise:
            out["raw_fields"] = list(self.raw_fields)
            out["noise"] = list(self.noise)
        if self.note:
            out["note"] = self.note
        return out

    def short(self) -> str:
        if self.not_compared:
            return f"not compared: {self.note}"
        if self.match:
            return "match"
        # Fields are a mirror's JSON keys: escaped, as in every printed line.
        shown = ", ".join(safe_field(f, keep_spaces=True) for f in self.fields[:5])
        more = f" (+{self.differing - 5} more)" if self.differing > 5 else ""
        return f"mismatch: {shown}{more}"


#: Why a copy was not compared (Comparison.not_compared), as counters and metrics name it.
NOT_COMPARED = {
    "too_costly": "too costly",
    "body_over_limit": "body over {limit} bytes after decoding",
    # The comparison process (outcomes/comparer.py): its queue was full, it died or stalled
    # with the copy's comparison, or the comparison itself failed.
    "busy": "too many comparisons waiting",
    "lost": "comparison process lost",
    "error": "comparison failed",
}


def not_compared(reason: str, limit: int = 0, detail: str = "") -> Comparison:
    """The result for a copy that was not compared, for `reason` (a key of NOT_COMPARED)."""
    note = NOT_COMPARED[reason].format(limit=limit) + (f" ({detail})" if detail else "")
    return Comparison(False, (), not_compared=reason, note=note)


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


def secret_values(headers: Iterable[tuple[str, str]], settings: CompareSettings) -> tuple[str, ...]:
    """The strings of a request's sensitive headers that must never appear in a result: each
    whole value, the credentials after an Authorization scheme (`Bearer <token>`), each cookie
    (`name=value`) and its value. For `compare_responses(..., secrets=)`."""
    sensitive = settings.sensitive_headers()
    found: set[str] = set()
    for name, value in headers:
        lname = name.strip().lower()
        if lname in sensitive:
            found.update(_fragments(lname, value))
    return tuple(sorted(s for s in found if len(s) >= _MIN_SECRET))


def _fragments(name: str, value: str) -> Iterable[str]:
    """A sensitive header's value and the secrets inside it (`name` in lower case)."""
    v = value.strip()
    yield v
    if name in ("authorization", "proxy-authorization"):
        yield v.partition(" ")[2].strip()
    if name in ("cookie", "set-cookie"):
        for part in v.split(";"):
            yield part.strip()
            yield part.partition("=")[2].strip().strip('"')


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


_ABSENT: Any = object()  # a JSON key or a text header line that one side does not have


@functools.lru_cache(maxsize=64)
def _sensitive_line(names: tuple[str, ...]) -> re.Pattern[str]:
    """A line that shows a sensitive header: its name, an optional quote, then `:` or `=`."""
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?:{alternatives})[\"']?\s*[:=]", re.IGNORECASE)


# `Name: value` or `Name=value` (a token as RFC 9110 defines field names), for text echoes.
_HEADER_LINE = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*[:=]\s*(.*?)\s*")


class _Rules:
    """What one comparison needs beyond the two sides: ignores, sensitive names, secrets, and
    the budget every step is paid from."""

    __slots__ = (
        "budget",
        "ignore",
        "longest",
        "redact",
        "secrets",
        "sensitive",
        "sensitive_line",
        "special",
        "suffix",
    )

    def __init__(self, settings: CompareSettings, secrets: Iterable[str], budget: Budget) -> None:
        self.budget = budget
        self.ignore = [parse_pointer(p) for p in settings.ignore_json]
        self.sensitive = settings.sensitive_headers()
        self.redact = frozenset(settings.redact_headers)
        self.suffix = settings.host_suffix
        self.special = self.sensitive | self.redact | _PROXY_CHANGED
        self.sensitive_line = _sensitive_line(tuple(sorted(self.sensitive)))
        self.secrets: list[str] = []
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        forms = set(self.secrets)
        for s in secrets:
            if len(s) >= _MIN_SECRET:
                forms.add(s)
                forms.add(json.dumps(s, ensure_ascii=False)[1:-1])  # as a JSON example shows it
        self.budget.spend(len(forms))
        # Longest first: a whole value goes before the token inside it.
        self.secrets = sorted(forms, key=len, reverse=True)
        self.longest = len(self.secrets[0]) if self.secrets else 0

    def sensitive_strings(self, value: Any) -> Iterable[str]:
        """The strings of a JSON value under a sensitive key (at any depth), with the secrets
        inside them. Iterative: a deep value costs no recursion, one step per node."""
        stack: list[tuple[Any, str]] = [(value, "")]
        while stack:
            item, under = stack.pop()
            self.budget.spend()
            if isinstance(item, str):
                if under:
                    yield from _fragments(under, item)
            elif isinstance(item, dict):
                for k, v in item.items():
                    lk = str(k).lower()
                    stack.append((v, under or (lk if lk in self.sensitive else "")))
            elif isinstance(item, list):
                stack.extend((v, under) for v in item)

    def scrub(self, text: str) -> str:
        self.budget.spend(len(self.secrets) * (1 + len(text) // 1024))
        for s in self.secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def example(self, text: str) -> str:
        """An example as a result shows it: secrets replaced, then cut to length. Only the head
        that can reach the cut text is searched (a replacement is at most this much shorter)."""
        head = _EXAMPLE_CHARS + 1 + (_EXAMPLE_CHARS // len(REDACTED) + 2) * self.longest
        return _clip(self.scrub(text[:head]))

    def json_text(self, value: Any) -> str:
        """The value as an example shows it, values under sensitive keys replaced (unclipped)."""
        return json.dumps(self._redact_keys(value), sort_keys=True, ensure_ascii=False)

    def _redact_keys(self, value: Any) -> Any:
        self.budget.spend()
        if isinstance(value, dict):
            return {
                k: REDACTED if str(k).lower() in self.sensitive else self._redact_keys(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._redact_keys(v) for v in value]
        return value

    def explained(self, name: str, primary: Any, shadow: Any) -> bool:
        """True when the proxy's own change to header `name` (lower case) on the copy explains
        why the primary's value differs from the shadow's (either may be _ABSENT)."""
        if name == "x-forwarded-for":
            return True
        a, b = _as_text(primary), _as_text(shadow)
        if name == "host":
            return (
                bool(self.suffix)
                and a is not None
                and b is not None
                and b.lower() == _with_suffix(a, self.suffix).lower()
            )
        if name in self.redact:
            return primary is not _ABSENT and (shadow is _ABSENT or b == REDACTED)
        if name in (_MARKER, "x-request-id"):
            return primary is _ABSENT and shadow is not _ABSENT
        return False


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return None


def _with_suffix(host: str, suffix: str) -> str:
    """As mirror/shadow.py's shadow_host: `suffix` after the host part, before any `:port`."""
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] + suffix + host[end + 1 :] if end != -1 else host + suffix
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and name and ":" not in name:
        return f"{name}{suffix}:{port}"
    return host + suffix


def compare_responses(
    primary: Side,
    shadow: Side,
    settings: CompareSettings,
    secrets: Iterable[str] = (),
    budget: Budget | None = None,
) -> Comparison:
    """Compare the two sides. `secrets` (see `secret_values`) never appear in the result.
    Within `budget` (default: `steps_for(settings.max_body)` steps), else not compared."""
    if primary.over_limit or shadow.over_limit:
        return not_compared("body_over_limit", settings.max_body)
    rules = _Rules(settings, secrets, budget or Budget(steps_for(settings.max_body)))
    fields: list[str] = []
    examples: dict[str, str] = {}
    notes: list[str] = []

    if primary.status != shadow.status:
        fields.append("status")
        examples["status"] = f"{primary.status} != {shadow.status}"

    try:
        if _is_grpc(primary) and _is_grpc(shadow):
            _compare_grpc(primary, shadow, settings, rules, fields, examples, notes)
        else:
            _compare_headers(primary, shadow, settings, rules.budget, fields, examples)
            _compare_bodies(primary, shadow, settings, rules, fields, examples, notes)
        differing = len(fields)
        kept = fields[:_MAX_FIELDS]
        return Comparison(
            match=not fields,
            fields=tuple(_clip_field(rules.scrub(f)) for f in kept),
            examples={
                _clip_field(rules.scrub(k)): rules.example(examples[k])
                for k in kept
                if k in examples
            },
            differing=differing,
            note="; ".join(notes),
        )
    except TooCostly:
        return not_compared("too_costly")


def _clip_field(name: str) -> str:
    """A field name (a JSON pointer holds a mirror's keys) bounded, so a record stays small."""
    return name if len(name) <= _FIELD_CHARS else name[: _FIELD_CHARS - 3] + "..."


def _header_map(side: Side, ignore: Sequence[str], budget: Budget) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    budget.spend(len(side.headers) * (1 + len(ignore) // 8))
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
    budget: Budget,
    fields: list[str],
    examples: dict[str, str],
) -> None:
    a = _header_map(primary, settings.ignore_headers, budget)
    b = _header_map(shadow, settings.ignore_headers, budget)
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
    rules: _Rules,
    fields: list[str],
    examples: dict[str, str],
    notes: list[str],
) -> None:
    pa, pb = primary.body, shadow.body
    if pa is None or pb is None:
        if pa is not pb:
            side = primary if pa is None else shadow
            why = f" ({side.unavailable})" if side.unavailable else ""
            notes.append(
                "body not compared: "
                + ("primary" if pa is None else "shadow")
                + f" body unavailable{why}"
            )
        return
    cap = settings.max_body
    if primary.body_truncated or shadow.body_truncated or len(pa) > cap or len(pb) > cap:
        if primary.body_truncated or shadow.body_truncated:
            notes.append("body not compared: only a prefix was captured")
            size_a, size_b = _size(primary), _size(shadow)
            if size_a is not None and size_b is not None and size_a != size_b:
                fields.append("body")
                examples["body"] = f"{size_a} bytes != {size_b} bytes"
            elif pa[: len(pb)] != pb[: len(pa)]:
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
        diffs: list[tuple[str, str]] = []
        try:
            rules.add_secrets([*rules.sensitive_strings(ja), *rules.sensitive_strings(jb)])
            _json_diff(ja, jb, (), rules, diffs)
        except RecursionError:
            # Nested deeper than the walk can go (a hostile body): a plain difference, with
            # no example, rather than an exception in the copy's callback.
            fields.append("body")
            examples["body"] = "JSON nested too deep to compare"
            return
        for pointer, text in diffs:
            key = f"body:{pointer or '/'}"
            fields.append(key)
            examples[key] = text
        return
    if ja is not _NOT_JSON or jb is not _NOT_JSON:
        fields.append("body")
        examples["body"] = "JSON in " + ("primary" if ja is not _NOT_JSON else "shadow") + " only"
        return
    example = _text_diff(pa, pb, rules)
    if example is not None:
        fields.append("body")
        examples["body"] = example


# --- gRPC ---------------------------------------------------------------------------------------

_GRPC_FIELDS = ("grpc-status", "grpc-message")


def _is_grpc(side: Side) -> bool:
    return any(n.lower() == "content-type" and grpc.is_grpc(v) for n, v in side.headers)


def _grpc_field(side: Side, name: str) -> str | None:
    """`grpc-status` / `grpc-message` from the trailers, else from a trailers-only answer's
    headers."""
    for fields in (side.trailers, side.headers):
        for n, v in fields:
            if n.lower() == name:
                return v
    return None


def _compare_grpc(
    primary: Side,
    shadow: Side,
    settings: CompareSettings,
    rules: _Rules,
    fields: list[str],
    examples: dict[str, str],
    notes: list[str],
) -> None:
    """Two gRPC answers: their gRPC status and message, their other headers, and their messages
    decoded as protobuf without a schema, compared as JSON is (`body:/message/0/2/1` is field 1
    of field 2 of the first message; ignore pointers apply alike)."""
    ignore = (*settings.ignore_headers, *_GRPC_FIELDS)
    only_headers = dataclasses.replace(settings, ignore_headers=ignore)
    _compare_headers(primary, shadow, only_headers, rules.budget, fields, examples)
    status_a = grpc.parse_status(_grpc_field(primary, "grpc-status") or "")
    status_b = grpc.parse_status(_grpc_field(shadow, "grpc-status") or "")
    if status_a != status_b:
        fields.append("grpc-status")
        examples["grpc-status"] = f"{_status_text(status_a)} != {_status_text(status_b)}"
    message_a = grpc.percent_decode((_grpc_field(primary, "grpc-message") or "").encode())
    message_b = grpc.percent_decode((_grpc_field(shadow, "grpc-message") or "").encode())
    if message_a != message_b:
        fields.append("grpc-message")
        examples["grpc-message"] = f"{json.dumps(message_a)} != {json.dumps(message_b)}"
    pa, pb = primary.body, shadow.body
    if pa is None or pb is None or primary.body_truncated or shadow.body_truncated:
        if pa != pb or primary.body_truncated or shadow.body_truncated:
            notes.append("messages not compared: a body is unavailable or only a prefix")
        return
    if pa == pb:
        return
    try:
        ma, mb = _grpc_messages(pa, rules.budget), _grpc_messages(pb, rules.budget)
    except grpc.FramingError as e:
        fields.append("body")
        examples["body"] = f"not gRPC messages: {e}"
        return
    diffs: list[tuple[str, str]] = []
    _json_diff({"message": ma}, {"message": mb}, (), rules, diffs)
    for pointer, text in diffs:
        key = f"body:{pointer or '/'}"
        fields.append(key)
        examples[key] = text


def _grpc_messages(body: bytes, budget: Budget) -> list[Any]:
    """Each message of a gRPC body decoded as protobuf without a schema (a field that occurs
    once is its value, a repeated one a list), or as hex when it is not one (or compressed)."""
    out: list[Any] = []
    for compressed, payload in grpc.split_messages(body):
        budget.spend(1 + len(payload) // 16)
        if compressed:
            out.append("compressed:0x" + payload.hex())
            continue
        steps = [max(0, budget.left)]
        try:
            decoded = grpc.decode_protobuf(payload, budget=steps)
        except grpc.DecodeError:
            out.append("0x" + payload.hex())
            continue
        finally:
            budget.spend(max(0, budget.left - steps[0]))
        out.append(_singles(decoded))
    return out


def _singles(value: Any) -> Any:
    """decode_protobuf's lists of occurrences, with a field that occurs once as its value."""
    if isinstance(value, dict):
        return {k: _singles(v[0] if len(v) == 1 else v) for k, v in value.items()}
    if isinstance(value, list):
        return [_singles(v) for v in value]
    return value


def _status_text(code: int | None) -> str:
    return "none" if code is None else f"{code} ({grpc.status_label(code)})"


def _size(side: Side) -> int | None:
    """The whole body's length, when known."""
    if side.size is not None:
        return side.size
    return None if side.body_truncated or side.body is None else len(side.body)


_NOT_JSON = object()


def _try_json(data: bytes) -> Any:
    stripped = data.strip()
    if not stripped or stripped[:1] not in b'{["-0123456789tfn':
        return _NOT_JSON
    try:
        return json.loads(stripped)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _NOT_JSON


def _json_diff(
    a: Any,
    b: Any,
    path: tuple[str, ...],
    rules: _Rules,
    out: list[tuple[str, str]],
) -> None:
    ignore = rules.ignore
    if _ignored(path, ignore) or len(out) >= _MAX_FIELDS:
        return
    # A node and the copy of its path: the cost grows with the depth, so it is paid for too.
    rules.budget.spend(1 + len(path) // 32)
    if isinstance(a, dict) and isinstance(b, dict):
        keys = a.keys() | b.keys()
        rules.budget.spend(len(keys))
        for key in sorted(keys):
            sub = (*path, str(key))
            if _ignored(sub, ignore):
                continue
            lkey = str(key).lower()
            if lkey in rules.special:
                _header_key_diff(a.get(key, _ABSENT), b.get(key, _ABSENT), sub, lkey, rules, out)
            elif key not in b:
                out.append((_pointer(sub), f"only in primary: {rules.json_text(a[key])}"))
            elif key not in a:
                out.append((_pointer(sub), f"only in shadow: {rules.json_text(b[key])}"))
            else:
                _json_diff(a[key], b[key], sub, rules, out)
        return
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            sub = (*path, str(i))
            if _ignored(sub, ignore):
                continue
            if i >= len(b):
                out.append((_pointer(sub), f"only in primary: {rules.json_text(a[i])}"))
            elif i >= len(a):
                out.append((_pointer(sub), f"only in shadow: {rules.json_text(b[i])}"))
            else:
                _json_diff(a[i], b[i], sub, rules, out)
        return
    # bool is an int in Python: 1 == True must still be a difference in JSON.
    if a != b or type(a) is not type(b):
        out.append((_pointer(path), f"{rules.json_text(a)} != {rules.json_text(b)}"))


def _pointer(path: tuple[str, ...]) -> str:
    return "".join("/" + _escape(t) for t in path)


def _header_key_diff(
    a: Any, b: Any, path: tuple[str, ...], name: str, rules: _Rules, out: list[tuple[str, str]]
) -> None:
    """The values under a key that names a header the proxy changes or that is sensitive."""
    below: list[tuple[str, str]] = []
    if a is not _ABSENT and b is not _ABSENT:
        _json_diff(a, b, path, rules, below)
        if not below:
            return
    if rules.explained(name, a, b):
        return
    pointer = _pointer(path)
    if name in rules.sensitive:
        # One field for the whole value, whatever its shape: nothing of it is shown.
        shown = json.dumps(REDACTED)
        if b is _ABSENT:
            out.append((pointer, f"only in primary: {shown}"))
        elif a is _ABSENT:
            out.append((pointer, f"only in shadow: {shown}"))
        else:
            out.append((pointer, f"{shown} != {shown}"))
    elif b is _ABSENT:
        out.append((pointer, f"only in primary: {rules.json_text(a)}"))
    elif a is _ABSENT:
        out.append((pointer, f"only in shadow: {rules.json_text(b)}"))
    else:
        out.extend(below)


def _text_diff(a: bytes, b: bytes, rules: _Rules) -> str | None:
    """None when the changed lines are all explained by the proxy's changes (module contract);
    otherwise the example: the first removed and added lines, e.g. `-version: 1 | +version: 2`,
    each shown as [redacted] when it shows a sensitive header or a secret."""
    ta = a.decode("utf-8", "replace").splitlines()
    tb = b.decode("utf-8", "replace").splitlines()
    changed = [op + line for op, line in changed_lines(ta, tb, rules.budget)]
    rules.budget.spend(len(changed))
    if not changed:
        return f"{len(a)} bytes != {len(b)} bytes"
    # The header lines among the changed ones, per side and lower-case name.
    values: dict[str, dict[str, list[str]]] = {"-": {}, "+": {}}
    parsed: list[str | None] = []
    for line in changed:
        m = _HEADER_LINE.fullmatch(line[1:])
        name = m.group(1).lower() if m else None
        if m and name in rules.special:
            values[line[0]].setdefault(name, []).append(m.group(2))
            parsed.append(name)
        else:
            parsed.append(None)
    # The values on sensitive header lines of either body, changed or not, are secrets too.
    found: list[str] = []
    rules.budget.spend(len(ta) + len(tb))
    for line in (*ta, *tb):
        if rules.sensitive_line.search(line):
            m = _HEADER_LINE.fullmatch(line)
            if m and m.group(1).lower() in rules.sensitive:
                found.extend(_fragments(m.group(1).lower(), m.group(2)))
    rules.add_secrets(found)
    unexplained: list[str] = []
    for line, name in zip(changed, parsed, strict=True):
        if name is not None:
            va, vb = values["-"].get(name, _ABSENT), values["+"].get(name, _ABSENT)
            if rules.explained(name, va, vb):
                continue
        unexplained.append(line)
    if not unexplained:
        return None
    shown = [
        x[0] + REDACTED if rules.sensitive_line.search(x) or rules.scrub(x) != x else x
        for x in unexplained[:2]
    ]
    return " | ".join(shown)
