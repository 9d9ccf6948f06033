"""What one comparison needs beyond the two sides (`Rules`): the ignored JSON pointers, the
sensitive header names and the secrets that must never appear in a result, the proxy's own
changes to a copy that are not differences, and the budget every step is paid from. The
contracts (secrets; the proxy's own changes) are stated in outcomes/compare.py."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from typing import Any

from meshmirror.outcomes.budget import Budget
from meshmirror.outcomes.compare_inputs import REDACTED, CompareSettings, parse_pointer

_MARKER = "x-meshmirror-shadow"

# Headers the proxy changes on every copy, whatever the options (see `Rules.explained`).
_PROXY_CHANGED = frozenset({"host", "x-forwarded-for", _MARKER, "x-request-id"})

_MIN_SECRET = 4  # shorter strings are not searched for (they would blank every example)

MAX_FIELDS = 50  # differing fields kept per comparison (the count is always exact)

_EXAMPLE_CHARS = 160


def secret_values(headers: Iterable[tuple[str, str]], settings: CompareSettings) -> tuple[str, ...]:
    """The strings of a request's sensitive headers that must never appear in a result: each
    whole value, the credentials after an Authorization scheme (`Bearer <token>`), each cookie
    (`name=value`) and its value. For `compare_responses(..., secrets=)`."""
    sensitive = settings.sensitive_headers()
    found: set[str] = set()
    for name, value in headers:
        lname = name.strip().lower()
        if lname in sensitive:
            found.update(fragments(lname, value))
    return tuple(sorted(s for s in found if len(s) >= _MIN_SECRET))


def fragments(name: str, value: str) -> Iterable[str]:
    """A sensitive header's value and the secrets inside it (`name` in lower case)."""
    v = value.strip()
    yield v
    if name in ("authorization", "proxy-authorization"):
        yield v.partition(" ")[2].strip()
    if name in ("cookie", "set-cookie"):
        for part in v.split(";"):
            yield part.strip()
            yield part.partition("=")[2].strip().strip('"')


def _clip(text: str) -> str:
    return text if len(text) <= _EXAMPLE_CHARS else text[: _EXAMPLE_CHARS - 3] + "..."


ABSENT: Any = object()  # a JSON key or a text header line that one side does not have


@functools.lru_cache(maxsize=64)
def _sensitive_line(names: tuple[str, ...]) -> re.Pattern[str]:
    """A line that shows a sensitive header: its name, an optional quote, then `:` or `=`."""
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?:{alternatives})[\"']?\s*[:=]", re.IGNORECASE)


# `Name: value` or `Name=value` (a token as RFC 9110 defines field names), for text echoes.
HEADER_LINE = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*[:=]\s*(.*?)\s*")


class Rules:
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
                    yield from fragments(under, item)
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
        why the primary's value differs from the shadow's (either may be ABSENT)."""
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
            return primary is not ABSENT and (shadow is ABSENT or b == REDACTED)
        if name in (_MARKER, "x-request-id"):
            return primary is ABSENT and shadow is not ABSENT
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
