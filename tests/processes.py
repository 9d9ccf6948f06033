"""Process checks shared by the tests that start (or watch) the mirror sender process."""

from __future__ import annotations

import time


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
