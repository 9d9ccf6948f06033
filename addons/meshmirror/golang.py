"""Go's spellings, so meshmirror reads and writes values as Istio's Go code does.

- Durations as Istio reads them (`5s`, `250ms`, `1m30s`, `1.5s`), and Istio's range rule.
- Go's formatting of values in messages (%q, %f, %v) and `strconv.Atoi`, so that validation
  messages read as Istio's do.

Istio's YAML durations go through Go's `time.ParseDuration`, so this is a port of that function:
integer nanoseconds (a float would blur the "ms precision" rule), the same units, the same error
texts. `parse_duration` gives seconds for options such as `mirror_timeout`, so a user writes one
syntax everywhere.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

NANOSECOND = 1
MICROSECOND = 1_000
MILLISECOND = 1_000_000
SECOND = 1_000_000_000

# U+00B5 (micro sign) and U+03BC (Greek mu) are both accepted by Go.
_UNITS: dict[str, int] = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,
    "\u03bcs": MICROSECOND,
    "ms": MILLISECOND,
    "s": SECOND,
    "m": 60 * SECOND,
    "h": 3600 * SECOND,
}
_MAX_NS = (1 << 63) - 1  # Go's time.Duration is an int64 of nanoseconds


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration into integer nanoseconds. Raises ValueError with Go's message."""
    invalid = ValueError(f"time: invalid duration {go_quote(text)}")
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or s[0].isascii() and s[0].isdigit()):
            raise invalid
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        whole_digits, s = s[:i], s[i:]
        frac_digits = ""
        if s.startswith("."):
            s = s[1:]
            j = 0
            while j < len(s) and "0" <= s[j] <= "9":
                j += 1
            frac_digits, s = s[:j], s[j:]
        if not whole_digits and not frac_digits:
            raise invalid
        k = 0
        while k < len(s) and s[k] != "." and not ("0" <= s[k] <= "9"):
            k += 1
        if k == 0:
            raise ValueError(f"time: missing unit in duration {go_quote(text)}")
        unit_text, s = s[:k], s[k:]
        unit = _UNITS.get(unit_text)
        if unit is None:
            raise ValueError(
                f"time: unknown unit {go_quote(unit_text)} in duration {go_quote(text)}"
            )
        whole = int(whole_digits) if whole_digits else 0
        value = whole * unit
        if frac_digits:
            # Go truncates the fractional nanoseconds; integer division does the same exactly.
            value += int(frac_digits) * unit // 10 ** len(frac_digits)
        total += value
        if total > _MAX_NS + (1 if neg else 0):
            raise invalid
    return -total if neg else total


def parse_duration(text: str) -> float:
    """Parse a Go duration (`5s`, `250ms`, `1m30s`, `1.5s`, `0`) into seconds. Raises ValueError."""
    return parse_duration_ns(text) / SECOND


def check_istio_duration(ns: int) -> str | None:
    """Istio's `agent.ValidateDuration`: the message for a duration it rejects, else None."""
    if ns < MILLISECOND:
        return "duration must be greater than 1ms"
    if ns % MILLISECOND:
        return "only durations to ms precision are supported"
    return None


# --- values in messages ------------------------------------------------------------------------

_GO_ATOI_RE = re.compile(r"^[+-]?[0-9]+\Z")


def go_quote(text: str) -> str:
    """Go's %q: a double-quoted string with backslash escapes (JSON is the nearest spelling)."""
    return json.dumps(text, ensure_ascii=False)


def go_float(x: float) -> str:
    """Go's %f (6 decimals; +Inf/-Inf/NaN spelled the Go way)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return f"{x:f}"


def go_value(x: float) -> str:
    """Go's %v for a float64: shortest representation, `150` not `150.0`, `1e-05`."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x.is_integer() and abs(x) < 1e21:
        return str(int(x))
    # Python's repr is also the shortest round-trip form and writes exponents like Go (1e-05).
    return repr(x)


def go_list(items: Sequence[str]) -> str:
    """Go's %v for a []string: `[a b]`."""
    return "[" + " ".join(items) + "]"


def go_atoi_ok(text: str) -> bool:
    """Go's strconv.Atoi would accept `text` (an optionally signed int64)."""
    return _GO_ATOI_RE.match(text) is not None and -(2**63) <= int(text) < 2**63
