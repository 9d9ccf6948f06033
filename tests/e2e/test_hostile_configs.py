"""Hostile config files against a real mitmdump.

- A file whose alias expansions add up to millions of YAML nodes is rejected with a located error,
  and its hot reload runs off the event loop: a keep-alive client is not stalled meanwhile.
- YAML nested about 990 deep is a located error in `meshmirror validate`, at startup and on a
  hot reload (counted in `reloads.rejected`), never a RecursionError traceback.
- A bad `mirror_config` at startup prints the lines `meshmirror validate` prints, no traceback,
  exits 1, and forwards nothing in the moment before it exits.
- A config with no route left (the last VirtualService deleted, an empty directory, a directory
  holding only a symlink loop) is served, but as a warning saying what it means for requests,
  and `mirror.stats` says `"config": "empty"`.

Most proxies here are started by `launch`, which can add a second script that writes the
`mirror.stats` JSON when mitmdump stops, and can run mitmdump at `termlog_verbosity=warn`, so that
a line seen in its output is known to be a warning (or an error), not an info line.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from tests.support import meshconfig as mc
from tests.support.launch import Launched, messages
from tests.support.mitmdump import Proxy
from tests.support.processes import wait_for


def get(port: int, host: str = "app.example.com", path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshmirror", "validate", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def app_config(path: Path, primary_port: int, mirror_port: int | None = None) -> Path:
    """primary.local -> primary_port; with `mirror_port`, every request mirrored to it."""
    mirrors = {}
    if mirror_port is not None:
        mirrors["shadow.local"] = mc.service_entry("shadow", "shadow.local", mirror_port)
    return mc.mirror_config(path, primary_port, mirrors, percentage=100 if mirrors else None)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --- alias expansions add up across the documents of a file --------------------------------------


def alias_heavy_document(i: int) -> str:
    """A document of a kind meshmirror skips, 9 lines, that builds to ~190k YAML nodes: under the
    per-document cap (200,000), so only a cap on the whole file stops a stream of them."""
    tens = ", ".join(["x"] * 10)
    rows = [f"a: &a [{tens}]"]
    for prev, name in zip("abcd", "bcde", strict=True):
        rows.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    rows.append(f"f: [{', '.join(['*d'] * 6)}]")
    head = f"apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w{i}}}\n"
    return head + "\n".join(rows) + "\n"


class KeepAliveClient:
    """Requests on one keep-alive connection, back to back; (start, seconds) of each."""

    def __init__(self, port: int, host: str = "app.example.com") -> None:
        self.port = port
        self.host = host
        self.samples: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                conn.request("GET", "/ka", headers={"Host": self.host})
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(repr(e))
                return
            self.samples.append((start, time.monotonic() - start))
            self._stop.wait(0.02)
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(30)


def test_alias_heavy_file_is_rejected_and_its_reload_does_not_stall_requests(
    launch: Callable[..., Launched], primary: HTTPServer, tmp_path: Path
) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    app_config(cfg / "app.yaml", primary.port)
    # 8 documents: 1.5 million nodes, 3 kB. Each is under the per-document cap.
    bomb_text = "---\n".join(alias_heavy_document(i) for i in range(8))
    assert len(bomb_text) < 4000

    launched = launch(primary.port, [cfg], "mirror_reload_interval=100ms")
    proxy = launched.proxy
    client = KeepAliveClient(proxy.port)
    try:
        wait_for(lambda: len(client.samples) >= 10 or client.errors, timeout=20)
        began = time.monotonic()
        write_atomically(cfg / "widgets.yaml", bomb_text)
        wait_for(
            lambda: (
                proxy.log_lines("config change rejected")
                or proxy.log_lines("config generation 2 loaded")
            ),
            timeout=60,
        )
        ended = time.monotonic()
        time.sleep(0.2)  # one more request after the reload ended
    finally:
        client.stop()
    assert not client.errors, client.errors
    during = [s for start, s in client.samples if began <= start <= ended]
    assert len(during) >= 3, (ended - began, client.samples[-5:])
    assert max(during) < 1.0, f"a keep-alive request took {max(during):.2f}s during the reload"

    rejected = proxy.log_lines("config change rejected")
    assert rejected and "generation 1 keeps serving" in rejected[0], proxy.output
    located = [m for m in messages(proxy) if "widgets.yaml:" in m and "1000000 YAML nodes" in m]
    # The five documents before it built 950,000 nodes; the sixth crosses 1,000,000.
    assert located and ": doc 6" in located[0], proxy.output
    assert launched.stats()["reloads"] == {"loaded": 0, "rejected": 1}

    r = validate(cfg)
    assert r.returncode == 1 and "1000000 YAML nodes" in r.stdout, r.stdout + r.stderr


# --- deep nesting --------------------------------------------------------------------------------


def deeply_nested(path: Path, depth: int = 990) -> Path:
    """A document of a kind meshmirror skips holding a flow sequence `depth` deep (libyaml's
    own limit is 1000)."""
    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\n"
        f"data: {'[' * depth}{']' * depth}\n"
    )
    return path


def test_deep_nesting_is_a_located_error_in_validate_at_startup_and_on_reload(
    launch: Callable[..., Launched], primary: HTTPServer, tmp_path: Path
) -> None:
    deep = deeply_nested(tmp_path / "deep.yaml")
    r = validate(deep)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-2000:]
    assert r.returncode == 1, r.stdout
    (located,) = [line for line in r.stdout.splitlines() if "nested too deeply" in line]
    assert located.startswith(f"{deep}:4: doc 1: data[0][0]")

    failed = launch(primary.port, [deep], expect_failure=True, stats=False).proxy
    assert failed.proc.returncode == 1, failed.output
    assert "Traceback" not in failed.output and "RecursionError" not in failed.output
    assert located in messages(failed), failed.output

    cfg = tmp_path / "cfg"
    cfg.mkdir()
    app_config(cfg / "app.yaml", primary.port)
    launched = launch(primary.port, [cfg], "mirror_reload_interval=100ms")
    proxy = launched.proxy
    deeply_nested(cfg / "deep.tmp").replace(cfg / "deep.yaml")
    wait_for(lambda: proxy.log_lines("config change rejected"), timeout=30)
    assert "Traceback" not in proxy.output and "failed unexpectedly" not in proxy.output
    assert any("deep.yaml:4: doc 1: data[0][0]" in m for m in messages(proxy))
    assert get(proxy.port)[0] == 200  # generation 1 keeps serving
    assert launched.stats()["reloads"] == {"loaded": 0, "rejected": 1}


# --- startup errors ------------------------------------------------------------------------------


def bad_config(kind: str, d: Path, primary_port: int) -> Path:
    if kind == "missing":
        return d / "missing.yaml"
    if kind == "binary":
        p = d / "blob.yaml"
        p.write_bytes(b"\x00\xff\xfe binary \x80\x81")
        return p
    if kind == "invalid-resource":
        p = app_config(d / "app.yaml", primary_port)
        p.write_text(p.read_text().replace("resolution: STATIC", "resolution: NOPE"))
        return p
    if kind == "dev-null":
        return Path("/dev/null")
    if kind == "txt":
        p = d / "notes.txt"
        p.write_text("remember to mirror the payments service\n")
        return p
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "binary", "invalid-resource", "dev-null", "txt"])
def test_bad_config_at_startup_prints_the_lines_validate_prints_and_exits_1(
    launch: Callable[..., Launched], primary: HTTPServer, tmp_path: Path, kind: str
) -> None:
    path = bad_config(kind, tmp_path, primary.port)
    r = validate(path)
    assert r.returncode in (1, 2), r.stdout + r.stderr
    expected = (r.stdout + r.stderr).splitlines()
    assert expected and "Traceback" not in r.stdout + r.stderr

    proxy = launch(primary.port, [path], expect_failure=True, stats=False).proxy
    assert proxy.proc.returncode == 1, proxy.output
    assert "Traceback" not in proxy.output and "error in script" not in proxy.output, proxy.output
    got = messages(proxy)
    # validate's lines, in its order, one after the other
    at = got.index(expected[0]) if expected[0] in got else -1
    assert at >= 0 and got[at : at + len(expected)] == expected, (expected, got)
    assert len(primary.log) == 0


def test_nothing_is_forwarded_or_mirrored_before_a_failed_startup_exits(
    launch: Callable[..., Launched],
    primary: HTTPServer,
    mirror_server: HTTPServer,
    tmp_path: Path,
) -> None:
    # A half-good config: the VirtualService and its mirror are valid, another document is not.
    path = app_config(tmp_path / "app.yaml", primary.port, mirror_server.port)
    path.write_text(path.read_text() + "---\napiVersion: v1\nkind: Service\nmetadata: {}\n")
    mirror_server.expect_request("").respond_with_data("m")
    attempts: list[str] = []
    stop = threading.Event()

    def hammer(proxy: Proxy) -> None:
        # Requests from the moment mitmdump prints its port until it has exited.
        port = None
        while port is None and proxy.proc.poll() is None:
            port = proxy.listen_port()
            time.sleep(0.001)
        while port is not None and not stop.is_set():
            try:
                attempts.append(str(get(port)[0]))
            except (OSError, http.client.HTTPException) as e:
                attempts.append(type(e).__name__)
                if proxy.proc.poll() is not None:
                    return
                time.sleep(0.002)

    threads: list[threading.Thread] = []

    def on_start(proxy: Proxy) -> None:
        threads.append(threading.Thread(target=hammer, args=(proxy,), daemon=True))
        threads[0].start()

    try:
        proxy = launch(
            primary.port, [path], expect_failure=True, stats=False, on_start=on_start
        ).proxy
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert proxy.proc.returncode == 1, proxy.output
    assert attempts, "the proxy never printed its port"
    assert len(primary.log) == 0 and len(mirror_server.log) == 0, attempts


# --- a config with no route left -----------------------------------------------------------------


def test_deleting_the_last_virtualservice_is_applied_with_a_warning_and_stats_say_empty(
    launch: Callable[..., Launched],
    primary: HTTPServer,
    mirror_server: HTTPServer,
    tmp_path: Path,
) -> None:
    fallback = HTTPServer(host="127.0.0.1", port=0)
    fallback.expect_request("").respond_with_data("reverse upstream")
    fallback.start()
    mirror_server.expect_request("").respond_with_data("m")
    try:
        cfg = tmp_path / "cfg"
        cfg.mkdir()
        app_config(cfg / "app.yaml", primary.port, mirror_server.port)
        launched = launch(fallback.port, [cfg], "mirror_reload_interval=100ms", quiet=True)
        proxy = launched.proxy
        assert get(proxy.port) == (200, b"primary")
        wait_for(lambda: len(mirror_server.log) == 1, timeout=10)
        assert proxy.output == "", proxy.output  # nothing at warning level so far

        (cfg / "app.yaml").unlink()  # as `kubectl delete -f` removes it
        wait_for(lambda: proxy.log_lines("VirtualService default/app"), timeout=10)
        # termlog_verbosity=warn: every line printed is a warning or an error
        (warning,) = proxy.log_lines("VirtualService default/app")
        assert "generation 2" in warning and "reverse upstream" in warning, warning
        assert "none is mirrored" in warning, warning
        assert get(proxy.port) == (200, b"reverse upstream")
        time.sleep(0.3)
        assert len(mirror_server.log) == 1
        stats = launched.stats()
        assert stats["config"] == "empty" and stats["generation"] == 2
        assert stats["reloads"] == {"loaded": 1, "rejected": 0}
    finally:
        fallback.stop()


@pytest.mark.parametrize("kind", ["empty-directory", "symlink-loop", "no-route"])
def test_a_config_without_routes_at_startup_is_a_warning(
    launch: Callable[..., Launched], primary: HTTPServer, tmp_path: Path, kind: str
) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    if kind == "symlink-loop":
        (cfg / "app.yaml").symlink_to(cfg / "app.yaml")
    if kind == "no-route":  # services only: nothing routes or mirrors a request
        (cfg / "services.yaml").write_text(mc.service_entry("primary", "primary.local", 1))
    launched = launch(primary.port, [cfg], quiet=True)
    proxy = launched.proxy
    wait_for(lambda: proxy.log_lines("reverse upstream"), timeout=10)
    printed = messages(proxy)
    assert any("generation 1" in m and "none is mirrored" in m for m in printed), printed
    if kind != "no-route":
        assert any(f"{cfg}: no YAML file" in m for m in printed), printed
    if kind == "symlink-loop":
        assert any(f"{cfg / 'app.yaml'}: skipped" in m for m in printed), printed
    assert get(proxy.port) == (200, b"primary")
    assert launched.stats()["config"] == "empty"
