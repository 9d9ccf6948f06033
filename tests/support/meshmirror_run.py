"""`meshmirror run` as a subprocess for the end-to-end tests: started in its own session with
`--listen 127.0.0.1:0`, its output read line by line, stopped by its pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.mitmdump import LISTEN_RE, read_lines
from tests.support.processes import spawn, stop, wait_for

MESHMIRROR = Path(sys.executable).parent / "meshmirror"


class Running:
    """A `meshmirror run` process and its output lines (stdout and stderr together)."""

    def __init__(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.lines: list[str] = []
        self.proc = spawn(
            [str(MESHMIRROR), "run", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=dict(env or os.environ, PYTHONUNBUFFERED="1"),
        )
        self.reader = read_lines(self.proc, self.lines)

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
