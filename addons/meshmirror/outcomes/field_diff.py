"""The differing fields of two responses' headers and bodies: `header:<name>`, a JSON body's
pointers (`body:/user/id`), a text body's first changed lines, each with its example, under
`Rules` (ignores, redaction, the proxy's own changes, the budget)."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from typing import Any

from meshmirror.outcomes.budget import Budget
from meshmirror.outcomes.compare_inputs import REDACTED, CompareSettings, Side
from meshmirror.outcomes.diff_rules import ABSENT, HEADER_LINE, MAX_FIELDS, Rules, fragments
from meshmirror.outcomes.textdiff import changed_lines


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


def _header_map(side: Side, ignore: Sequence[str], budget: Budget) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    budget.spend(len(side.headers) * (1 + len(ignore) // 8))
    for name, value in side.headers:
        lname = name.lower()
        if _header_ignored(lname, ignore):
            continue
        out.setdefault(lname, []).append(value)
    return out


def compare_headers(
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


NOT_JSON = object()


def try_json(data: bytes) -> Any:
    stripped = data.strip()
    if not stripped or stripped[:1] not in b'{["-0123456789tfn':
        return NOT_JSON
    try:
        return json.loads(stripped)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return NOT_JSON


def json_diff(
    a: Any,
    b: Any,
    path: tuple[str, ...],
    rules: Rules,
    out: list[tuple[str, str]],
) -> None:
    ignore = rules.ignore
    if _ignored(path, ignore) or len(out) >= MAX_FIELDS:
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
                _header_key_diff(a.get(key, ABSENT), b.get(key, ABSENT), sub, lkey, rules, out)
            elif key not in b:
                out.append((_pointer(sub), f"only in primary: {rules.json_text(a[key])}"))
            elif key not in a:
                out.append((_pointer(sub), f"only in shadow: {rules.json_text(b[key])}"))
            else:
                json_diff(a[key], b[key], sub, rules, out)
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
                json_diff(a[i], b[i], sub, rules, out)
        return
    # bool is an int in Python: 1 == True must still be a difference in JSON.
    if a != b or type(a) is not type(b):
        out.append((_pointer(path), f"{rules.json_text(a)} != {rules.json_text(b)}"))


def _pointer(path: tuple[str, ...]) -> str:
    return "".join("/" + _escape(t) for t in path)


def _header_key_diff(
    a: Any, b: Any, path: tuple[str, ...], name: str, rules: Rules, out: list[tuple[str, str]]
) -> None:
    """The values under a key that names a header the proxy changes or that is sensitive."""
    below: list[tuple[str, str]] = []
    if a is not ABSENT and b is not ABSENT:
        json_diff(a, b, path, rules, below)
        if not below:
            return
    if rules.explained(name, a, b):
        return
    pointer = _pointer(path)
    if name in rules.sensitive:
        # One field for the whole value, whatever its shape: nothing of it is shown.
        shown = json.dumps(REDACTED)
        if b is ABSENT:
            out.append((pointer, f"only in primary: {shown}"))
        elif a is ABSENT:
            out.append((pointer, f"only in shadow: {shown}"))
        else:
            out.append((pointer, f"{shown} != {shown}"))
    elif b is ABSENT:
        out.append((pointer, f"only in primary: {rules.json_text(a)}"))
    elif a is ABSENT:
        out.append((pointer, f"only in shadow: {rules.json_text(b)}"))
    else:
        out.extend(below)


def text_diff(a: bytes, b: bytes, rules: Rules) -> str | None:
    """None when the changed lines are all explained by the proxy's changes (the contract in
    outcomes/compare.py); otherwise the example: the first removed and added lines, e.g.
    `-version: 1 | +version: 2`, each shown as [redacted] when it shows a sensitive header or a
    secret."""
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
        m = HEADER_LINE.fullmatch(line[1:])
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
            m = HEADER_LINE.fullmatch(line)
            if m and m.group(1).lower() in rules.sensitive:
                found.extend(fragments(m.group(1).lower(), m.group(2)))
    rules.add_secrets(found)
    unexplained: list[str] = []
    for line, name in zip(changed, parsed, strict=True):
        if name is not None:
            va, vb = values["-"].get(name, ABSENT), values["+"].get(name, ABSENT)
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
