"""Side-by-side performance benchmark of meshmirror (issue 4), on 127.0.0.1 only.

Measures, in one run and interleaved (round-robin over the points, repeated rounds, so drift hits
all alike): plain `mitmdump --mode reverse:` (the baseline); meshmirror with no matching route, 0%,
50% and 100% to a healthy mirror; 100% to a mirror that answers after 2 s, to one that accepts and
never answers, and to a closed port; nginx with and without its `mirror` directive (healthy and
2 s mirror) as the peer. Each point gets a closed-loop keep-alive run (wrk, or the built-in asyncio
client) for throughput and an open-loop fixed-rate run at about half the baseline's capacity for
latency. Figures per point: requests/s, p50/p99/max latency, errors, mirror delivered/sampled and
the addon's outcome counters, proxy CPU per request and peak RSS, ratios to the baseline; the
issue's targets are checked beside them.

Process layout: this orchestrator; two backend processes (`_serve`: the primary; the mirrors);
the proxy under test (mitmdump or nginx); the load generator (wrk or `_load`). The proxy's CPU is
read from /proc/PID/stat, its memory from /proc/PID/status (VmHWM/VmRSS). Every process is
started in its own session and stopped by its pid, also on Ctrl-C and errors.

Run it through `scripts/bench` (which runs scripts/setup first); `--help` lists the knobs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "mirror.py"
ROUTING_BENCH = ROOT / "scripts" / "bench_routing.py"
BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
BENCH_HOST = "bench.local"
SHADOW_HOST = "bench.local-shadow"
BENCH_PATH = "/bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SLOW_DELAY = 2.0
TABLE_HEADER = "| point | req/s |"

# The targets (ratios from the same run).
TARGET_HEALTHY_RPS = 0.90
TARGET_NOMIRROR_RPS = 0.97
TARGET_HEALTHY_P99 = 1.15
TARGET_FAULT_RPS = 0.95
TARGET_FAULT_P99 = 1.2
TARGET_DELIVERY = 0.999
TARGET_RSS_GROWTH_MB = 30.0  # our reading of "no growth beyond a few tens of MB"
TARGET_COMPILE_S = 2.0
TARGET_MATCH_US = 20.0
# Other processes' CPU (cores) above which a point's figures are flagged as noisy.
NOISE_CORES = 0.1


class BenchError(Exception):
    """A failure that ends a point (or the run) with a message instead of a traceback."""


class Stop(BaseException):
    """Raised from the SIGTERM handler so that cleanup runs in `finally`."""


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ============================================================================================
# HTTP/1.1 backends (child process `_serve`): keep-alive, Content-Length, counting.
# ============================================================================================

OK_BODY = b"ok from the bench backend\n"
OK_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(OK_BODY)).encode()
    + b"\r\n\r\n"
    + OK_BODY
)
CLOSE_RESPONSE = OK_RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)


@dataclass
class ServerStats:
    requests: Counter[str] = field(default_factory=Counter)
    hosts: dict[str, Counter[str]] = field(default_factory=dict)
    connections: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "connections": dict(self.connections),
            "hosts": {name: dict(c.most_common(5)) for name, c in self.hosts.items()},
        }


def header_value(head_lower: bytes, name: bytes) -> bytes | None:
    i = head_lower.find(b"\r\n" + name + b":")
    if i < 0:
        return None
    start = i + len(name) + 3
    end = head_lower.find(b"\r\n", start)
    return head_lower[start : end if end >= 0 else len(head_lower)].strip()


class BackendProtocol(asyncio.Protocol):
    """One server: `fast` answers at once, `delay` answers after a fixed time, `silent` never,
    `control` answers every request with the counters of all servers in this process as JSON."""

    def __init__(self, name: str, mode: str, delay: float, stats: ServerStats) -> None:
        self.name = name
        self.mode = mode
        self.delay = delay
        self.stats = stats
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stats.connections[self.name] += 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            length = header_value(head, b"content-length")
            size = int(length) if length else 0
            if len(self.buf) < end + 4 + size:
                return
            del self.buf[: end + 4 + size]
            close = header_value(head, b"connection") == b"close"
            if self.mode == "control":
                self._write(self._control_response(), close=True)
                return
            self.stats.requests[self.name] += 1
            host = (header_value(head, b"host") or b"").decode("latin-1")
            self.stats.hosts.setdefault(self.name, Counter())[host] += 1
            if self.mode == "silent":
                continue
            if self.mode == "delay":
                asyncio.get_running_loop().call_later(self.delay, self._write, None, close)
            else:
                self._write(None, close)

    def _control_response(self) -> bytes:
        body = json.dumps(self.stats.snapshot()).encode()
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )

    def _write(self, data: bytes | None, close: bool) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(data if data is not None else (CLOSE_RESPONSE if close else OK_RESPONSE))
        if close:
            t.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def serve_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py _serve")
    p.add_argument("--server", action="append", default=[], help="NAME=fast|silent|delay:SECONDS")
    p.add_argument("--ready-file", required=True, type=Path)
    args = p.parse_args(argv)
    return asyncio.run(_serve(args.server, args.ready_file))


async def _serve(specs: list[str], ready_file: Path) -> int:
    loop = asyncio.get_running_loop()
    stats = ServerStats()
    servers: list[asyncio.Server] = []
    ports: dict[str, int] = {}
    for spec in [*specs, "control=control"]:
        name, _, kind = spec.partition("=")
        mode, _, arg = kind.partition(":")
        delay = float(arg) if arg else 0.0

        def factory(name: str = name, mode: str = mode, delay: float = delay) -> asyncio.Protocol:
            return BackendProtocol(name, mode, delay, stats)

        server = await loop.create_server(factory, LOOPBACK, 0, backlog=1024)
        servers.append(server)
        ports[name] = server.sockets[0].getsockname()[1]
        stats.requests[name] = 0
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "ports": ports}))
    tmp.rename(ready_file)
    await stopping.wait()
    for server in servers:
        server.close()
    return 0


# ============================================================================================
# Load generators (child process `_load`): closed-loop keep-alive and open-loop fixed-rate.
# ============================================================================================

REQUEST = (
    f"GET {BENCH_PATH} HTTP/1.1\r\nHost: {BENCH_HOST}\r\nUser-Agent: meshmirror-bench\r\n"
    "Accept: */*\r\n\r\n"
).encode()


class ClientConn:
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


async def open_loop(
    port: int, rate: float, duration: float, timeout: float, max_conns: int, preopen: int = 16
) -> dict[str, Any]:
    """Requests start at fixed times (t0 + i/rate) whatever the responses do; latency counts
    from the intended start, so queueing in the client shows (no coordinated omission)."""
    n = max(1, int(rate * duration))
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    non_2xx = 0
    idle: list[ClientConn] = []
    sem = asyncio.Semaphore(max_conns)
    opened = 0

    async def one(intended: float) -> None:
        nonlocal non_2xx, opened
        async with sem:
            conn = idle.pop() if idle else None
            try:
                if conn is None:
                    conn = await ClientConn.open(port)
                    opened += 1
                status, close = await conn.request()
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
    tasks: set[asyncio.Task[None]] = set()
    timed_out = 0
    t0 = time.perf_counter() + 0.02
    behind = 0.0
    for i in range(n):
        intended = t0 + i / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            behind = max(behind, -delay)
        tasks.add(asyncio.create_task(one(intended)))
        # Reap finished tasks and time out old ones so memory stays bounded on a stuck proxy.
        if i % 64 == 0:
            tasks = {t for t in tasks if not t.done()}
    send_end = time.perf_counter()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        timed_out = len(pending)
        if pending:
            await asyncio.wait(pending, timeout=1.0)
    if timed_out:
        errors["timeout"] += timed_out
    for conn in idle:
        conn.close()
    elapsed = send_end - t0
    return {
        "mode": "open",
        "tool": "python",
        "rate": rate,
        "duration_s": round(elapsed, 3),
        "scheduled": n,
        "requests": len(latencies),
        "connections_opened": opened,
        "dispatch_lag_max_ms": round(behind * 1000, 3),
        "errors": sum(errors.values()) + non_2xx,
        "error_classes": {**errors, **({"status": non_2xx} if non_2xx else {})},
        **latency_figures(latencies),
    }


def load_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py _load")
    p.add_argument("mode", choices=["closed", "open"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--max-connections", type=int, default=256)
    args = p.parse_args(argv)
    if args.mode == "closed":
        res = asyncio.run(closed_loop(args.port, args.connections, args.duration, args.timeout))
    else:
        res = asyncio.run(
            open_loop(args.port, args.rate, args.duration, args.timeout, args.max_connections)
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


# ============================================================================================
# Orchestrator: processes, /proc readings, tools.
# ============================================================================================


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path


class Children:
    """Every process this run started; each is stopped by its own pid."""

    def __init__(self) -> None:
        self.live: list[Child] = []

    def start(
        self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None
    ) -> Child:
        out: IO[bytes]
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        child = Child(name, proc, log_path)
        self.live.append(child)
        return child

    def stop(self, child: Child, grace: float = 10.0) -> int | None:
        proc = child.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"{child.name} (pid {proc.pid}) ignored SIGTERM for {grace}s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if child in self.live:
            self.live.remove(child)
        return proc.returncode

    def stop_all(self) -> None:
        for child in reversed(list(self.live)):
            self.stop(child, grace=5.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port nothing listens on (connections are refused), kept unused for this run."""
    return free_port()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree(pid: int) -> list[int]:
    """pid and its live descendants (meshmirror's mirror sender process is a child)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of the proxy and its children: the copies' cost counts wherever it runs."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            total += cpu_seconds(p)
    return total


def tree_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM summed over the proxy and its children (the sum of peaks is an upper
    bound of the peak of the sum)."""
    out = {"VmRSS": 0.0, "VmHWM": 0.0}
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            for key, value in memory_mb(p).items():
                out[key] += value
    return out


