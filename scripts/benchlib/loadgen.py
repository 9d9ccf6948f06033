"""The load: the built-in asyncio client (child process `bench.py _load`) and wrk's figures.

Two modes. closed: N keep-alive connections, each sending its next request when the previous
answer is in (throughput). open: requests start at fixed times whatever the answers do (latency
without coordinated omission). Contract of `_load`: it prints one JSON object of figures (the
same keys for both tools where they overlap) as its last line and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from benchlib.common import BENCH_HOST, BENCH_PATH, LOOPBACK, BenchError, header_value

REQUEST = (
    f"GET {BENCH_PATH} HTTP/1.1\r\nHost: {BENCH_HOST}\r\nUser-Agent: meshmirror-bench\r\n"
    "Accept: */*\r\n\r\n"
).encode()


class ClientConn:
    """One keep-alive HTTP/1.1 client connection to the proxy under test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> ClientConn:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        return cls(reader, writer)

    async def request(self, data: bytes = REQUEST) -> tuple[int, bool]:
        """Send one request, read the whole response; (status, server wants to close)."""
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        length = header_value(lower, b"content-length")
        if length is not None:
            await self.reader.readexactly(int(length))
        elif header_value(lower, b"transfer-encoding") == b"chunked":
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await self.reader.read()
            return status, True
        return status, header_value(lower, b"connection") == b"close"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def error_class(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connect"
    if isinstance(exc, asyncio.IncompleteReadError | ConnectionResetError | BrokenPipeError):
        return "read"
    if isinstance(exc, ValueError | asyncio.LimitOverrunError):
        return "protocol"
    return "other"


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[min(k, len(sorted_values) - 1)]


def latency_figures(latencies: list[float]) -> dict[str, float | None]:
    lat = sorted(latencies)
    ms: Callable[[float | None], float | None] = lambda v: (  # noqa: E731
        round(v * 1000, 3) if v is not None else None
    )
    return {
        "p50_ms": ms(percentile(lat, 50)),
        "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(lat[-1] if lat else None),
        "mean_ms": ms(statistics.fmean(lat) if lat else None),
    }


async def closed_loop(port: int, conns: int, duration: float, timeout: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    non_2xx = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal non_2xx
        conn: ClientConn | None = None
        while time.perf_counter() < deadline:
            try:
                if conn is None:
                    conn = await asyncio.wait_for(ClientConn.open(port), timeout)
                t = time.perf_counter()
                status, close = await asyncio.wait_for(conn.request(), timeout)
                latencies.append(time.perf_counter() - t)
                if status >= 400:
                    non_2xx += 1
                if close:
                    conn.close()
                    conn = None
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                errors[error_class(e)] += 1
                if conn is not None:
                    conn.close()
                    conn = None
                await asyncio.sleep(0.01)
        if conn is not None:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    elapsed = time.perf_counter() - start
    return {
        "mode": "closed",
        "tool": "python",
        "connections": conns,
        "duration_s": round(elapsed, 3),
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        "errors": sum(errors.values()) + non_2xx,
        "error_classes": {**errors, **({"status": non_2xx} if non_2xx else {})},
        **latency_figures(latencies),
    }


def traced_request(i: int) -> bytes:
    """REQUEST with `X-Request-Id: bench-<i>`: the proxy's timeline names it so."""
    return REQUEST[:-2] + f"X-Request-Id: bench-{i}\r\n\r\n".encode()


async def open_loop(
    port: int,
    rate: float,
    duration: float,
    timeout: float,
    max_conns: int,
    preopen: int = 16,
    trace: str | None = None,
) -> dict[str, Any]:
    """Requests start at fixed times (t0 + i/rate) whatever the responses do; latency counts
    from the intended start, so queueing in the client shows (no coordinated omission).
    With `trace`, each request carries `X-Request-Id: bench-<i>` and its intended start, send
    and end times (time.time() seconds, the proxy's timeline clock) go to that file."""
    n = max(1, int(rate * duration))
    wall = time.time() - time.perf_counter()  # perf_counter -> time.time()
    traced: list[tuple[str, float, float, float]] = []
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    non_2xx = 0
    idle: list[ClientConn] = []
    sem = asyncio.Semaphore(max_conns)
    opened = 0

    async def one(i: int, intended: float) -> None:
        nonlocal non_2xx, opened
        async with sem:
            conn = idle.pop() if idle else None
            try:
                if conn is None:
                    conn = await ClientConn.open(port)
                    opened += 1
                if trace is None:
                    status, close = await conn.request()
                else:
                    sent = time.perf_counter()
                    status, close = await conn.request(traced_request(i))
                    end = time.perf_counter()
                    traced.append((f"bench-{i}", wall + intended, wall + sent, wall + end))
                latencies.append(time.perf_counter() - intended)
                if status >= 400:
                    non_2xx += 1
                if close:
                    conn.close()
                else:
                    idle.append(conn)
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                errors[error_class(e)] += 1
                if conn is not None:
                    conn.close()
            except asyncio.CancelledError:
                if conn is not None:
                    conn.close()
                raise

    # Open a few connections before the clock starts so that connection setup is not
    # counted as latency of the first requests; more are opened only when these are busy.
    for _ in range(min(preopen, max_conns)):
        with contextlib.suppress(OSError):
            idle.append(await asyncio.wait_for(ClientConn.open(port), timeout))
            opened += 1
    t0, send_end, behind, timed_out = await fixed_schedule(rate, n, one, timeout)
    if timed_out:
        errors["timeout"] += timed_out
    for conn in idle:
        conn.close()
    if trace is not None:
        with open(trace, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in traced)
    classes = {**errors, **({"status": non_2xx} if non_2xx else {})}
    return open_loop_result("python", rate, send_end - t0, n, latencies, opened, behind, classes)


def open_loop_result(
    tool: str,
    rate: float,
    elapsed: float,
    scheduled: int,
    latencies: list[float],
    connections: int,
    behind: float,
    error_classes: dict[str, int],
) -> dict[str, Any]:
    """A fixed-rate run's figures, as every fixed-rate client reports them."""
    return {
        "mode": "open",
        "tool": tool,
        "rate": rate,
        "duration_s": round(elapsed, 3),
        "scheduled": scheduled,
        "requests": len(latencies),
        "connections_opened": connections,
        "dispatch_lag_max_ms": round(behind * 1000, 3),
        "errors": sum(error_classes.values()),
        "error_classes": error_classes,
        **latency_figures(latencies),
    }


async def fixed_schedule(
    rate: float, n: int, one: Callable[[int, float], Coroutine[Any, Any, None]], timeout: float
) -> tuple[float, float, float, int]:
    """Start `one(i, intended)` as a task at intended = t0 + i/rate for i < n, whatever the
    earlier ones do; then wait up to `timeout` for those still running and cancel the rest.
    Returns (t0, when the last one started, how late a start was at most, how many were
    cancelled); times are time.perf_counter()'s."""
    tasks: set[asyncio.Task[None]] = set()
    t0 = time.perf_counter() + 0.02
    behind = 0.0
    for i in range(n):
        intended = t0 + i / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            behind = max(behind, -delay)
        tasks.add(asyncio.create_task(one(i, intended)))
        # Reap finished tasks so memory stays bounded on a stuck proxy.
        if i % 64 == 0:
            tasks = {t for t in tasks if not t.done()}
    send_end = time.perf_counter()
    timed_out = 0
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        timed_out = len(pending)
        if pending:
            await asyncio.wait(pending, timeout=1.0)
    return t0, send_end, behind, timed_out


def load_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py _load")
    p.add_argument("mode", choices=["closed", "open"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--max-connections", type=int, default=256)
    p.add_argument("--trace", help="open: per-request times to this file (X-Request-Id set)")
    args = p.parse_args(argv)
    if args.mode == "closed":
        res = asyncio.run(closed_loop(args.port, args.connections, args.duration, args.timeout))
    else:
        res = asyncio.run(
            open_loop(
                args.port,
                args.rate,
                args.duration,
                args.timeout,
                args.max_connections,
                trace=args.trace,
            )
        )
    print(json.dumps(res), flush=True)
    return 0


WRK_LUA = """\
wrk.headers["Host"] = "@HOST@"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
end
""".replace("@HOST@", BENCH_HOST)


def parse_wrk(output: str, conns: int) -> dict[str, Any]:
    m = re.search(r"^BENCHJSON (\{.*\})$", output, re.MULTILINE)
    if not m:
        raise BenchError(f"wrk printed no figures: {output.strip()[-300:]}")
    w = json.loads(m.group(1))
    secs = w["duration_us"] / 1e6
    classes = {k: w[k] for k in ("connect", "read", "write", "status", "timeout") if w[k]}
    return {
        "mode": "closed",
        "tool": "wrk",
        "connections": conns,
        "duration_s": round(secs, 3),
        "requests": w["requests"],
        "rps": round(w["requests"] / secs, 1) if secs > 0 else 0.0,
        "errors": sum(classes.values()),
        "error_classes": classes,
        "p50_ms": round(w["p50_us"] / 1000, 3),
        "p99_ms": round(w["p99_us"] / 1000, 3),
        "max_ms": round(w["max_us"] / 1000, 3),
        "mean_ms": round(w["mean_us"] / 1000, 3),
    }
