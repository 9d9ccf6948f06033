"""The run's child processes (backends, proxies, load generators) and the noise meter.

Contract: every process is started in its own session with its output in a log file, and
stopped by its own pid (SIGTERM, SIGKILL after a grace period); `Children.stop_all` stops what
is still running, newest first, also after Ctrl-C or an error.
"""

from __future__ import annotations

import contextlib
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from benchlib.common import ROOT, BenchError, log
from tests.support.processes import spawn, stop, wait_for
from tests.support.procfs import busy_seconds, tree_cpu_seconds


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
            proc = spawn(argv, stdout=out, cwd=ROOT, env=env)
        child = Child(name, proc, log_path)
        self.live.append(child)
        return child

    def stop(self, child: Child, grace: float = 10.0) -> int | None:
        pid = child.proc.pid

        def killing() -> None:
            log(f"{child.name} (pid {pid}) ignored SIGTERM for {grace}s; killing it")

        code = stop(child.proc, grace, on_kill=killing)
        if child in self.live:
            self.live.remove(child)
        return code

    def stop_all(self) -> None:
        for child in reversed(list(self.live)):
            self.stop(child, grace=5.0)


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


def wait_until(what: str, cond: Callable[[], object], timeout: float, child: Child | None) -> None:
    """Poll `cond` for `timeout` seconds; BenchError if it stays false or `child` exits."""

    def alive() -> None:
        if child is not None and child.proc.poll() is not None:
            raise BenchError(
                f"{child.name} exited with {child.proc.returncode} while waiting for {what}: "
                + tail(child.log_path)
            )

    wait_for(cond, timeout, what=what, check=alive, error=BenchError)


def tail(path: Path, n: int = 8) -> str:
    """The last n lines of a log, joined with " | " (empty when unreadable)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in lines[-n:])


def run_quiet(argv: list[str], timeout: float = 30.0) -> tuple[int, str]:
    """(exit status, stdout + stderr stripped) of a short command; -1 when it cannot run."""
    try:
        p = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, str(e)
    return p.returncode, (p.stdout + p.stderr).strip()
