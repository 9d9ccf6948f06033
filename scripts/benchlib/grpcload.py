"""The gRPC load: unary `test.Echo/Echo` calls over h2c with prior knowledge, `:authority`
bench.local, one small message.

closed: h2load (Debian's nghttp2-client; C, one thread, so it leaves the proxy its core), N
connections with one call in flight each, for a duration (the warm-up: for a number of calls,
since h2load drops the calls in flight when its time is up and a proxy that has just started
may take longer than a short warm-up for its first answer); figures from its summary and its
per-request log (--log-file). h2load reads no `grpc-status`: the primary backend's count of
handled calls is the check that calls got through (measure.py). open: the child process `bench.py
_grpc_load open`, a grpcio (asyncio) client on one channel that starts calls at fixed times
whatever the answers do, latency counted from the intended start, a call that ends with a
non-OK status counted as an error by its code. (h2load's own timing script cannot hold a fixed
rate: each next request is timed from the previous one, and the schedule falls behind by about
half a millisecond per request.) Contract of both: the same keys as the HTTP load's figures
(loadgen.py) where they overlap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from benchlib.common import BENCH_HOST, LOOPBACK, BenchError
from benchlib.loadgen import fixed_schedule, latency_figures, open_loop_result
from tests.support.grpc_servers import ECHO, frame

# A protobuf message without a schema: field 1, a string.
MESSAGE = b"\x0a\x0bbench-grpc!"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers", f":authority: {BENCH_HOST}")


def write_body(path: Path) -> Path:
    """The framed request message h2load posts (`-d`)."""
    if not path.exists():
        path.write_bytes(frame(MESSAGE))
    return path


def h2load_argv(
    h2load: str,
    port: int,
    duration: float,
    conns: int,
    body: Path,
    log: Path,
    calls: int | None = None,
) -> list[str]:
    """Closed loop: `conns` connections, one call in flight on each, for `duration` seconds or,
    given `calls`, until that many calls are answered."""
    argv = [h2load, "-c", str(conns), "-m", "1", "-t", "1"]
    if calls is None:
        argv += ["-D", f"{max(1, round(duration * 1000))}ms"]
    else:
        argv += ["-n", str(max(calls, conns))]
    argv += ["-d", str(body), "--log-file", str(log)]
    for h in GRPC_HEADERS:
        argv += ["-H", h]
    return [*argv, f"http://{LOOPBACK}:{port}{ECHO}"]


_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def parse_h2load(output: str, log: Path, conns: int) -> dict[str, Any]:
    """Figures of one h2load run: its summary lines, latencies from its per-request log."""
    fin = re.search(r"^finished in ([\d.]+)(s|ms|us),", output, re.MULTILINE)
    req = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        output,
        re.MULTILINE,
    )
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output, re.M)
    if not (fin and req and codes):
        raise BenchError(f"h2load printed no figures: {output.strip()[-300:]}")
    secs = float(fin.group(1)) * _UNITS[fin.group(2)]
    failed, errored, timeout = (int(req.group(i)) for i in (5, 6, 7))
    ok = int(codes.group(1))
    other_status = sum(int(codes.group(i)) for i in (2, 3, 4))
    latencies: list[float] = []
    if log.exists():
        for line in log.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) >= 3 and fields[1] != "-1":
                latencies.append(int(fields[2]) / 1e6)
    classes = {"status": other_status, "stream": errored, "timeout": timeout}
    return {
        "mode": "closed",
        "tool": "h2load",
        "connections": conns,
        "duration_s": round(secs, 3),
        "requests": ok,
        "rps": round(ok / secs, 1) if secs > 0 else 0.0,
        # h2load's "failed" counts answers outside 2xx/3xx and broken streams alike.
        "errors": failed + timeout,
        "error_classes": {k: v for k, v in classes.items() if v},
        **latency_figures(latencies),
    }


async def grpc_open_loop(port: int, rate: float, duration: float, timeout: float) -> dict[str, Any]:
    """Calls start at t0 + i/rate on one grpcio channel; latency from the intended start."""
    n = max(1, int(rate * duration))
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    options = [("grpc.default_authority", BENCH_HOST)]
    async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}", options=options) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout)
        echo = channel.unary_unary(ECHO)

        async def one(i: int, intended: float) -> None:
            try:
                await echo(MESSAGE, timeout=timeout)
            except grpc.aio.AioRpcError as e:
                errors[e.code().name.lower()] += 1
                return
            latencies.append(time.perf_counter() - intended)

        # Each call has its own deadline; the schedule's wait bounds it should one not keep it.
        t0, send_end, behind, timed_out = await fixed_schedule(rate, n, one, timeout + 2)
        if timed_out:
            errors["timeout"] += timed_out
    return open_loop_result("grpcio", rate, send_end - t0, n, latencies, 1, behind, dict(errors))


def grpc_load_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py _grpc_load")
    p.add_argument("mode", choices=["open"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--timeout", type=float, default=5.0)
    args = p.parse_args(argv)
    res = asyncio.run(grpc_open_loop(args.port, args.rate, args.duration, args.timeout))
    print(json.dumps(res), flush=True)
    return 0
