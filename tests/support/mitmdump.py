"""mitmdump with the addon as a subprocess, for the end-to-end tests and scripts/soak.py.

mitmdump is started with `-p 0`: it binds a port of its own choosing, and the port is read from
the line it prints ("HTTP(S) proxy listening at 127.0.0.1:PORT", "Reverse proxy server
listening at http://127.0.0.1:PORT"). The process runs in its own session and is stopped by its
pid; every wait has a deadline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import spawn, stop, wait_for

ROOT = Path(__file__).resolve().parents[2]
ADDON = ROOT / "addons" / "mirror.py"
MITMDUMP = Path(sys.executable).with_name("mitmdump")
MESHMIRROR = Path(sys.executable).with_name("meshmirror")
LISTEN_RE = re.compile(r"listening at (?:http://)?127\.0\.0\.1:(\d+)")


@dataclass
class Proxy:
    """A running mitmdump; `lines` fills with its combined output as it prints it."""

    proc: subprocess.Popen[str]
    port: int = 0
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def log_lines(self, needle: str) -> list[str]:
        return [line for line in list(self.lines) if needle in line]

    def listen_port(self) -> int | None:
        """The port from the first "listening at" line so far; None before it is printed."""
        for line in list(self.lines):
            m = LISTEN_RE.search(line)
            if m:
                return int(m.group(1))
        return None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (the addon drains and prints its summary), SIGKILL after `timeout`."""
        code = stop(self.proc, timeout)
        if self._reader is not None:
            self._reader.join(5)
        assert code is not None
        return code


def start_proxy(
    upstream: str,
    configs: list[Path],
    *options: str,
    ready_timeout: float = 30.0,
    expect_failure: bool = False,
) -> Proxy:
    """mitmdump in reverse mode to `upstream` with the addon reading `configs`; `options` are
    more `--set` values. Returns once it listens, or, with `expect_failure`, once it exited."""
    cmd = [
        str(MITMDUMP),
        "--mode",
        f"reverse:{upstream}",
        "--listen-host",
        "127.0.0.1",
        "-p",
        "0",
        "-s",
        str(ADDON),
        "--set",
        "flow_detail=0",
        "--set",
        "connection_strategy=lazy",
        # Sampling tests accept fractions within 3 sigma; a fixed seed makes each run draw the
        # same sequence, so a 1-in-370 tail cannot turn a run red by chance. (Only one --set
        # per non-list option: mitmproxy drops them all when one is repeated.)
        "--set",
        "mirror_seed=20261126",
    ]
    for c in configs:
        cmd += ["--set", f"mirror_config={c}"]
    for o in options:
        cmd += ["--set", o]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = spawn(cmd, stdout=subprocess.PIPE, text=True, env=env)
    proxy = Proxy(proc)
    proxy._reader = read_lines(proc, proxy.lines)
    if expect_failure:
        try:
            proc.wait(ready_timeout)
        except subprocess.TimeoutExpired:
            proxy.stop()
            raise AssertionError("mitmdump was expected to exit but kept running") from None
        proxy._reader.join(5)
        return proxy

    def exited_early() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"mitmdump exited early ({proc.returncode}):\n{proxy.output}")

    try:
        proxy.port = wait_for(
            proxy.listen_port, ready_timeout, what="mitmdump to listen", check=exited_early
        )
    except BaseException:
        proxy.stop()
        raise
    return proxy


def read_lines(proc: subprocess.Popen[str], lines: list[str]) -> threading.Thread:
    """Append proc's output lines to `lines` from a daemon thread (returned, started)."""

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


def port_in_use(output: str) -> bool:
    """True when mitmdump's output says its listen port was taken ("[errno 98] address already
    in use"): the cue for `ports.on_picked_port` to try another port."""
    return "address already in use" in output.lower()
