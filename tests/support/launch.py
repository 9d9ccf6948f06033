"""mitmdump launched for the tests that read its messages and its `mirror.stats` at exit.

`Launcher` starts mitmdump in reverse mode with the addon, and can add a second script that
writes the `mirror.stats` JSON when mitmdump stops (`Launched.stats()`), and can run it at
`termlog_verbosity=warn`, so that a line seen in its output is known to be a warning (or an
error), not an info line. The e2e conftest hands it out as the `launch` fixture.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.mitmdump import ADDON, MITMDUMP, Proxy, read_lines
from tests.support.processes import spawn, wait_for
from tests.support.procfs import listening_ports

STATS_SCRIPT = """\
import os

from mitmproxy import ctx


class WriteStats:
    def done(self):
        with open(os.environ["MESHMIRROR_TEST_STATS"], "w") as f:
            f.write(ctx.master.commands.call("mirror.stats.json"))


addons = [WriteStats()]
"""

TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\.\d\d\d\] ")


class Launched:
    """A mitmdump started by `launch`; `stats()` reads what the stats script wrote at exit."""

    def __init__(self, proxy: Proxy, stats_path: Path | None) -> None:
        self.proxy = proxy
        self.stats_path = stats_path

    def stats(self) -> dict[str, Any]:
        self.proxy.stop()
        assert self.stats_path is not None and self.stats_path.exists(), self.proxy.output
        data: dict[str, Any] = json.loads(self.stats_path.read_text())
        return data


class Launcher:
    """Starts mitmdumps (see the module docstring); `stop_all` stops every one it started."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Proxy] = []

    def __call__(
        self,
        upstream_port: int,
        configs: list[Path],
        *options: str,
        quiet: bool = False,
        stats: bool = True,
        expect_failure: bool = False,
        on_start: Callable[[Proxy], None] | None = None,
    ) -> Launched:
        """mitmdump in reverse mode to 127.0.0.1:upstream_port with the addon reading
        `configs`. `quiet`: termlog_verbosity=warn (the port is then read from /proc)."""
        cmd = [
            str(MITMDUMP),
            "--mode",
            f"reverse:http://127.0.0.1:{upstream_port}",
            "--listen-host",
            "127.0.0.1",
            "-p",
            "0",
            "-s",
            str(ADDON),
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        stats_path = None
        if stats:
            n = len(self.started)
            script = self.tmp_path / f"write_stats_{n}.py"
            script.write_text(STATS_SCRIPT)
            stats_path = self.tmp_path / f"stats_{n}.json"
            env["MESHMIRROR_TEST_STATS"] = str(stats_path)
            cmd += ["-s", str(script)]
        cmd += ["--set", "flow_detail=0", "--set", "connection_strategy=lazy"]
        cmd += ["--set", "mirror_summary_interval=0", "--set", "mirror_sender=loop"]
        if quiet:
            cmd += ["--set", "termlog_verbosity=warn"]
        for c in configs:
            cmd += ["--set", f"mirror_config={c}"]
        for o in options:
            cmd += ["--set", o]
        proc = spawn(cmd, stdout=subprocess.PIPE, text=True, env=env)
        proxy = Proxy(proc)
        self.started.append(proxy)
        proxy._reader = read_lines(proc, proxy.lines)
        if on_start is not None:
            on_start(proxy)
        if expect_failure:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"mitmdump kept running:\n{proxy.output}") from None
            proxy._reader.join(5)
            return Launched(proxy, stats_path)

        def port() -> int | None:
            if proc.poll() is not None:
                raise AssertionError(f"mitmdump exited early ({proc.returncode}):\n{proxy.output}")
            if not quiet:
                return proxy.listen_port()
            ports = listening_ports(proc.pid)
            return next(iter(ports)) if len(ports) == 1 else None

        proxy.port = wait_for(port, 30, what="mitmdump to listen")
        return Launched(proxy, stats_path)

    def stop_all(self) -> None:
        for p in self.started:
            p.stop()


def messages(proxy: Proxy) -> list[str]:
    """mitmdump's output lines without their `[HH:MM:SS.mmm] ` prefix."""
    return [TIMESTAMP.sub("", line.rstrip("\n")) for line in list(proxy.lines)]
