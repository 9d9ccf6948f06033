"""Harness for end-to-end tests: a mitmdump subprocess with the addon, real HTTP backends.

Everything binds 127.0.0.1 with OS-chosen ports; every wait has a deadline; every process is
stopped by its own pid.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADDON = ROOT / "addons" / "mirror.py"
MITMDUMP = Path(sys.executable).with_name("mitmdump")
LISTEN_RE = re.compile(r"listening at (?:http://)?127\.0\.0\.1:(\d+)")


def wait_for(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> object:
    """Poll `cond` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@dataclass
class Proxy:
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

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode


def start_proxy(
    upstream: str,
    configs: list[Path],
    *options: str,
    ready_timeout: float = 30.0,
    expect_failure: bool = False,
) -> Proxy:
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
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    proxy = Proxy(proc)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            proxy.lines.append(line)

    proxy._reader = threading.Thread(target=read, daemon=True)
    proxy._reader.start()
    if expect_failure:
        try:
            proc.wait(ready_timeout)
        except subprocess.TimeoutExpired:
            proxy.stop()
            raise AssertionError("mitmdump was expected to exit but kept running") from None
        proxy._reader.join(5)
        return proxy

    def ready() -> int | None:
        for line in list(proxy.lines):
            m = LISTEN_RE.search(line)
            if m:
                return int(m.group(1))
        if proc.poll() is not None:
            raise AssertionError(f"mitmdump exited early ({proc.returncode}):\n{proxy.output}")
        return None

    try:
        proxy.port = int(wait_for(ready, ready_timeout))  # type: ignore[call-overload]
    except BaseException:
        proxy.stop()
        raise
    return proxy