def busy_seconds() -> float:
    """CPU seconds spent busy on all CPUs since boot (/proc/stat), for the noise figure."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:9]]
    return (sum(vals) - vals[3] - vals[4]) / CLK_TCK


def own_seconds(children: Children) -> float:
    """CPU seconds of this run: live children, reaped children (load generators), itself."""
    total = 0.0
    for child in children.live:
        with contextlib.suppress(OSError, ValueError):
            total += tree_cpu_seconds(child.proc.pid)
    for who in (resource.RUSAGE_CHILDREN, resource.RUSAGE_SELF):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


@dataclass
class NoiseMeter:
    """CPU used by processes that are not part of this run, in cores, over a window."""

    children: Children
    t: float = 0.0
    busy: float = 0.0
    own: float = 0.0

    def start(self) -> None:
        self.t, self.busy, self.own = time.monotonic(), busy_seconds(), own_seconds(self.children)

    def cores(self) -> float:
        wall = time.monotonic() - self.t
        other = (busy_seconds() - self.busy) - (own_seconds(self.children) - self.own)
        return round(max(0.0, other) / wall, 3) if wall > 0 else 0.0


def memory_mb(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024
    return out


def wait_until(what: str, cond: Callable[[], bool], timeout: float, child: Child | None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if child is not None and child.proc.poll() is not None:
            raise BenchError(
                f"{child.name} exited with {child.proc.returncode} while waiting for {what}: "
                + tail(child.log_path)
            )
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def tail(path: Path, n: int = 8) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in lines[-n:])


def listening(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def http_get_json(port: int, path: str = "/stats", timeout: float = 5.0) -> Any:
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: control\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def run_quiet(argv: list[str], timeout: float = 30.0) -> tuple[int, str]:
    try:
        p = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, str(e)
    return p.returncode, (p.stdout + p.stderr).strip()


def ensure_tools(need: dict[str, str], install: bool) -> dict[str, str]:
    """Return tool -> path or "not run: REASON". Installs missing ones from Debian's packages
    (`apt-get update` once, then `apt-get install -y`) when allowed and possible."""
    found = {tool: shutil.which(tool) or "" for tool in need}
    missing = [tool for tool, path in found.items() if not path]
    if missing and install:
        reason = ""
        if os.geteuid() != 0:
            reason = "not root, cannot apt-get install"
        elif not shutil.which("apt-get"):
            reason = "no apt-get on this machine"
        else:
            log(f"installing {', '.join(missing)} from Debian's packages (apt-get)")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            rc, out = 0, ""
            try:
                p = subprocess.run(
                    ["apt-get", "update", "-qq"],
                    capture_output=True,
                    text=True,
                    timeout=300,
                    env=env,
                    stdin=subprocess.DEVNULL,
                )
                rc, out = p.returncode, p.stdout + p.stderr
                for tool in missing:
                    for pkg in need[tool].split("|"):
                        p = subprocess.run(
                            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg],
                            capture_output=True,
                            text=True,
                            timeout=600,
                            env=env,
                            stdin=subprocess.DEVNULL,
                        )
                        rc, out = p.returncode, p.stdout + p.stderr
                        if rc == 0:
                            break
            except (OSError, subprocess.TimeoutExpired) as e:
                rc, out = -1, str(e)
            if rc != 0:
                reason = f"apt-get failed: {out.strip()[-200:]}"
        for tool in missing:
            found[tool] = shutil.which(tool) or f"not run: {reason or 'install failed'}"
    for tool in missing:
        if not found[tool]:
            found[tool] = "not run: not installed (--no-install)"
    # The package may ship nginx outside PATH for non-root users.
    if (
        need.get("nginx")
        and found["nginx"].startswith("not run")
        and Path("/usr/sbin/nginx").exists()
    ):
        found["nginx"] = "/usr/sbin/nginx"
    return found


def usable(path: str) -> bool:
    return bool(path) and not path.startswith("not run")


# ============================================================================================
# Points and their configurations.
# ============================================================================================


@dataclass(frozen=True)
class Point:
    name: str
    label: str
    proxy: str  # "mitmdump" | "meshmirror" | "nginx"
    mirror: str | None = None  # backend role the copies go to
    percent: float | None = None
    matching: bool = True
    options: tuple[str, ...] = ()  # extra `--set` options for meshmirror


POINTS: tuple[Point, ...] = (
    Point("baseline", "plain mitmdump --mode reverse: (no addon)", "mitmdump"),
    Point("nomatch", "meshmirror, no matching route", "meshmirror", "healthy", 100, False),
    Point("m0", "meshmirror, 0% mirrored", "meshmirror", "healthy", 0),
    Point("m50", "meshmirror, 50% to a healthy mirror", "meshmirror", "healthy", 50),
    Point("m100", "meshmirror, 100% to a healthy mirror", "meshmirror", "healthy", 100),
    Point(
        "m100-loop",
        "meshmirror, 100% to a healthy mirror, copies sent from the proxy's loop",
        "meshmirror",
        "healthy",
        100,
        options=("mirror_sender=loop",),
    ),
    Point("slow100", "meshmirror, 100% to a mirror answering after 2 s", "meshmirror", "slow", 100),
    Point(
        "silent100", "meshmirror, 100% to a mirror that never answers", "meshmirror", "silent", 100
    ),
    Point("refused100", "meshmirror, 100% to a refusing port", "meshmirror", "refused", 100),
    Point("nginx", "nginx proxy_pass, no mirror (nginx's own baseline)", "nginx"),
    Point("nginx-m100", "nginx `mirror`, healthy mirror", "nginx", "healthy", 100),
    Point("nginx-slow100", "nginx `mirror`, mirror answering after 2 s", "nginx", "slow", 100),
)
POINT_NAMES = [p.name for p in POINTS]


def meshmirror_yaml(point: Point, primary_port: int, mirror_port: int) -> str:
    hosts = BENCH_HOST if point.matching else "other.local"
    return f"""\
