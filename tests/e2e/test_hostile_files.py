"""Hostile files and paths against a real mitmdump and a real `meshmirror run`.

- A noise file (`mirror_compare_noise`) nested 200,000 deep is a located option error at
  startup, never a RecursionError traceback; one with more fields per rule than the model keeps
  is trimmed when it is loaded.
- The learned noise is saved through a temporary file of an unpredictable name, created
  exclusively: a link planted at `NOISE.tmp` is left alone, its target untouched.
- `meshmirror run --write-config DIR` replaces a file it wrote before, but refuses one it did
  not write, and a link, unless `--force` (which replaces the link, never its target).
- A FIFO as `mirror_log` or `mirror_compare_noise` is refused at startup with a located message
  instead of blocking mitmdump forever.
- When the outcome log cannot be written (EFBIG, from RLIMIT_FSIZE on the running mitmdump):
  clients are served, one warning names the file and the error, the records are counted as lost
  in `mirror.stats`, the rest of each copy's bookkeeping goes on, and writing resumes once it
  can, with no record written twice or joined to a partial one.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import stat
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from tests.e2e.test_hostile_configs import app_config
from tests.e2e.test_run import MESHMIRROR, Running
from tests.support.launch import Launched, messages
from tests.support.mitmdump import Proxy
from tests.support.processes import wait_for
from tests.support.servers import Recorder

RULE = "default/app[0]"


def get(port: int, path: str = "/") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": "app.example.com"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def log_records(proxy: Proxy) -> dict[str, int]:
    """meshmirror_outcome_log_records_total by result, from the proxy's /metrics."""
    m = re.search(r"Prometheus metrics at (http://127\.0\.0\.1:\d+/metrics)", proxy.output)
    if m is None:
        return {}
    with urllib.request.urlopen(m.group(1), timeout=10) as resp:
        text = resp.read().decode()
    found = re.findall(r'meshmirror_outcome_log_records_total\{result="(\w+)"\} (\S+)', text)
    return {result: int(float(value)) for result, value in found}


def compared_config(path: Path, primary_port: int, mirror_port: int, baseline: bool) -> Path:
    """Every request mirrored to shadow.local and compared; with `baseline`, shadow.local is the
    rule's baseline (its differences are learned as noise)."""
    cfg = app_config(path, primary_port, mirror_port)
    text = cfg.read_text()
    annotations = '    meshmirror.io/compare: "true"\n'
    if baseline:
        annotations += "    meshmirror.io/compare-baseline: shadow.local\n"
    text = text.replace(
        "metadata: {name: app}", f"metadata:\n  name: app\n  annotations:\n{annotations}"
    )
    cfg.write_text(text)
    return cfg


# --- the noise file ----------------------------------------------------------------------------


def test_a_deeply_nested_noise_file_is_a_located_option_error(
    launch: Callable[..., Launched], primary: HTTPServer, tmp_path: Path
) -> None:
    noise = tmp_path / "noise.json"
    noise.write_text("[" * 200_000)
    cfg = app_config(tmp_path / "app.yaml", primary.port)
    failed = launch(
        primary.port, [cfg], f"mirror_compare_noise={noise}", expect_failure=True, stats=False
    ).proxy
    assert failed.proc.returncode == 1, failed.output
    assert "Traceback" not in failed.output and "RecursionError" not in failed.output
    (line,) = [m for m in messages(failed) if "mirror_compare_noise" in m]
    assert f"mirror_compare_noise: {noise}: " in line and "nested" in line, line


