"""Go's spelling of values (%q, %f, %v) and strconv.Atoi, so messages read as Istio's do."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

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
