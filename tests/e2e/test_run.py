"""`meshmirror run` and the installed package, end to end: real processes, real servers.

- `meshmirror run --primary URL --mirror URL[@PERCENT]` writes the Istio YAML, runs mitmdump with
  the addon, mirrors, and stops cleanly on Ctrl-C (SIGINT), SIGTERM or SIGHUP, removing its
  temporary config; under nohup a hangup leaves it serving.
- `-f CONFIG` serves existing YAML; `--write-config DIR` keeps what it wrote; bad arguments are
  a one-line error and exit 2.
- A wheel built from this checkout and installed (not editable) outside it works with
  `mitmdump -s "$(meshmirror addon-path)"` from another directory.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tests.support import grpc_servers as gs
from tests.support import meshconfig as mc
from tests.support.meshmirror_run import MESHMIRROR, Running, get
from tests.support.mitmdump import ADDON, LISTEN_RE, ROOT, read_lines
from tests.support.ports import refused_port
from tests.support.processes import spawn, stop, wait_for
from tests.support.servers import Recorder

BIN = Path(sys.executable).parent


def test_one_line_mirrors_and_stops_cleanly_on_ctrl_c(
    backends: tuple[Recorder, Recorder],
) -> None:
    primary, mirror = backends
    run = Running(
        "--primary", primary.url, "--mirror", mirror.url, "--", "--set", "mirror_verbosity=each"
    )
    try:
        port = run.port()
        for _ in range(3):
            assert get(port) == (200, b"primary")
        wait_for(lambda: len(mirror.hosts) >= 3, timeout=10, what="the copies")
        assert mirror.hosts == ["app.example.com-shadow"] * 3
        assert primary.hosts == ["app.example.com"] * 3
        m = re.search(r"config written to (\S+) \(removed at exit", run.output)
        assert m, run.output
        config = Path(m.group(1))
        assert config.exists()
    finally:
        code = run.interrupt()
    assert code == 0, run.output[-3000:]
    assert not config.parent.exists()  # the temporary config went with the proxy
    assert "mirror sent 200" in run.output
    assert "mirror summary:" in run.output  # it drained and summarised: a clean stop
    assert "not as a reverse proxy" not in run.output


def test_grpc_urls_serve_and_mirror_a_grpc_service() -> None:
    """`run --primary grpc://... --mirror grpc://...`: ServiceEntries of protocol GRPC, so the
    primary and the copies are reached over HTTP/2 (h2c), as a plaintext gRPC client expects."""
    primary, v2 = gs.GrpcServer("primary"), gs.GrpcServer("v2")
    run = Running(
        "--primary",
        f"grpc://127.0.0.1:{primary.port}",
        "--mirror",
        f"grpc://127.0.0.1:{v2.port}",
        "--",
        "--set",
        "mirror_verbosity=each",
    )
    try:
        port = run.port()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            answers = [ch.unary_unary(gs.ECHO)(f"r{i}".encode(), timeout=10) for i in range(3)]
        assert answers == [b"primary:r0", b"primary:r1", b"primary:r2"]
        wait_for(lambda: v2.handled() == 3, timeout=15, what="3 copies")
        wait_for(lambda: run.output.count("mirror sent 200 grpc=OK") == 3, 10, what="outcomes")
    finally:
        run.interrupt()
        primary.stop()
        v2.stop()


def test_the_share_mirrored_is_shown_beside_the_configured_one(
    backends: tuple[Recorder, Recorder], tmp_path: Path
) -> None:
    primary, mirror = backends
    log = tmp_path / "outcomes.jsonl"
    run = Running(
        "--primary",
        primary.url,
        "--mirror",
        f"{mirror.url}@50",
        "--",
        "--set",
        f"mirror_log={log}",
        "--set",
        "mirror_seed=20261126",
    )
    n = 200
    try:
        port = run.port()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(n):
            conn.request("GET", "/s", headers={"Host": "app.example.com"})
            assert conn.getresponse().read() == b"primary"
        conn.close()
        wait_for(lambda: len(log.read_text().splitlines()) == len(mirror.hosts), timeout=10)
    finally:
        assert run.interrupt() == 0, run.output[-3000:]
    counters = mc.last_summary(run.lines)["outbound|80||mirror-1.meshmirror.local"]
    assert counters["matched"] == n
    sampled = counters["sampled"]
    assert abs(sampled - n / 2) <= 3 * (n * 0.25) ** 0.5, sampled  # 3 sigma
    assert f"matched={n} sampled={sampled} ({sampled / n * 100:.3g}%, configured 50%)" in (
        run.output
    )
    report = subprocess.run(
        [str(MESHMIRROR), "report", str(log)], capture_output=True, text=True, timeout=60
    )
    assert report.returncode == 0, report.stderr
    # The last record knows how many requests the rule had matched by then.
    m = re.search(r"matched (\d+)  sampled ([\d.]+)%", report.stdout)
    assert m, report.stdout
    assert n - 20 <= int(m.group(1)) <= n
    assert float(m.group(2)) == pytest.approx(sampled / int(m.group(1)) * 100, rel=0.01)

    # The verdict a pipeline acts on, from the same log.
    def verdict(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MESHMIRROR), "report", str(log), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    junit = tmp_path / "verdict.xml"
    holds = verdict("--fail-on", "shadow_error_rate > 0.5%", "--fail-on", "shadow_p99 > 5s")
    assert holds.returncode == 0, holds.stdout + holds.stderr
    assert re.search(r"ok\s+default/meshmirror-run\[0\] -> outbound\|80\|\|mirror-1", holds.stdout)
    fails = verdict(
        "--fail-on",
        f"sampled < {sampled + 1}",
        "--fail-on",
        "mismatch_rate > 1%",
        "--junit",
        str(junit),
    )
    assert fails.returncode == 1, fails.stdout + fails.stderr
    cluster = "outbound|80||mirror-1.meshmirror.local"
    line = f"FAIL     default/meshmirror-run[0] -> {cluster}: sampled < {sampled + 1}"
    assert f"{line}: {sampled} < {sampled + 1}" in fails.stdout, fails.stdout
    assert "UNKNOWN" in fails.stdout  # nothing was compared: the mismatch rate has no data
    assert 'failures="1"' in junit.read_text() and "<failure message=" in junit.read_text()
    page = tmp_path / "report.html"
    assert verdict("--fail-on", f"sampled < {sampled + 1}", "--html", str(page)).returncode == 1
    assert "Verdict: FAILED" in page.read_text()
    assert verdict("--min-samples", str(sampled + 1)).returncode == 2
    bad = verdict("--fail-on", "mismatch_rate > lots")
    assert bad.returncode == 2 and "is not a number" in bad.stderr


def test_outside_reverse_mode_the_addon_says_how_to_fix_it(tmp_path: Path) -> None:
    cfg = mc.mirror_config(tmp_path / "c.yaml", 9, {})
    lines: list[str] = []
    proc = spawn(
        [str(BIN / "mitmdump"), "--listen-host", "127.0.0.1", "-p", "0", "-s", str(ADDON)]
        + ["--set", f"mirror_config={cfg}"],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    reader = read_lines(proc, lines)
    try:
        line = wait_for(
            lambda: next((x for x in list(lines) if "not as a reverse proxy" in x), None),
            timeout=30,
            what="the mode warning",
        )
        assert "--mode reverse:http://PRIMARY" in line and "regular mode" in line, line
    finally:
        stop(proc)
        reader.join(5)


def test_a_percentage_and_write_config_keep_the_yaml_one_would_apply(
    backends: tuple[Recorder, Recorder], tmp_path: Path
) -> None:
    primary, mirror = backends
    out = tmp_path / "mesh"
    run = Running(
        "--primary",
        primary.url,
        "--mirror",
        f"{mirror.url}@0",
        "--host",
        "app.example.com",
        "--write-config",
        str(out),
    )
    try:
        port = run.port()
        for _ in range(5):
            assert get(port) == (200, b"primary")
    finally:
        assert run.interrupt() == 0, run.output[-3000:]
    assert mirror.hosts == []  # 0%: nothing sampled
    (written,) = out.glob("*.yaml")
    text = written.read_text()
    assert "percentage: {value: 0}" in text and '"app.example.com"' in text
    check = subprocess.run(
        [str(MESHMIRROR), "validate", str(written)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 VirtualService" in check.stdout


def test_f_serves_existing_yaml(backends: tuple[Recorder, Recorder], tmp_path: Path) -> None:
    primary, mirror = backends
    cfg = mc.mirror_config(
        tmp_path / "c.yaml",
        primary.port,
        {"shadow.local": mc.service_entry("shadow", "shadow.local", mirror.port)},
    )
    run = Running("-f", str(cfg), "--primary", primary.url)
    try:
        port = run.port()
        assert get(port) == (200, b"primary")
        wait_for(lambda: mirror.hosts, timeout=10, what="the copy")
        assert mirror.hosts == ["app.example.com-shadow"]
    finally:
        assert run.interrupt() == 0, run.output[-3000:]


def test_f_with_an_invalid_config_starts_no_proxy(tmp_path: Path) -> None:
    cfg = mc.mirror_config(
        tmp_path / "bad.yaml",
        1,
        {"shadow.local": mc.service_entry("shadow", "shadow.local", 2)},
        percentage=150,
    )
    done = subprocess.run(
        [str(MESHMIRROR), "run", "-f", str(cfg), "--primary", "http://127.0.0.1:1"]
        + ["--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done
    # The lines `meshmirror validate` prints, and no proxy was started to print them.
    assert "percentage.value: mirror percentage must have a max value of 100" in done.stderr
    assert "configuration error(s); the proxy was not started" in done.stderr
    assert "listening at" not in done.stdout + done.stderr
    assert "mitmdump" not in done.stdout + done.stderr and "Traceback" not in done.stderr


CONNECTION_LINE = re.compile(r"\] (client|server) (connect|disconnect)\b")


def test_by_default_the_output_is_meshmirrors_and_the_rest_is_one_flag_away(
    backends: tuple[Recorder, Recorder],
) -> None:
    """20 requests, each on a new connection as curl makes them, copied to a mirror that
    refuses: the default output is meshmirror's lines (the failures first of all), not four
    connection lines per request; `--verbose` brings mitmproxy's lines back."""
    primary, _ = backends
    refused = f"http://127.0.0.1:{refused_port()}"
    for verbose in (False, True):
        run = Running(
            *(["--verbose"] if verbose else []), "--primary", primary.url, "--mirror", refused
        )
        try:
            port = run.port()
            for _ in range(20):
                assert get(port) == (200, b"primary")
            wait_for(lambda: "mirror failed" in run.output, timeout=10, what="a failed copy")  # noqa: B023
        finally:
            assert run.interrupt() == 0, run.output[-3000:]
        connection_lines = [line for line in run.lines if CONNECTION_LINE.search(line)]
        if verbose:
            assert len(connection_lines) >= 4 * 20, run.output
            assert run.output.count("/hello\n") >= 20, run.output  # and a line per flow
        else:
            assert connection_lines == [], run.output
            assert "/hello\n" not in run.output
            assert "mirror failed: refused" in run.output, run.output
            assert "mirror summary:" in run.output


