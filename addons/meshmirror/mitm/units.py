"""Parsing of the human units used by options and YAML: Go-style durations and byte sizes."""

from __future__ import annotations

import re

from meshmirror import golang


def parse_duration(text: str) -> float:
    """Parse a Go duration (`5s`, `250ms`, `1m30s`, `1.5s`) into seconds. Raises ValueError.

    Go's syntax, because Istio's YAML uses it and users should write one syntax everywhere.
    Surrounding blanks are forgiven here (option values come from command lines).
    """
    return golang.parse_duration(text.strip())


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """Parse a byte size as mitmproxy's options do (`4m`, `512k`, `1024`). Raises ValueError.

    Binary multiples (k = 1024), matching mitmproxy's `stream_large_bodies` / `body_size_limit`.
    """
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"invalid size {text!r} (examples: 4m, 512k, 1048576)")
    return int(float(m.group(1)) * _SIZE_FACTORS[m.group(2).lower()])


def format_duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g}s"
    return f"{seconds * 1000:.3g}ms"
