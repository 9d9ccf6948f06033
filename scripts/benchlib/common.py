"""Names every part of the benchmark shares: paths, addresses and host names, the error type
that ends a point with a message, and progress logging (stderr, so stdout stays the table)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH_SCRIPT = ROOT / "scripts" / "bench.py"  # run again as `bench.py _serve` / `bench.py _load`
ADDON = ROOT / "addons" / "mirror.py"
BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
BENCH_HOST = "bench.local"
SHADOW_HOST = "bench.local-shadow"
MIRROR_SERVICE = "mirror.bench"  # the mirror's ServiceEntry host in the generated YAML
BENCH_PATH = "/bench"
SLOW_DELAY = 2.0


class BenchError(Exception):
    """A failure that ends a point (or the run) with a message instead of a traceback."""


class Stop(BaseException):
    """Raised from the SIGTERM handler so that cleanup runs in `finally`."""


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def header_value(head_lower: bytes, name: bytes) -> bytes | None:
    """The value of header `name` (lower case) in a lower-cased HTTP/1.1 head; None if absent."""
    i = head_lower.find(b"\r\n" + name + b":")
    if i < 0:
        return None
    start = i + len(name) + 3
    end = head_lower.find(b"\r\n", start)
    return head_lower[start : end if end >= 0 else len(head_lower)].strip()
