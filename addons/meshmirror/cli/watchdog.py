"""The process that cleans up after `meshmirror run` when it dies without doing so itself.

`meshmirror run` can be ended by a signal it cannot handle (SIGKILL: a CI runner that kills the
top pid; SIGQUIT; the session's SIGHUP before it was handled): then the proxy it started would
keep serving on the port, re-parented to init, and its temporary config directory would stay.
So `run` starts this watchdog first, in a session of its own (a terminal's Ctrl-C or a kill of
`run`'s process group does not reach it), and tells it over a pipe on its stdin what to clean:

    pid PID       a process to stop (the proxy)
    dir PATH      a directory to remove
    done          `run` cleaned up itself: exit without doing anything

When stdin ends without `done`, `run` is gone: each process is sent SIGTERM (the proxy drains
its copies), then SIGKILL after `STOP_WAIT` seconds, and each directory is removed; then the
watchdog exits. It acts only on what it was told, and signals a pid only while it is still the
process that was registered (on Linux its start time is compared, so a reused pid is spared).

    python -m meshmirror.cli.watchdog
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import IO

STOP_WAIT = 15.0  # seconds a process gets to exit after SIGTERM before SIGKILL


def _start_time(pid: int) -> str | None:
    """The process's start time from /proc (Linux), None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _running(pid: int, started: str | None) -> bool:
    """pid is the registered process and has not exited (a zombie has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0] != "Z" and (started is None or fields[19] == started)
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_processes(pids: Iterable[tuple[int, str | None]], wait: float = STOP_WAIT) -> None:
    """SIGTERM each live process, SIGKILL those still running after `wait` seconds."""
    live = [(pid, started) for pid, started in pids if _running(pid, started)]
    for pid, _ in live:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = [(pid, started) for pid, started in live if _running(pid, started)]
    for pid, started in live:
        if _running(pid, started):
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def watch(stream: IO[str]) -> int:
    """Read instructions until EOF; clean up unless `done` came first. Returns the exit code."""
    pids: list[tuple[int, str | None]] = []
    dirs: list[str] = []
    for line in stream:
        word, _, arg = line.rstrip("\n").partition(" ")
        if word == "done":
            return 0
        if word == "pid" and arg.isdigit():
            pids.append((int(arg), _start_time(int(arg))))
        elif word == "dir" and arg:
            dirs.append(arg)
    stop_processes(pids)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    return 0


class Watchdog:
    """`meshmirror run`'s side: starts the watchdog process and tells it what to clean up."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshmirror.cli.watchdog"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )

    def _say(self, line: str) -> None:
        stdin = self.proc.stdin
        if stdin is None:
            return
        try:
            stdin.write(line + "\n")
            stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the watchdog is gone: nothing to tell

    def process(self, pid: int) -> None:
        self._say(f"pid {pid}")

    def directory(self, path: str) -> None:
        self._say(f"dir {path}")

    def release(self) -> None:
        """`run` cleaned up itself: the watchdog exits without acting (waited for briefly)."""
        self._say("done")
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main() -> int:
    # Only the end of stdin (or `done`) ends it; a terminal's signals are meant for `run`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return watch(sys.stdin)


if __name__ == "__main__":
    sys.exit(main())
