"""The units of meshmirror's options: Go durations (the syntax of Istio's YAML) and byte sizes
(mitmproxy's syntax)."""

from __future__ import annotations

from mitmproxy.utils import human

from meshmirror import golang


def parse_duration(text: str) -> float:
    """Parse a Go duration (`5s`, `250ms`, `1m30s`, `1.5s`) into seconds. Raises ValueError.

    Go's syntax, because Istio's YAML uses it and users should write one syntax everywhere.
    Surrounding blanks are forgiven here (option values come from command lines).
    """
    return golang.parse_duration(text.strip())


def parse_size(text: str) -> int:
    """Parse a byte size exactly as mitmproxy parses `body_size_limit` / `stream_large_bodies`
    (`4m`, `512k`, `1024`, `2g`; binary multiples, a whole number then one of b/k/m/g/t), so a
    user writes one syntax for both. Raises ValueError; negative sizes are refused."""
    try:
        size = human.parse_size(text.strip())
    except ValueError:
        size = None
    if size is None or size < 0:
        raise ValueError(f"invalid size {text!r} (examples: 4m, 512k, 1048576)")
    return size


def format_duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g}s"
    return f"{seconds * 1000:.3g}ms"
