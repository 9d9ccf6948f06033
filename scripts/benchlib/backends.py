"""The HTTP/1.1 backends: the child process `bench.py _serve` (keep-alive, Content-Length,
counting requests and Host headers per server) and the orchestrator's side of it.

Contract of `_serve`: every server binds 127.0.0.1 port 0; once all listen, the process writes
{"pid", "ports": {name: port, "control": port}} to --ready-file (atomically, by rename); the
control server answers any request with the counters of every server in the process as JSON.
SIGTERM or SIGINT ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib.common import BENCH_SCRIPT, LOOPBACK, SLOW_DELAY, header_value
from benchlib.procs import Children, wait_until
from tests.support.ports import refused_port

# --- the child process `_serve` --------------------------------------------------------------

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
    """Counters of one backend process, shared by its servers."""

    requests: Counter[str] = field(default_factory=Counter)
    hosts: dict[str, Counter[str]] = field(default_factory=dict)
    connections: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "connections": dict(self.connections),
            "hosts": {name: dict(c.most_common(5)) for name, c in self.hosts.items()},
        }


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


# --- the orchestrator's side ---------------------------------------------------------------


def start_backends(children: Children, tmp: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Start the two backend processes; returns (role -> port, process -> control port).

    The roles: primary; healthy, slow (answers after SLOW_DELAY s), silent (never answers); and
    refused, a port where connections are refused for the whole run.
    """
    specs = {
        "primary": ["primary=fast"],
        "mirrors": ["healthy=fast", f"slow=delay:{SLOW_DELAY}", "silent=silent"],
    }
    ports, controls = start_servers(children, tmp, "_serve", specs)
    ports["refused"] = refused_port()
    return ports, controls


def start_servers(
    children: Children, tmp: Path, command: str, specs: dict[str, list[str]]
) -> tuple[dict[str, int], dict[str, int]]:
    """One `bench.py COMMAND` process per entry of `specs` (process name -> its `--server`
    arguments), each awaited until it wrote its ready file; returns (server -> port, process ->
    control port)."""
    ports: dict[str, int] = {}
    controls: dict[str, int] = {}
    for proc_name, servers in specs.items():
        ready = tmp / f"backend-{proc_name}.json"
        argv = [sys.executable, str(BENCH_SCRIPT), command, "--ready-file", str(ready)]
        for s in servers:
            argv += ["--server", s]
        child = children.start(f"backend {proc_name}", argv, tmp / f"backend-{proc_name}.log")
        wait_until(f"backend {proc_name}", ready.exists, 20.0, child)
        info = json.loads(ready.read_text())
        controls[proc_name] = info["ports"].pop("control")
        ports.update(info["ports"])
    return ports, controls


def http_get_json(port: int, path: str = "/stats", timeout: float = 5.0) -> Any:
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: control\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def backend_counts(controls: dict[str, int]) -> dict[str, Any]:
    """Requests and Host headers per server, over all backend processes (by control port)."""
    out: dict[str, Any] = {"requests": {}, "hosts": {}}
    for port in controls.values():
        snap = http_get_json(port)
        out["requests"].update(snap["requests"])
        out["hosts"].update(snap["hosts"])
    return out


def settled_counts(controls: dict[str, int]) -> dict[str, Any]:
    """Backend counters once the mirror's count stops moving (copies still on the wire)."""
    deadline = time.monotonic() + 3.0
    last = backend_counts(controls)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = backend_counts(controls)
        if now["requests"] == last["requests"]:
            return now
        last = now
    return last
