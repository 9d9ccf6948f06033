"""The outside tools (wrk, nginx, h2load) and the description of the machine the run is on.

Contract: by default nothing is installed; a missing tool comes back as "not run: REASON", the
reason saying how to install it. Only `scripts/bench --install` runs apt-get (Debian's
packages, as root), so that a benchmark never changes the machine unasked (scripts/setup
installs h2load, which the CI smoke test of the gRPC points needs, as it installs the tests'
Debian packages).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchlib.common import ROOT, log
from benchlib.procs import run_quiet

INSTALL_HINT = "scripts/bench --install installs it (apt-get, as root)"


def find_tools(need: dict[str, str], install: bool) -> dict[str, str]:
    """tool -> path, or "not run: REASON". `need` maps a tool to its Debian packages (the first
    that installs wins: "nginx-light|nginx"); with `install`, missing ones are installed."""
    found = {tool: shutil.which(tool) or "" for tool in need}
    missing = [tool for tool, path in found.items() if not path]
    reason = f"not installed; {INSTALL_HINT}"
    if missing and install:
        reason = apt_install({tool: need[tool] for tool in missing}) or "install failed"
    for tool in missing:
        found[tool] = shutil.which(tool) or f"not run: {reason}"
    # The package may ship nginx outside PATH for non-root users.
    if (
        need.get("nginx")
        and found["nginx"].startswith("not run")
        and Path("/usr/sbin/nginx").exists()
    ):
        found["nginx"] = "/usr/sbin/nginx"
    return found


def apt_install(packages: dict[str, str]) -> str:
    """`apt-get update` once, then `apt-get install -y` each tool's packages; "" when done,
    else why not."""
    if os.geteuid() != 0:
        return "not root, cannot apt-get install"
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    log(f"installing {', '.join(packages)} from Debian's packages (apt-get)")
    rc, out = apt(["update", "-qq"], timeout=300)
    for alternatives in packages.values():
        for pkg in alternatives.split("|"):
            rc, out = apt(["install", "-y", "-qq", "--no-install-recommends", pkg], timeout=600)
            if rc == 0:
                break
    return f"apt-get failed: {out.strip()[-200:]}" if rc != 0 else ""


def apt(args: list[str], timeout: float) -> tuple[int, str]:
    """(exit status, output) of one non-interactive apt-get command; -1 when it cannot run."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        p = subprocess.run(
            ["apt-get", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, str(e)
    return p.returncode, p.stdout + p.stderr


def usable(path: str) -> bool:
    return bool(path) and not path.startswith("not run")


def machine_info(nginx: str, wrk: str, h2load: str = "", envoy: str = "") -> dict[str, Any]:
    """CPU, kernel, Python, mitmproxy, nginx, wrk, h2load and Envoy versions, and the
    checkout's commit."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(Exception):
        from mitmproxy.version import VERSION

        info["mitmproxy"] = VERSION
    if usable(nginx):
        info["nginx"] = run_quiet([nginx, "-v"])[1].replace("nginx version: ", "")
    if usable(wrk):
        info["wrk"] = run_quiet([wrk, "-v"])[1].split("[")[0].strip()
    if usable(h2load):
        info["h2load"] = run_quiet([h2load, "--version"])[1]
    if usable(envoy):
        rc, out = run_quiet([envoy, "--version"])
        # "PATH  version: HASH/1.40.0/Clean/RELEASE/BoringSSL"
        fields = out.rpartition("version:")[2].strip().split("/")
        info["envoy"] = f"envoy {fields[1]}" if rc == 0 and len(fields) > 1 else out
    rc, commit = run_quiet(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
    if rc == 0:
        info["meshmirror_commit"] = commit
    return info


def addon_importable() -> str | None:
    """None when the addon's package imports in this Python, else the error's last line."""
    rc, out = run_quiet([sys.executable, "-c", "import meshmirror.mitm.addon"], timeout=60)
    return None if rc == 0 else (out.splitlines()[-1] if out else f"exit {rc}")
