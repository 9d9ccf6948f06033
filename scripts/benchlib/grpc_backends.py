"""The gRPC backends: the child process `bench.py _serve_grpc` (grpcio servers on h2c, the tests'
generic `test.Echo` service, counting the calls they handle) and its start from the orchestrator.

Contract of `_serve_grpc`: as `_serve`'s (backends.py): every server binds 127.0.0.1 port 0;
once all listen, the process writes {"pid", "ports": {name: port, "control": port}} to
--ready-file (atomically, by rename); the control server answers any GET with
{"requests": {name: handled Echo calls}, "hosts": {}, "connections": {}} (grpcio does not show a
handler the :authority, so no Host counts). SIGTERM or SIGINT ends it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

import grpc

from benchlib.backends import start_servers
from benchlib.common import LOOPBACK
from benchlib.procs import Children
from tests.support.grpc_servers import GrpcServer

# grpcio's server answers several thousand unary calls per second here, several times what
# mitmdump proxies over HTTP/2: the backend is not what the gRPC points measure.
WORKERS = 8


class CountingServer(GrpcServer):
    """The tests' grpcio server, keeping counts only: the tests keep every message and its
    metadata, which over a benchmark's hundreds of thousands of calls would grow the backend and
    cost it time on every call."""

    def _count(self, method: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls[method] += 1

    def _echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._count("Echo", context)
        return f"{self.name}:".encode() + request


def serve_grpc_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py _serve_grpc")
    p.add_argument("--server", action="append", default=[], help="NAME (repeatable)")
    p.add_argument("--ready-file", required=True, type=Path)
    args = p.parse_args(argv)
    servers = {name: CountingServer(name, workers=WORKERS) for name in args.server}

    class Control(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            counts = {name: s.handled("Echo") for name, s in servers.items()}
            body = json.dumps({"requests": counts, "hosts": {}, "connections": {}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    control = ThreadingHTTPServer((LOOPBACK, 0), Control)
    thread = threading.Thread(target=control.serve_forever, name="control", daemon=True)
    thread.start()
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    ports = {name: s.port for name, s in servers.items()}
    ports["control"] = control.server_address[1]
    tmp = args.ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "ports": ports}))
    tmp.rename(args.ready_file)
    while not stopping.wait(0.5):
        pass
    control.shutdown()
    for s in servers.values():
        s.stop()
    return 0


def start_grpc_backends(children: Children, tmp: Path) -> tuple[dict[str, int], dict[str, int]]:
    """The primary and the mirror, one process each (as the HTTP backends); returns (role ->
    port, process -> control port)."""
    specs = {"grpc-primary": ["grpc-primary"], "grpc-mirrors": ["grpc-mirror"]}
    return start_servers(children, tmp, "_serve_grpc", specs)