# Generated by scripts/bench.py for point {point.name}.
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: bench-primary
  namespace: default
spec:
  hosts: [primary.bench]
  location: MESH_EXTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {LOOPBACK}, ports: {{http: {primary_port}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: bench-mirror
  namespace: default
spec:
  hosts: [mirror.bench]
  location: MESH_EXTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {LOOPBACK}, ports: {{http: {mirror_port}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: bench
  namespace: default
spec:
  hosts: [{hosts}]
  http:
  - route:
    - destination: {{host: primary.bench, port: {{number: 80}}}}
    mirror: {{host: mirror.bench, port: {{number: 80}}}}
    mirrorPercentage: {{value: {float(point.percent or 0)}}}
"""


# Loaded after addons/mirror.py: on shutdown (after the addon's own `done` has drained its copies,
# hooks run in order and awaitables are awaited) it writes the `mirror.stats` command's JSON.
STATS_SCRIPT = """\
import json
import os

from mitmproxy import ctx


class BenchStats:
    def done(self):
        path = os.environ["MESHMIRROR_BENCH_STATS"]
        try:
            text = ctx.master.commands.call("mirror.stats")
        except Exception as e:
            text = json.dumps({"error": repr(e)})
        with open(path, "w") as f:
            f.write(text if isinstance(text, str) else json.dumps(text))


addons = [BenchStats()]
"""


def nginx_conf(d: Path, port: int, primary_port: int, mirror_port: int | None) -> str:
    mirror = ""
    mirror_loc = ""
    if mirror_port is not None:
        mirror = "            mirror /__mirror;\n"
        mirror_loc = f"""
        location = /__mirror {{
            internal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {SHADOW_HOST};
            proxy_pass http://mirror_up$request_uri;
        }}"""
    mirror_up = (
        f"    upstream mirror_up {{ server {LOOPBACK}:{mirror_port}; keepalive 64; }}\n"
        if mirror_port is not None
        else ""
    )
    return f"""\
# Generated by scripts/bench.py: one process, nothing outside {d}.
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 8192;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream primary_up {{ server {LOOPBACK}:{primary_port}; keepalive 64; }}
{mirror_up}    server {{
        listen {LOOPBACK}:{port} backlog=1024;
        keepalive_requests 1000000;
        location / {{
{mirror}            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_pass http://primary_up;
        }}{mirror_loc}
    }}
}}
"""


SUMMARY_RE = re.compile(r"mirror summary: (.*)$", re.MULTILINE)


def parse_summary(text: str) -> dict[str, Any] | None:
    """The addon's last `mirror summary:` line -> {cluster: {sampled, sent, failed{}, ...}}."""
    found = SUMMARY_RE.findall(text)
    if not found:
        return None
    line = found[-1].strip()
    out: dict[str, Any] = {"line": line, "clusters": {}}
    if line.startswith("nothing"):
        return out
    for part in line.split("; "):
        name, _, rest = part.rpartition(": ")
        c: dict[str, Any] = {"failed": {}, "dropped": {}, "skipped": {}}
        for item in rest.split():
            key, _, value = item.partition("=")
            if key in ("sampled", "sent") and value.isdigit():
                c[key] = int(value)
            elif key in ("failed", "dropped", "skipped"):
                for kv in value.split(","):
                    k, _, v = kv.rpartition(":")
                    if v.isdigit():
                        c[key][k] = int(v)
        out["clusters"][name] = c
    return out


# ============================================================================================
# One measurement: a point in a round.
# ============================================================================================


@dataclass
class Settings:
    rounds: int
    duration: float
    open_duration: float
    warmup: float
    connections: int
    rate: float | None
    timeout: float
    max_open_conns: int
    loadgen: str  # "wrk" or "python"
    wrk: str
    nginx: str
    termlog: str
    soak: float
    soak_point: str
    quick: bool


@dataclass
class Env:
    settings: Settings
    children: Children
    tmp: Path
    ports: dict[str, int]  # role -> backend port ("refused" is a closed port)
    controls: dict[str, int]  # backend process -> control port
    rate: float | None = None


def backend_counts(env: Env) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": {}, "hosts": {}}
    for port in env.controls.values():
        snap = http_get_json(port)
        out["requests"].update(snap["requests"])
        out["hosts"].update(snap["hosts"])
    return out


def start_backends(children: Children, tmp: Path) -> tuple[dict[str, int], dict[str, int]]:
    specs = {
        "primary": ["primary=fast"],
        "mirrors": ["healthy=fast", f"slow=delay:{SLOW_DELAY}", "silent=silent"],
    }
    ports: dict[str, int] = {}
    controls: dict[str, int] = {}
    for proc_name, servers in specs.items():
        ready = tmp / f"backend-{proc_name}.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "_serve", "--ready-file", str(ready)]
        for s in servers:
            argv += ["--server", s]
        child = children.start(f"backend {proc_name}", argv, tmp / f"backend-{proc_name}.log")
        wait_until(f"backend {proc_name}", ready.exists, 20.0, child)
        info = json.loads(ready.read_text())
        controls[proc_name] = info["ports"].pop("control")
        ports.update(info["ports"])
    ports["refused"] = closed_port()
    return ports, controls


def start_proxy(env: Env, point: Point, tag: str) -> tuple[Child, int, Path | None]:
    s = env.settings
    port = free_port()
    d = env.tmp / tag
    d.mkdir(parents=True, exist_ok=True)
    primary = env.ports["primary"]
    mirror_port = env.ports[point.mirror] if point.mirror else None
    stats_path: Path | None = None
    if point.proxy == "nginx":
        conf = d / "nginx.conf"
        conf.write_text(nginx_conf(d, port, primary, mirror_port))
        argv = [s.nginx, "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")]
        child = env.children.start(f"nginx {tag}", argv, d / "proxy.log")
    else:
        argv = [
            str(BIN / "mitmdump"),
            "--mode",
            f"reverse:http://{LOOPBACK}:{primary}",
            "--listen-host",
            LOOPBACK,
            "-p",
            str(port),
            "--set",
            "flow_detail=0",
            "--set",
            f"termlog_verbosity={s.termlog}",
            # The addon turns this on itself; the baseline gets it too so only the addon differs.
            "--set",
            "keep_host_header=true",
        ]
        environ = dict(os.environ)
        if point.proxy == "meshmirror":
            assert mirror_port is not None
            cfg = d / "bench.yaml"
            cfg.write_text(meshmirror_yaml(point, primary, mirror_port))
            script = env.tmp / "bench_stats_addon.py"
            if not script.exists():
                script.write_text(STATS_SCRIPT)
            stats_path = d / "mirror-stats.json"
            environ["MESHMIRROR_BENCH_STATS"] = str(stats_path)
            argv += [
                "-s",
                str(ADDON),
                "-s",
                str(script),
                "--set",
                f"mirror_config={cfg}",
                "--set",
                "mirror_verbosity=summary",
                "--set",
                "mirror_timeout=1s",
            ]
            for option in point.options:
                argv += ["--set", option]
        child = env.children.start(f"mitmdump {tag}", argv, d / "proxy.log", env=environ)
    wait_until(f"{child.name} listening on {port}", lambda: listening(port), 30.0, child)
    return child, port, stats_path


def run_load(
    env: Env,
    mode: str,
    port: int,
    duration: float,
    *,
    conns: int | None = None,
    rate: float | None = None,
    watch_pid: int | None = None,
    use_wrk: bool | None = None,
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """Run one load (wrk or `_load` child) to completion; sample the proxy's RSS meanwhile."""
    s = env.settings
    conns = conns or s.connections
    wrk = (s.loadgen == "wrk") if use_wrk is None else use_wrk
    out_path = env.tmp / f"load-{time.monotonic_ns()}.out"
    if mode == "closed" and wrk:
        lua = env.tmp / "bench.lua"
        if not lua.exists():
            lua.write_text(WRK_LUA)
        secs = max(1, round(duration))
        argv = [s.wrk, "-t1", f"-c{conns}", f"-d{secs}s", "--timeout", f"{s.timeout:g}s"]
        argv += ["-s", str(lua), f"http://{LOOPBACK}:{port}{BENCH_PATH}"]
    else:
        argv = [sys.executable, str(Path(__file__).resolve()), "_load", mode, "--port", str(port)]
        argv += ["--duration", f"{duration}", "--timeout", f"{s.timeout}"]
        argv += ["--connections", str(conns), "--max-connections", str(s.max_open_conns)]
        if rate is not None:
            argv += ["--rate", f"{rate}"]
    child = env.children.start(f"load {mode}", argv, out_path)
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    deadline = t0 + duration + s.timeout + 30
    try:
        while child.proc.poll() is None:
            if time.monotonic() > deadline:
                raise BenchError(f"load generator {argv[0]} did not finish by its deadline")
            if watch_pid is not None:
                with contextlib.suppress(OSError):
                    samples.append((time.monotonic() - t0, tree_memory_mb(watch_pid)["VmRSS"]))
            time.sleep(0.25 if duration < 5 else 1.0)
    finally:
        env.children.stop(child)
    text = out_path.read_text(errors="replace")
    if child.proc.returncode != 0:
        raise BenchError(f"load generator exited {child.proc.returncode}: {text.strip()[-300:]}")
    if argv[0] == s.wrk:
        return parse_wrk(text, conns), samples
    return json.loads(text.strip().splitlines()[-1]), samples


def measure(env: Env, point: Point, rnd: int) -> dict[str, Any]:
    s = env.settings
    tag = f"r{rnd}-{point.name}"
    res: dict[str, Any] = {"round": rnd}
    before = backend_counts(env)
    t_start = time.monotonic()
    child, port, stats_path = start_proxy(env, point, tag)
    pid = child.proc.pid
    try:
        res["startup_s"] = round(time.monotonic() - t_start, 3)
        warm, _ = run_load(env, "closed", port, s.warmup, conns=4, use_wrk=False)
        if warm["requests"] == 0 or warm["errors"]:
            state = "alive" if child.proc.poll() is None else f"exited {child.proc.returncode}"
            raise BenchError(
                f"warm-up failed: {warm['requests']} ok, {warm['error_classes']}; proxy {state}"
                f"; log: {tail(child.log_path)}"
            )
        rss_warm = tree_memory_mb(pid)["VmRSS"]
        noise = NoiseMeter(env.children)
        noise.start()
        c0 = tree_cpu_seconds(pid)
        closed, samples_c = run_load(env, "closed", port, s.duration, watch_pid=pid)
        c1 = tree_cpu_seconds(pid)
        res["other_cpu_cores"] = noise.cores()
        if env.rate is None:
            env.rate = max(20.0, round(closed["rps"] / 2))
            log(f"fixed rate for the open-loop runs: {env.rate:g} req/s (half of {point.name})")
        opened, samples_o = run_load(
            env, "open", port, s.open_duration, rate=env.rate, watch_pid=pid
        )
        c2 = tree_cpu_seconds(pid)
        mem = tree_memory_mb(pid)
        res["closed"] = closed
        res["open"] = opened
        res["cpu_closed_s"] = round(c1 - c0, 3)
        res["cpu_util_closed"] = round((c1 - c0) / closed["duration_s"], 3)
        res["cpu_ms_per_req"] = (
            round((c1 - c0) / closed["requests"] * 1000, 4) if closed["requests"] else None
        )
        res["cpu_open_s"] = round(c2 - c1, 3)
        res["cpu_ms_per_req_open"] = (
            round((c2 - c1) / opened["requests"] * 1000, 4) if opened["requests"] else None
        )
        res["rss_after_warmup_mb"] = round(rss_warm, 1)
        res["rss_end_mb"] = round(mem["VmRSS"], 1)
        res["peak_rss_mb"] = round(mem["VmHWM"], 1)
        res["rss_growth_mb"] = round(mem["VmHWM"] - rss_warm, 1)
        res["rss_samples_max_mb"] = round(max((r for _, r in samples_c + samples_o), default=0), 1)
    finally:
        t_stop = time.monotonic()
        rc = env.children.stop(child, grace=15.0)
        res["stop_s"] = round(time.monotonic() - t_stop, 3)
        res["exit_code"] = rc
    proxy_log = child.log_path.read_text(errors="replace")
    res["log_tail"] = proxy_log.strip().splitlines()[-5:]
    after = settled_counts(env, point)
    delta = {
        k: after["requests"].get(k, 0) - before["requests"].get(k, 0) for k in after["requests"]
    }
    res["backend_requests"] = delta
    res["mirror_hosts"] = after["hosts"].get(point.mirror or "", {})
    mirror = res["mirror"] = {"received": delta.get(point.mirror, 0) if point.mirror else 0}
    if point.proxy == "meshmirror":
        stats: Any = None
        if stats_path is not None and stats_path.exists():
            stats = json.loads(stats_path.read_text() or "null")
        if not isinstance(stats, dict) or "total" not in stats:
            raise BenchError(
                f"no mirror.stats from the addon ({stats!r}); log: {tail(child.log_path)}"
            )
        total = stats["total"]
        mirror.update(
            sampled=total["sampled"],
            sent=total["sent"],
            failed=total["failed"],
            dropped=total["dropped"],
            skipped=total["skipped"],
            in_flight=total.get("in_flight", 0),
            not_mirrored=stats.get("requests_not_mirrored", {}),
        )
        finished = (
            total["sent"]
            + sum(total["failed"].values())
            + sum(total["dropped"].values())
            + sum(total["skipped"].values())
        )
        mirror["accounted"] = finished == total["sampled"]
        res["summary"] = parse_summary(proxy_log)
        summ = res["summary"]
        if summ and summ["clusters"]:
            sampled = sum(c.get("sampled", 0) for c in summ["clusters"].values())
            mirror["summary_agrees"] = sampled == total["sampled"]
    elif point.proxy == "nginx" and point.mirror:
        # nginx mirrors every request: what the primary served is what was sampled.
        mirror["sampled"] = delta.get("primary", 0)
    if rc not in (0, None) and point.proxy != "nginx":
        res["warning"] = f"proxy exited with {rc}"
    return res


def settled_counts(env: Env, point: Point) -> dict[str, Any]:
    """Backend counters once the mirror's count stops moving (copies still on the wire)."""
    deadline = time.monotonic() + 3.0
    last = backend_counts(env)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = backend_counts(env)
        if now["requests"] == last["requests"]:
            return now
        last = now
    return last


def soak(env: Env, point: Point) -> dict[str, Any]:
    """One long closed-loop run at full load with the proxy's RSS sampled every second."""
    s = env.settings
    child, port, _ = start_proxy(env, point, f"soak-{point.name}")
    pid = child.proc.pid
    try:
        run_load(env, "closed", port, s.warmup, conns=4, use_wrk=False)
        rss0 = tree_memory_mb(pid)["VmRSS"]
        c0 = tree_cpu_seconds(pid)
        load, samples = run_load(env, "closed", port, s.soak, watch_pid=pid)
        c1 = tree_cpu_seconds(pid)
        mem = tree_memory_mb(pid)
    finally:
        env.children.stop(child, grace=15.0)
    half = [r for t, r in samples if t >= s.soak / 2]
    return {
        "point": point.name,
        "duration_s": s.soak,
        "rps": load["rps"],
        "requests": load["requests"],
        "errors": load["errors"],
        "cpu_ms_per_req": round((c1 - c0) / load["requests"] * 1000, 4)
        if load["requests"]
        else None,
        "rss_after_warmup_mb": round(rss0, 1),
        "rss_end_mb": round(mem["VmRSS"], 1),
        "peak_rss_mb": round(mem["VmHWM"], 1),
        "growth_mb": round(mem["VmHWM"] - rss0, 1),
        "second_half_growth_mb": round(max(half) - min(half), 1) if half else None,
        "rss_samples_mb": [[round(t, 1), round(r, 1)] for t, r in samples],
    }


# ============================================================================================
# Aggregation, targets, output.
# ============================================================================================


def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


def aggregate(point: Point, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rounds if "closed" in r]
    agg: dict[str, Any] = {"rounds_ok": len(ok), "rounds_failed": len(rounds) - len(ok)}
    if not ok:
        return agg

    def col(section: str, key: str) -> list[float | None]:
        return [r[section].get(key) for r in ok]

    agg.update(
        rps=med(col("closed", "rps")),
        rps_per_round=[r["closed"]["rps"] for r in ok],
        closed_p50_ms=med(col("closed", "p50_ms")),
        closed_p99_ms=med(col("closed", "p99_ms")),
        closed_max_ms=max((v for v in col("closed", "max_ms") if v is not None), default=None),
        open_rate=ok[0]["open"]["rate"],
        open_p50_ms=med(col("open", "p50_ms")),
        open_p99_ms=med(col("open", "p99_ms")),
        open_p99_per_round=[r["open"]["p99_ms"] for r in ok],
        open_max_ms=max((v for v in col("open", "max_ms") if v is not None), default=None),
        errors=sum(r["closed"]["errors"] + r["open"]["errors"] for r in ok),
        requests=sum(r["closed"]["requests"] + r["open"]["requests"] for r in ok),
        cpu_ms_per_req=med([r["cpu_ms_per_req"] for r in ok]),
        cpu_util_closed=med([r["cpu_util_closed"] for r in ok]),
        other_cpu_cores_max=max(r.get("other_cpu_cores", 0.0) for r in ok),
        peak_rss_mb=max(r["peak_rss_mb"] for r in ok),
        rss_growth_mb=max(r["rss_growth_mb"] for r in ok),
    )
    m: dict[str, Any] = {"received": sum(r["mirror"]["received"] for r in ok)}
    if point.mirror and all("sampled" in r["mirror"] for r in ok):
        m["sampled"] = sum(r["mirror"]["sampled"] for r in ok)
    if point.proxy == "meshmirror":
        m["sent"] = sum(r["mirror"]["sent"] for r in ok)
        for key in ("failed", "dropped", "skipped"):
            c: Counter[str] = Counter()
            for r in ok:
                c.update(r["mirror"][key])
            m[key] = dict(c)
        m["accounted"] = all(r["mirror"]["accounted"] for r in ok)
        m["in_flight_at_exit"] = sum(r["mirror"]["in_flight"] for r in ok)
        agrees = [r["mirror"].get("summary_agrees") for r in ok]
        m["summary_line_agrees"] = None if None in agrees else all(agrees)
    agg["mirror"] = m
    return agg


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def check(
    name: str, value: float | None, limit: float, op: str, measured: str = "", peer: str = ""
) -> dict[str, Any]:
    if value is None:
        verdict = "not run"
    elif op == ">=":
        verdict = "PASS" if value >= limit else "FAIL"
    else:
        verdict = "PASS" if value <= limit else "FAIL"
    return {
        "target": name,
        "value": value,
        "limit": f"{op} {limit:g}",
        "measured": measured,
        "peer": peer,
        "verdict": verdict,
    }


def pair(x: float | None, y: float | None, unit: str = "") -> str:
    return "-" if x is None or y is None else f"{fmt(x)} / {fmt(y)}{unit}"


def fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def targets(aggs: dict[str, dict[str, Any]], routing: dict[str, Any], soak_res: Any) -> list[Any]:
    def a(name: str, key: str) -> Any:
        return aggs.get(name, {}).get(key)

    out: list[dict[str, Any]] = []
    base_rps, base_p99 = a("baseline", "rps"), a("baseline", "open_p99_ms")
    ng_rps, ng_p99 = a("nginx", "rps"), a("nginx", "open_p99_ms")
    ng_h_rps, ng_h_p99 = a("nginx-m100", "rps"), a("nginx-m100", "open_p99_ms")
    for name, limit in (("nomatch", TARGET_NOMIRROR_RPS), ("m0", TARGET_NOMIRROR_RPS)):
        r = ratio(a(name, "rps"), base_rps)
        out.append(
            check(f"{name}: throughput / baseline", r, limit, ">=", pair(a(name, "rps"), base_rps))
        )
    r = ratio(a("m100", "rps"), base_rps)
    peer = ratio(ng_h_rps, ng_rps)
    out.append(
        check(
            "m100: throughput / baseline",
            r,
            TARGET_HEALTHY_RPS,
            ">=",
            pair(a("m100", "rps"), base_rps),
            f"nginx-m100/nginx {fmt(peer)}",
        )
    )
    r = ratio(a("m100", "open_p99_ms"), base_p99)
    out.append(
        check(
            "m100: fixed-rate p99 / baseline p99",
            r,
            TARGET_HEALTHY_P99,
            "<=",
            pair(a("m100", "open_p99_ms"), base_p99, " ms"),
            f"nginx-m100/nginx {fmt(ratio(ng_h_p99, ng_p99))}",
        )
    )
    h_rps, h_p99 = a("m100", "rps"), a("m100", "open_p99_ms")
    for name in ("slow100", "silent100", "refused100"):
        peer_rps = peer_p99 = ""
        if name == "slow100":
            peer_rps = f"nginx-slow100/nginx-m100 {fmt(ratio(a('nginx-slow100', 'rps'), ng_h_rps))}"
            peer_p99 = "nginx-slow100/nginx-m100 " + fmt(
                ratio(a("nginx-slow100", "open_p99_ms"), ng_h_p99)
            )
        out.append(
            check(
                f"{name}: throughput / m100",
                ratio(a(name, "rps"), h_rps),
                TARGET_FAULT_RPS,
                ">=",
                pair(a(name, "rps"), h_rps),
                peer_rps,
            )
        )
        out.append(
            check(
                f"{name}: fixed-rate p99 / m100 p99",
                ratio(a(name, "open_p99_ms"), h_p99),
                TARGET_FAULT_P99,
                "<=",
                pair(a(name, "open_p99_ms"), h_p99, " ms"),
                peer_p99,
            )
        )
        out.append(
            check(
                f"{name}: peak RSS growth after warm-up (MB)",
                a(name, "rss_growth_mb"),
                TARGET_RSS_GROWTH_MB,
                "<=",
                pair(a(name, "rss_growth_mb"), a(name, "peak_rss_mb"), " MB (growth / peak)"),
            )
        )
    if soak_res and "growth_mb" in soak_res:
        out.append(
            check(
                f"soak {soak_res['point']} {soak_res['duration_s']:g} s full load: RSS growth (MB)",
                soak_res["growth_mb"],
                TARGET_RSS_GROWTH_MB,
                "<=",
                f"{soak_res['rss_after_warmup_mb']} -> peak {soak_res['peak_rss_mb']} MB, "
                f"second half {soak_res['second_half_growth_mb']} MB",
            )
        )
    for name in ("nomatch", "m0", "m50", "m100", "m100-loop", "slow100", "silent100", "refused100"):
        m = aggs.get(name, {}).get("mirror")
        if m is None:
            continue
        fin = m["sent"] + sum(m["failed"].values()) + sum(m["dropped"].values())
        fin += sum(m["skipped"].values())
        out.append(
            check(
                f"{name}: sent+failed+dropped+skipped = sampled",
                1.0 if m["accounted"] else 0.0,
                1.0,
                ">=",
                f"{fin} = {m['sampled']}",
            )
        )
    for name in ("m50", "m100", "m100-loop"):
        m = aggs.get(name, {}).get("mirror")
        if m is None:
            continue
        peer = ""
        if name == "m100" and "mirror" in aggs.get("nginx-m100", {}):
            nm = aggs["nginx-m100"]["mirror"]
            peer = f"nginx {fmt(ratio(nm['received'], nm.get('sampled')), 4)}"
        out.append(
            check(
                f"{name}: healthy mirror received / sampled",
                ratio(m["received"], m["sampled"]) if m["sampled"] else None,
                TARGET_DELIVERY,
                ">=",
                f"{m['received']} / {m['sampled']}",
                peer,
            )
        )
    out.append(
        check(
            "routing: compile 10,000 rules over 1,000 hosts (s)",
            routing.get("compile_s"),
            TARGET_COMPILE_S,
            "<=",
            routing.get("status", ""),
        )
    )
    out.append(
        check(
            "routing: median match (us)",
            routing.get("median_match_us"),
            TARGET_MATCH_US,
            "<=",
            routing.get("status", ""),
        )
    )
    return out


def figures_table(aggs: dict[str, dict[str, Any]], not_run: dict[str, str]) -> str:
    head = (
        f"{TABLE_HEADER} x base | closed p50 / p99 / max ms | fixed-rate p50 / p99 / max ms "
        "| p99 x base | errors | mirror recv / sampled | failed / dropped / skipped "
        "| CPU ms/req (util) | peak RSS MB | other CPU |"
    )
    lines = [head, "|" + "---|" * 12]
    for p in POINTS:
        if p.name in not_run:
            lines.append(f"| {p.name} | not run: {not_run[p.name]} |" + " |" * 10)
            continue
        a = aggs.get(p.name)
        if a is None:
            continue
        if "rps" not in a:
            lines.append(f"| {p.name} | failed in every round |" + " |" * 10)
            continue
        base = aggs.get("nginx" if p.proxy == "nginx" else "baseline", {})
        m = a.get("mirror", {})
        recv = f"{m.get('received', 0)} / {m['sampled']}" if "sampled" in m else "-"
        fds = "-"
        if p.proxy == "meshmirror":

            def short(c: dict[str, int]) -> str:
                return ",".join(f"{k}:{v}" for k, v in c.items()) or "0"

            fds = f"{short(m['failed'])} / {short(m['dropped'])} / {short(m['skipped'])}"
            if not m["accounted"]:
                fds += " (UNACCOUNTED)"
        lines.append(
            f"| {p.name} | {fmt(a['rps'], 0)} | {fmt(ratio(a['rps'], base.get('rps')))} "
            f"| {fmt(a['closed_p50_ms'])} / {fmt(a['closed_p99_ms'])} "
            f"/ {fmt(a['closed_max_ms'], 0)} "
            f"| {fmt(a['open_p50_ms'])} / {fmt(a['open_p99_ms'])} / {fmt(a['open_max_ms'], 0)} "
            f"| {fmt(ratio(a['open_p99_ms'], base.get('open_p99_ms')))} | {a['errors']} "
            f"| {recv} | {fds} | {fmt(a['cpu_ms_per_req'], 3)} ({fmt(a['cpu_util_closed'])}) "
            f"| {fmt(a['peak_rss_mb'], 0)} | {fmt(a['other_cpu_cores_max'])} |"
        )
    return "\n".join(lines)


def targets_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| target | measured | value | limit | nginx, same measure | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['measured'] or '-'} | {fmt(r['value'], 3)} | {r['limit']} "
            f"| {r['peer'] or '-'} | {r['verdict']} |"
        )
    return "\n".join(lines)


