"""`meshmirror run` as a subprocess for the end-to-end tests: started in its own session with
`--listen 127.0.0.1:0`, its output read line by line, stopped by its pid (and, after
`end_by`, what it started, by theirs)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.mitmdump import LISTEN_RE, read_lines
from tests.support.processes import gone, spawn, stop, wait_for, wait_gone
from tests.support.procfs import process_tree

MESHMIRROR = Path(sys.executable).parent / "meshmirror"


def get(port: int, host: str = "app.example.com") -> tuple[int, bytes]:
    """`GET /hello` with `host` through the proxy on `port`: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/hello", headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Running:
    """A `meshmirror run` process and its output lines (stdout and stderr together)."""

    def __init__(
        self,
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        nohup: bool = False,
    ) -> None:
        """`nohup`: started through nohup(1), so with SIGHUP ignored (the same pid)."""
        self.lines: list[str] = []
        self.proc = spawn(
            [
                *(["nohup"] if nohup else []),
                str(MESHMIRROR),
                "run",
                "--listen",
                "127.0.0.1:0",
                *args,
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=dict(env or os.environ, PYTHONUNBUFFERED="1"),
        )
        self.reader = read_lines(self.proc, self.lines)
        self.started: list[int] = []  # what `run` had started when `end_by` signalled it

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def port(self) -> int:
        """The proxy's port, once it listens (from mitmproxy's "listening at" line)."""

        def found() -> int | None:
            m = LISTEN_RE.search(self.output)
            if m is None and self.proc.poll() is not None:
                raise AssertionError(f"meshmirror run exited:\n{self.output}")
            return int(m.group(1)) if m else None

        return wait_for(found, timeout=30, what="the proxy to listen")

    def interrupt(self) -> int:
        """Ctrl-C as a terminal sends it to the process group: here to `meshmirror run` alone
        (it runs in its own session), which must pass it on and wait for mitmdump."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(20)
        finally:
            stop(self.proc)
            self.reader.join(5)
        return code

    def serves_on_after_hangup(self, port: int, seconds: float = 2.0) -> None:
        """SIGHUP to `run` (started with `nohup=True`), then every request for `seconds` is
        still served by the primary and `run` is still up: the hangup was ignored. (A hangup
        passed on would stop the proxy within a fraction of a second.)"""
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + seconds
        served = 0
        while time.monotonic() < deadline:
            assert get(port) == (200, b"primary"), self.output[-3000:]
            served += 1
        assert self.proc.poll() is None, self.output[-3000:]
        assert served > 0

    def end_by(self, sig: int, port: int, temp: Path) -> None:
        """Send `sig` to `run` alone, as a CI runner that kills the top pid does, and check
        that nothing it started outlives it: each process below it gone within 30 s, `temp`
        (its temporary directory) removed, `port` free again."""
        self.started = [p for p in process_tree(self.proc.pid) if p != self.proc.pid]
        assert len(self.started) >= 2, self.started  # the proxy and the watchdog at least
        self.proc.send_signal(sig)
        self.proc.wait(30)
        for pid in self.started:
            assert wait_gone(pid, 30), (pid, self.output[-3000:])
        assert not temp.exists(), self.output[-3000:]

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_for(refused, timeout=10, what="the port to be free")

    def close(self) -> None:
        """Stop `run` and, should a check have failed, what outlived it, each by its pid."""
        stop(self.proc)
        self.reader.join(5)
        for pid in self.started:
            if not gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