def test_a_noise_file_over_the_field_cap_is_trimmed_when_loaded(
    launch: Callable[..., Launched], primary: HTTPServer, tmp_path: Path
) -> None:
    noise = tmp_path / "noise.json"
    fields = {f"body:/f{i}": i + 1 for i in range(600)}  # the cap is 500 per rule
    noise.write_text(json.dumps({"rules": {RULE: {"compared": 700, "fields": fields}}}))
    cfg = app_config(tmp_path / "app.yaml", primary.port)
    launched = launch(primary.port, [cfg], f"mirror_compare_noise={noise}")
    stats = launched.stats()  # stops mitmdump, which saves the model again
    assert len(stats["noise"][RULE]["noise"]) == 500, stats["noise"]
    saved = json.loads(noise.read_text())["rules"][RULE]["fields"]
    # The most counted are kept: the 500 of the 600 with the highest counts.
    assert sorted(saved) == sorted(f"body:/f{i}" for i in range(100, 600))


def test_a_link_planted_at_the_noise_temporary_path_is_not_written_through(
    launch: Callable[..., Launched], primary: HTTPServer, tmp_path: Path
) -> None:
    shadow = Recorder("shadow")
    try:
        noise = tmp_path / "noise.json"
        victim = tmp_path / "victim.txt"
        victim.write_text("precious\n")
        (tmp_path / "noise.json.tmp").symlink_to(victim)
        cfg = compared_config(tmp_path / "app.yaml", primary.port, shadow.port, baseline=True)
        launched = launch(primary.port, [cfg], f"mirror_compare_noise={noise}")
        assert get(launched.proxy.port) == 200
        wait_for(lambda: shadow.count >= 1, timeout=10, what="the baseline copy")
        stats = launched.stats()
        assert stats["noise"][RULE]["baseline_compared"] == 1, stats
    finally:
        shadow.close()
    assert victim.read_text() == "precious\n"
    assert (tmp_path / "noise.json.tmp").is_symlink()
    saved = json.loads(noise.read_text())
    assert saved["rules"][RULE]["compared"] == 1
    assert stat.S_IMODE(noise.stat().st_mode) == 0o644 & ~_umask()
    # Nothing else was left beside it: the temporary file was renamed into place.
    assert sorted(p.name for p in tmp_path.iterdir() if "noise" in p.name) == [
        "noise.json",
        "noise.json.tmp",
    ]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- FIFOs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["mirror_log", "mirror_compare_noise"])
