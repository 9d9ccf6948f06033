"""`--profile`: a sampling profile of the proxy process during each closed-loop run, taken with
py-spy when it is on PATH (it is not a dependency of the project: `pip install py-spy` in any
environment; it attaches to the running mitmdump by pid and needs ptrace, e.g. root).

Contract of `summarise`: from py-spy's raw output (one line per distinct stack: frames joined by
";", then the sample count), the shares of the proxy's samples that fall in meshmirror's code
(any frame of the package), in mitmproxy's hook dispatch (the addon manager's frames and the
context managers it opens per addon), and the top frames by own samples.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

TOP = 12
_DISPATCH = ("mitmproxy/addonmanager.py", "contextlib.py")


def find_pyspy() -> str | None:
    return shutil.which("py-spy")


def record(pyspy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Start sampling `pid` for `seconds` into `out` (raw format); the caller waits for it."""
    argv = [pyspy, "record", "--rate", "250", "--format", "raw", "--nonblocking"]
    argv += ["--duration", str(max(1, round(seconds))), "--pid", str(pid), "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _frame(frame: str) -> tuple[str, str]:
    """('Class.function', 'file path') of one py-spy frame `name (path:line)`."""
    name, _, rest = frame.partition(" (")
    return name, rest.rsplit(":", 1)[0]


def summarise(raw: Path) -> dict[str, Any]:
    if not raw.exists():
        return {"samples": 0}
    total = ours = dispatch = 0
    own: Counter[str] = Counter()
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        total += n
        if any("meshmirror/" in path for _, path in frames):
            ours += n
        name, path = frames[-1]
        if path.endswith(_DISPATCH):
            dispatch += n
        short = path.rsplit("site-packages/", 1)[-1].rsplit("addons/", 1)[-1]
        own[f"{name} ({short})"] += n
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "meshmirror_share": round(ours / total, 4),
        "dispatch_share": round(dispatch / total, 4),
        "top": [[name, round(n / total, 4)] for name, n in own.most_common(TOP)],
    }


def merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One point's rounds: shares weighted by samples; the top list of the largest round."""
    rounds = [r for r in rounds if r.get("samples")]
    if not rounds:
        return {}
    total = sum(r["samples"] for r in rounds)
    return {
        "samples": total,
        "meshmirror_share": round(
            sum(r["meshmirror_share"] * r["samples"] for r in rounds) / total, 4
        ),
        "dispatch_share": round(sum(r["dispatch_share"] * r["samples"] for r in rounds) / total, 4),
        "top": max(rounds, key=lambda r: r["samples"])["top"],
    }
