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
gRPC answers are compared on their gRPC status, message and protobuf messages instead
(outcomes/grpc_diff.py). The inputs are in outcomes/compare_inputs.py, the per-comparison rules
(ignores, secrets, the proxy's own changes) in outcomes/diff_rules.py, the header, JSON and text
diffs in outcomes/field_diff.py; this module assembles the `Comparison`.

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

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshmirror.outcomes.budget import Budget, TooCostly
from meshmirror.outcomes.compare_inputs import CompareSettings, Side, steps_for
from meshmirror.outcomes.counters import safe_field
from meshmirror.outcomes.diff_rules import MAX_FIELDS, Rules
from meshmirror.outcomes.field_diff import NOT_JSON, compare_headers, json_diff, text_diff, try_json
from meshmirror.outcomes.grpc_diff import compare_grpc, is_grpc

_FIELD_CHARS = 512


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
    rules = Rules(settings, secrets, budget or Budget(steps_for(settings.max_body)))
    fields: list[str] = []
    examples: dict[str, str] = {}
    notes: list[str] = []

    if primary.status != shadow.status:
        fields.append("status")
        examples["status"] = f"{primary.status} != {shadow.status}"

    try:
        if is_grpc(primary) and is_grpc(shadow):
            compare_grpc(primary, shadow, settings, rules, fields, examples, notes)
        else:
            compare_headers(primary, shadow, settings, rules.budget, fields, examples)
            _compare_bodies(primary, shadow, settings, rules, fields, examples, notes)
        differing = len(fields)
        kept = fields[:MAX_FIELDS]
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


def _compare_bodies(
    primary: Side,
    shadow: Side,
    settings: CompareSettings,
    rules: Rules,
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
    ja, jb = try_json(pa), try_json(pb)
    if ja is not NOT_JSON and jb is not NOT_JSON:
        diffs: list[tuple[str, str]] = []
        try:
            rules.add_secrets([*rules.sensitive_strings(ja), *rules.sensitive_strings(jb)])
            json_diff(ja, jb, (), rules, diffs)
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
    if ja is not NOT_JSON or jb is not NOT_JSON:
        fields.append("body")
        examples["body"] = "JSON in " + ("primary" if ja is not NOT_JSON else "shadow") + " only"
        return
    example = text_diff(pa, pb, rules)
    if example is not None:
        fields.append("body")
        examples["body"] = example


def _size(side: Side) -> int | None:
    """The whole body's length, when known."""
    if side.size is not None:
        return side.size
    return None if side.body_truncated or side.body is None else len(side.body)