def svg_chart(aggs: dict[str, dict[str, Any]]) -> str:
    """Two horizontal bar panels: throughput ratio to the baseline, fixed-rate p99 (ms)."""
    rows = [p for p in POINTS if "rps" in aggs.get(p.name, {})]
    bar_h, gap, left, width = 18, 6, 250, 300
    height = 60 + len(rows) * (bar_h + gap)
    total_w = left + width + 60 + 40 + width + 80
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{total_w}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-weight="bold">throughput / own baseline '
        "(closed loop)</text>",
    ]
    x2 = left + width + 100
    parts.append(f'<text x="{x2}" y="20" font-weight="bold">fixed-rate p99 (ms, log scale)</text>')
    p99s = [aggs[p.name].get("open_p99_ms") or 0.0 for p in rows]
    p99_max = max([v for v in p99s if v > 0], default=1.0)
    lo = math.log10(max(0.1, min([v for v in p99s if v > 0], default=0.1)) / 2)
    hi = math.log10(p99_max * 1.2)
    for i, p in enumerate(rows):
        a = aggs[p.name]
        y = 40 + i * (bar_h + gap)
        base = aggs.get("nginx" if p.proxy == "nginx" else "baseline", {}).get("rps")
        r = ratio(a["rps"], base) or 0.0
        w = min(r, 1.2) / 1.2 * width
        color = "#888" if p.proxy == "nginx" else ("#4a7" if p.proxy == "mitmdump" else "#47a")
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{p.name}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 13}">{r:.2f}</text>')
        v = a.get("open_p99_ms") or 0.0
        pw = 0.0
        if v > 0 and hi > lo:
            pw = max(0.0, (math.log10(v) - lo) / (hi - lo)) * width
        parts.append(f'<rect x="{x2}" y="{y}" width="{pw:.1f}" height="{bar_h}" fill="{color}"/>')
        parts.append(f'<text x="{x2 + pw + 4:.1f}" y="{y + 13}">{v:g}</text>')
    for limit, label in ((TARGET_HEALTHY_RPS, "0.90"), (TARGET_NOMIRROR_RPS, "0.97")):
        x = left + limit / 1.2 * width
        parts.append(
            f'<line x1="{x:.1f}" y1="30" x2="{x:.1f}" y2="{height - 10}" stroke="#c33" '
            'stroke-dasharray="3,3"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{height - 1}" fill="#c33" font-size="10">{label}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


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


def machine_info(settings: Settings) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(Exception):
        from mitmproxy.version import VERSION

        info["mitmproxy"] = VERSION
    if usable(settings.nginx):
        info["nginx"] = run_quiet([settings.nginx, "-v"])[1].replace("nginx version: ", "")
    if usable(settings.wrk):
        info["wrk"] = run_quiet([settings.wrk, "-v"])[1].split("[")[0].strip()
    rc, commit = run_quiet(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
    if rc == 0:
        info["meshmirror_commit"] = commit
    return info


def addon_importable() -> str | None:
    rc, out = run_quiet([sys.executable, "-c", "import meshmirror.mitm.addon"], timeout=60)
    return None if rc == 0 else (out.splitlines()[-1] if out else f"exit {rc}")


# ============================================================================================
# main
# ============================================================================================


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="meshmirror's side-by-side benchmark (issue 4): plain mitmdump, meshmirror at "
        "0/50/100%%, slow, silent and refusing mirrors, nginx's mirror as the peer. Prints a "
        "Markdown table (stdout), writes a JSON file and optionally an SVG chart.",
    )
    p.add_argument("--quick", action="store_true", help="seconds per point, 1 round (CI smoke)")
    p.add_argument(
        "--points",
        default="all",
        help=f"comma-separated subset of: {', '.join(POINT_NAMES)} (default all)",
    )
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    p.add_argument("--duration", type=float, help="closed-loop seconds per point (default 4)")
    p.add_argument("--open-duration", type=float, help="fixed-rate seconds per point (default 4)")
    p.add_argument("--connections", type=int, default=8, help="closed-loop connections (8)")
    p.add_argument("--rate", type=float, help="fixed rate req/s (default: half the baseline's)")
    p.add_argument("--timeout", type=float, default=5.0, help="client timeout per request (5 s)")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--no-install", action="store_true", help="never apt-get install nginx/wrk")
    p.add_argument("--soak", type=float, help="seconds of full load on --soak-point (default 60)")
    p.add_argument("--soak-point", default="silent100", choices=POINT_NAMES)
    p.add_argument(
        "--termlog-verbosity",
        default="warn",
        help="mitmdump's termlog_verbosity (warn: logging cost not measured)",
    )
    p.add_argument("--no-routing", action="store_true", help="skip scripts/bench_routing.py")
    p.add_argument("--out", type=Path, help="JSON path (default bench-results/bench-<ts>.json)")
    p.add_argument("--svg", type=Path, help="also write an SVG chart here")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs and logs (path printed)")
    args = p.parse_args(argv)
    if args.points == "all":
        args.points = POINT_NAMES
    else:
        args.points = [x.strip() for x in args.points.split(",") if x.strip()]
        bad = [x for x in args.points if x not in POINT_NAMES]
        if bad:
            p.error(f"unknown point(s) {', '.join(bad)}; choose from {', '.join(POINT_NAMES)}")
    return args


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Stop()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "_serve":
        return serve_main(argv[1:])
    if argv and argv[0] == "_load":
        return load_main(argv[1:])
    args = parse_args(argv)
    q = args.quick
    points = [p for p in POINTS if p.name in args.points]
    need: dict[str, str] = {}
    if any(p.proxy == "nginx" for p in points):
        need["nginx"] = "nginx-light|nginx"
    if args.loadgen in ("auto", "wrk"):
        need["wrk"] = "wrk"
    tools = ensure_tools(need, install=not args.no_install)
    wrk = tools.get("wrk", "not run: --loadgen python")
    nginx = tools.get("nginx", "not run: no nginx point selected")
    if args.loadgen == "wrk" and not usable(wrk):
        log(f"wrk unavailable ({wrk}); using the built-in asyncio client")
    settings = Settings(
        rounds=args.rounds or (1 if q else 3),
        duration=args.duration or (1.0 if q else 4.0),
        open_duration=args.open_duration or (1.0 if q else 4.0),
        warmup=0.3 if q else 1.0,
        connections=args.connections,
        rate=args.rate,
        timeout=args.timeout,
        max_open_conns=256,
        loadgen="wrk" if usable(wrk) and args.loadgen != "python" else "python",
        wrk=wrk,
        nginx=nginx,
        termlog=args.termlog_verbosity,
        soak=args.soak if args.soak is not None else (0.0 if q else 60.0),
        soak_point=args.soak_point,
        quick=q,
    )
    not_run: dict[str, str] = {}
    if not usable(nginx):
        for p in points:
            if p.proxy == "nginx":
                not_run[p.name] = nginx.removeprefix("not run: ")
    if any(p.proxy == "meshmirror" for p in points):
        err = addon_importable()
        if err:
            log(f"the addon does not import ({err}); its points are not run")
            for p in points:
                if p.proxy == "meshmirror":
                    not_run[p.name] = f"addon does not import: {err}"
    runnable = [p for p in points if p.name not in not_run]
    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    out_path: Path = args.out or ROOT / "bench-results" / f"bench-{stamp}.json"
    tmp = Path(tempfile.mkdtemp(prefix="meshmirror-bench-"))
    children = Children()
    results: dict[str, list[dict[str, Any]]] = {p.name: [] for p in runnable}
    soak_res: dict[str, Any] | None = None
    env: Env | None = None
    interrupted = False
    try:
        with sigterm_stops():
            ports, controls = start_backends(children, tmp)
            env = Env(settings, children, tmp, ports, controls, rate=settings.rate)
            log(
                f"{len(runnable)} point(s) x {settings.rounds} round(s), closed "
                f"{settings.duration:g} s + fixed-rate {settings.open_duration:g} s each, "
                f"load: {settings.loadgen}; backends {ports}"
            )
            for rnd in range(settings.rounds):
                k = rnd % len(runnable) if runnable else 0
                for p in runnable[k:] + runnable[:k]:
                    t = time.monotonic()
                    try:
                        r = measure(env, p, rnd)
                    except BenchError as e:
                        r = {"round": rnd, "error": str(e)}
                        log(f"round {rnd + 1} {p.name}: FAILED: {e}")
                    else:
                        log(
                            f"round {rnd + 1} {p.name}: {r['closed']['rps']:g} req/s, fixed-rate "
                            f"p99 {r['open']['p99_ms']} ms, other CPU "
                            f"{r['other_cpu_cores']} cores, "
                            f"mirror {r['mirror']}, "
                            f"{time.monotonic() - t:.1f} s"
                        )
                    results[p.name].append(r)
            sp = next((p for p in runnable if p.name == settings.soak_point), None)
            if settings.soak > 0 and sp is not None:
                log(f"soak: {settings.soak:g} s of full load on {sp.name}")
                try:
                    soak_res = soak(env, sp)
                except BenchError as e:
                    soak_res = {"point": sp.name, "error": str(e)}
    except (KeyboardInterrupt, Stop):
        interrupted = True
        log("interrupted: stopping everything this run started")
    finally:
        children.stop_all()
        if args.keep_tmp:
            log(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    routing: dict[str, Any] = {"status": "not run: --no-routing"}
    if interrupted:
        routing = {"status": "not run: interrupted"}
    elif not args.no_routing:
        routing = run_routing_bench(q)
    aggs = {
        name: aggregate(next(p for p in POINTS if p.name == name), rs)
        for name, rs in results.items()
    }
    target_rows = targets(aggs, routing, soak_res)
    meta = {
        "command": "scripts/bench " + " ".join(argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_s": round(time.time() - started, 1),
        "machine": machine_info(settings),
        "settings": {k: v for k, v in vars(settings).items()},
        "fixed_rate": env.rate if env is not None else settings.rate,
        "interrupted": interrupted,
    }
    doc = {
        "meta": meta,
        "points": {
            p.name: {"label": p.label, "aggregate": aggs.get(p.name), "rounds": results.get(p.name)}
            for p in points
            if p.name in results
        },
        "not_run": not_run,
        "soak": soak_res,
        "routing": routing,
        "targets": target_rows,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=2) + "\n")
    if args.svg:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(svg_chart(aggs))
    mach = meta["machine"]
    print(f"## meshmirror benchmark, {meta['started']}\n")
    print(
        f"`{meta['command']}`: {mach.get('nproc')} x {mach.get('cpu_model')}, kernel "
        f"{mach.get('kernel')}, Python {mach.get('python')}, mitmproxy {mach.get('mitmproxy')}, "
        f"{mach.get('nginx', 'no nginx')}, {mach.get('wrk', 'no wrk')}; load: "
        f"{settings.loadgen}, {settings.connections} connections closed loop, fixed rate "
        f"{meta['fixed_rate']} req/s; {settings.rounds} round(s) of {settings.duration:g} s + "
        f"{settings.open_duration:g} s; medians over rounds, max of max.\n"
    )
    print(figures_table(aggs, not_run))
    noisy = {n: a["other_cpu_cores_max"] for n, a in aggs.items() if a.get("other_cpu_cores_max")}
    noisy = {n: v for n, v in noisy.items() if v > NOISE_CORES}
    if noisy:
        worst = ", ".join(f"{n} {v:.2f}" for n, v in sorted(noisy.items(), key=lambda x: -x[1]))
        print(
            f"\nNOISE: processes outside this run used more than {NOISE_CORES} of a core during "
            f"the closed-loop runs of: {worst} (cores, worst round); compare ratios with care."
        )
    print()
    print(targets_table(target_rows))
    for name, reason in not_run.items():
        print(f"\n- {name}: not run: {reason}")
    for name, rs in results.items():
        for r in rs:
            if "error" in r:
                print(f"\n- {name} round {r['round'] + 1}: failed: {r['error']}")
    if routing.get("output"):
        print("\nrouting micro-benchmark (scripts/bench_routing.py):\n")
        print("```\n" + routing["output"] + "\n```")
    print(f"\nJSON: {out_path}" + (f"; SVG: {args.svg}" if args.svg else ""))
    if interrupted:
        return 130
    failed_all = [n for n, a in aggs.items() if "rps" not in a]
    return 1 if failed_all else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
