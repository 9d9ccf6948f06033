"""The routing micro-benchmark, scripts/bench_routing.py, run as a subprocess; its figures
(compile time, median match time) are read from what it prints.

Contract: always returns a dict with "status" ("not run: ..." when it did not run or failed),
and "compile_s" / "median_match_us" when the output had them.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from typing import Any

from benchlib.common import ROOT, log
from benchlib.procs import run_quiet

ROUTING_BENCH = ROOT / "scripts" / "bench_routing.py"


def run_routing_bench(quick: bool) -> dict[str, Any]:
    if not ROUTING_BENCH.exists():
        return {"status": "not run: scripts/bench_routing.py does not exist yet"}
    argv = [sys.executable, str(ROUTING_BENCH)]
    log("running scripts/bench_routing.py")
    rc, out = run_quiet(argv, timeout=60 if quick else 300)
    res: dict[str, Any] = {"command": " ".join(argv), "exit_code": rc, "output": out[-4000:]}
    if rc != 0:
        res["status"] = f"not run: bench_routing.py exited {rc}"
        return res
    res["status"] = "scripts/bench_routing.py"
    # Accept a JSON object on any line, else read "compile ... N s|ms" and "median ... N us|ns".
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                for k, v in obj.items() if isinstance(obj, dict) else []:
                    if isinstance(v, int | float):
                        if "compile" in k and "compile_s" not in res:
                            res["compile_s"] = v / 1000 if k.endswith("_ms") else float(v)
                        if "median" in k and "median_match_us" not in res:
                            unit = {"_ns": 0.001, "_ms": 1000.0, "_s": 1e6}
                            f = next((u for s, u in unit.items() if k.endswith(s)), 1.0)
                            res["median_match_us"] = float(v) * f
    scale = {"s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
    num = r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|us|µs|μs|ns)\b"
    if "compile_s" not in res:
        m = re.search(r"compil\w*[^\n]*?" + num, out, re.IGNORECASE)
        if m:
            res["compile_s"] = round(float(m.group(1)) * scale[m.group(2)], 6)
    if "median_match_us" not in res:
        m = re.search(r"median[^\n]*?" + num, out, re.IGNORECASE)
        if m:
            res["median_match_us"] = round(float(m.group(1)) * scale[m.group(2)] * 1e6, 3)
    return res
