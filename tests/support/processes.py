"""Child processes: start one in its own session, stop it by its pid, wait with a deadline.

Contracts: `spawn` never shares the caller's session, so a terminal's Ctrl-C reaches only the
caller, which then stops its children in order; `stop` signals only the pid it was given (never a
process group or a name) and always reaps it; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")


def spawn(
    argv: Sequence[str],
    *,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = subprocess.STDOUT,
    text: bool = False,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    bufsize: int = -1,
) -> subprocess.Popen[Any]:
    """Start argv in a new session with stdin from /dev/null; stderr joins stdout by default."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        text=text,
        cwd=cwd,
        env=env,
        bufsize=bufsize,
        start_new_session=True,
    )


def stop(
    proc: subprocess.Popen[Any],
    grace: float = 10.0,
    on_kill: Callable[[], None] | None = None,
) -> int | None:
    """SIGTERM, then SIGKILL after `grace` seconds; returns the exit status once reaped.

    SIGTERM first so that mitmproxy runs its `done` hooks (the addon drains its copies and
    prints its summary); `on_kill` is called before the SIGKILL, e.g. to log that it was needed.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            if on_kill is not None:
                on_kill()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)
    return proc.returncode


def wait_for(
    cond: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.02,
    *,
    what: str = "condition",
    check: Callable[[], None] | None = None,
    error: Callable[[str], Exception] = AssertionError,
) -> T:
    """Poll `cond` until it returns something truthy and return that.

    `check` runs after each poll that found nothing and may raise (say, a process it watches
    has exited); at the deadline `error(message)` is raised: AssertionError fails a test,
    scripts pass their own.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def gone(pid: int) -> bool:
    """True once pid has exited; a zombie (exited, not yet collected by its parent) counts."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid: int, timeout: float) -> bool:
    """Poll until pid is gone or timeout seconds passed; returns gone(pid)."""
    deadline = time.monotonic() + timeout
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return gone(pid)