def _temporary_config(run: Running) -> Path:
    m = re.search(r"config written to (\S+) \(removed at exit", run.output)
    assert m, run.output
    return Path(m.group(1)).parent


@pytest.mark.parametrize(
    "sig",
    [signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT],
    ids=lambda s: signal.Signals(s).name,
)
def test_nothing_run_starts_outlives_it_whatever_signal_ends_it(
    backends: tuple[Recorder, Recorder], sig: int
) -> None:
    """As a CI runner that kills the top pid does: mitmdump, its sender process and whatever
    else `meshmirror run` started are gone soon after it, the port is free again and the
    temporary config directory is removed."""
    primary, mirror = backends
    run = Running("--primary", primary.url, "--mirror", mirror.url)
    temp: Path | None = None
    try:
        port = run.port()
        assert get(port) == (200, b"primary")
        wait_for(lambda: mirror.hosts, timeout=10, what="the copy")  # the sender runs
        temp = _temporary_config(run)
        run.end_by(sig, port, temp)  # mitmdump, its sender process, the watchdog
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a clean stop, drained
            assert run.proc.returncode == 0, run.output[-3000:]
            assert "mirror summary:" in run.output, run.output[-3000:]
    finally:
        run.close()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def test_under_nohup_a_hangup_leaves_the_proxy_serving(
    backends: tuple[Recorder, Recorder],
) -> None:
    """`nohup meshmirror run ...`: SIGHUP is ignored by `run` (not passed on as a stop), so a
    closed terminal does not end the proxy; Ctrl-C still stops it cleanly."""
    primary, mirror = backends
    run = Running("--primary", primary.url, "--mirror", mirror.url, nohup=True)
    try:
        port = run.port()
        run.serves_on_after_hangup(port)
    finally:
        code = run.interrupt()
    assert code == 0, run.output[-3000:]
    assert "mirror summary:" in run.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--primary", "http://127.0.0.1:1"], "nothing to mirror to"),
        (["--primary", "ftp://x", "--mirror", "http://127.0.0.1:2"], "http, https, grpc or grpcs"),
        (["--primary", "http://127.0.0.1:1", "--mirror", "http://127.0.0.1:2@abc"], "percentage"),
        (["--primary", "http://127.0.0.1:1", "--mirror", "http://h:2/path"], "no path"),
        (["--primary", "http://127.0.0.1:1", "--mirror", "x", "--listen", "nope"], "HOST:PORT"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = subprocess.run(
        [str(MESHMIRROR), "run", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


# --- the installed package ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """meshmirror built as a wheel from a copy of this checkout (so the checkout stays clean)
    and installed, not editable, into a directory of its own; its dependencies come from this
    test environment."""
    work = tmp_path_factory.mktemp("pkg")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "addons" / "meshmirror",
        src / "addons" / "meshmirror",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = work / "wheels"
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("meshmirror-*.whl")
    target = work / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, timeout=300
    )
    return target


def test_installed_package_runs_with_mitmdump_s_addon_path(
    installed: Path, backends: tuple[Recorder, Recorder], tmp_path: Path
) -> None:
    primary, mirror = backends
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(installed), PYTHONUNBUFFERED="1")
    path = subprocess.run(
        [sys.executable, "-m", "meshmirror", "addon-path"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert Path(path).is_file() and Path(path).is_relative_to(installed), path
    cfg = mc.mirror_config(
        tmp_path / "c.yaml",
        primary.port,
        {"shadow.local": mc.service_entry("shadow", "shadow.local", mirror.port)},
    )
    lines: list[str] = []
    proc = spawn(
        [
            str(BIN / "mitmdump"),
            "--mode",
            f"reverse:{primary.url}",
            "--listen-host",
            "127.0.0.1",
            "-p",
            "0",
            "-s",
            path,
            "--set",
            f"mirror_config={cfg}",
            "--set",
            "mirror_verbosity=each",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=elsewhere,
        env=env,
    )
    reader = read_lines(proc, lines)
    try:
        m = wait_for(lambda: LISTEN_RE.search("".join(lines)), timeout=30, what="mitmdump")
        assert get(int(m.group(1))) == (200, b"primary")
        wait_for(lambda: mirror.hosts, timeout=10, what="the copy")
        assert mirror.hosts == ["app.example.com-shadow"]
        # The proxy loaded the installed package's script, and through it the package.
        assert f"Loading script {path}" in "".join(lines)
    finally:
        stop(proc)
        reader.join(5)
    assert "mirror sent 200" in "".join(lines)