def test_a_fifo_is_refused_at_startup_with_a_located_message(
    launch: Callable[..., Launched], primary: HTTPServer, tmp_path: Path, option: str
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cfg = app_config(tmp_path / "app.yaml", primary.port)
    failed = launch(primary.port, [cfg], f"{option}={fifo}", expect_failure=True, stats=False)
    proxy = failed.proxy
    assert proxy.proc.returncode == 1, proxy.output
    assert "Traceback" not in proxy.output
    (line,) = [m for m in messages(proxy) if f"{option}: {fifo}: " in m]
    assert "FIFO" in line and "not a regular file" in line, line


# --- the outcome log on a full disk ------------------------------------------------------------


def test_an_outcome_log_that_cannot_be_written_is_one_warning_and_counted_as_lost(
    launch: Callable[..., Launched], primary: HTTPServer, tmp_path: Path
) -> None:
    shadow = Recorder("shadow")
    try:
        log = tmp_path / "outcomes.jsonl"
        cfg = compared_config(tmp_path / "app.yaml", primary.port, shadow.port, baseline=False)
        launched = launch(primary.port, [cfg], f"mirror_log={log}", "mirror_metrics=127.0.0.1:0")
        proxy = launched.proxy
        pid = proxy.proc.pid

        def lines() -> list[str]:
            return log.read_text().splitlines() if log.exists() else []

        for i in range(3):
            assert get(proxy.port, f"/before/{i}") == 200
        wait_for(lambda: len(lines()) == 3, timeout=10, what="three records")
        # From now on the file may grow by 40 bytes only: the next record is cut after 40
        # bytes, and every later one fails at once (EFBIG), as on a full disk.
        limit = log.stat().st_size + 40
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        for i in range(5):
            assert get(proxy.port, f"/during/{i}") == 200
        # Every record of those copies was tried (comparisons finish off the loop, in time).
        wait_for(lambda: log_records(proxy).get("lost") == 5, timeout=20, what="5 lost records")
        assert proxy.log_lines("cannot write")
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        for i in range(2):
            assert get(proxy.port, f"/after/{i}") == 200
        wait_for(lambda: sum('"/after/' in x for x in lines()) == 2, timeout=10, what="two records")
        stats = launched.stats()
    finally:
        shadow.close()
    out = proxy.output
    assert "Traceback" not in out, out
    (warning,) = [m for m in messages(proxy) if "cannot write" in m]
    assert f"mirror_log: {log}: cannot write" in warning and "File too large" in warning, warning
    # Every copy was compared and counted, written or not: the bookkeeping went on.
    assert stats["comparison"][f"{RULE} outbound|80||shadow.local"] == {"mismatched": 10}
    assert stats["outcome_log"] == {"written": 5, "lost": 5}, stats["outcome_log"]
    records, garbled = [], 0
    for line in lines():
        try:
            records.append(json.loads(line))
        except ValueError:
            garbled += 1
    assert garbled == 1  # the record cut after 40 bytes, on a line of its own
    assert [r["path"] for r in records] == [
        "/before/0",
        "/before/1",
        "/before/2",
        "/after/0",
        "/after/1",
    ]


# --- meshmirror run --write-config -------------------------------------------------------------


def write_config(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`meshmirror run --write-config out` with a primary that nothing listens on: it exits
    with 2 before running anything when it refuses to write."""
    return subprocess.run(
        [
            str(MESHMIRROR),
            "run",
            "--primary",
            "http://127.0.0.1:9",
            "--mirror",
            "http://127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
            "--write-config",
            str(out),
            *extra,
            "--",
            "--version",  # mitmdump prints its version and exits: nothing is served
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_write_config_refuses_a_file_it_did_not_write_and_a_link_unless_forced(
    tmp_path: Path,
) -> None:
    out = tmp_path / "mesh"
    out.mkdir()
    target = out / "meshmirror-run.yaml"
    target.write_text("# my own mesh, hand-written\n")
    refused = write_config(out)
    assert refused.returncode == 2, refused
    assert "Traceback" not in refused.stderr
    assert f"{target}" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert target.read_text() == "# my own mesh, hand-written\n"

    forced = write_config(out, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert target.read_text().startswith("# Written by `meshmirror run`")
    # Written by meshmirror run: a second run replaces it without --force.
    again = write_config(out)
    assert again.returncode == 0, again.stdout + again.stderr

    victim = tmp_path / "victim.yaml"
    victim.write_text("precious: true\n")
    target.unlink()
    target.symlink_to(victim)
    linked = write_config(out)
    assert linked.returncode == 2 and "link" in linked.stderr, linked.stderr
    assert victim.read_text() == "precious: true\n" and target.is_symlink()
    forced = write_config(out, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert victim.read_text() == "precious: true\n"  # the link was replaced, not followed
    assert not target.is_symlink() and target.read_text().startswith("# Written by")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 & ~_umask()


def test_write_config_serves_what_it_wrote(tmp_path: Path) -> None:
    """The config written under --force is the one served (a real run, stopped with Ctrl-C)."""
    served, mirror = Recorder("primary"), Recorder("mirror")
    out = tmp_path / "mesh"
    out.mkdir()
    (out / "meshmirror-run.yaml").write_text("# not ours\n")
    run = Running(
        "--primary", served.url, "--mirror", mirror.url, "--write-config", str(out), "--force"
    )
    try:
        assert get(run.port()) == 200
        wait_for(lambda: mirror.count >= 1, timeout=10, what="the copy")
    finally:
        code = run.interrupt()
        served.close()
        mirror.close()
    assert code == 0, run.output[-3000:]
    assert (out / "meshmirror-run.yaml").read_text().startswith("# Written by")
