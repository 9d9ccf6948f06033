"""meshmirror.cli.watchdog: what `meshmirror run`'s watchdog does when run's pipe ends, with real
processes (a `sleep` stands for the proxy) and a real directory."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from pathlib import Path

from meshmirror.cli.watchdog import Watchdog, stop_processes, watch
from tests.support.processes import spawn, stop, wait_for, wait_gone


def sleeper(*, ignore_term: bool = False) -> subprocess.Popen[bytes]:
    code = "import signal, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('up', flush=True)\ntime.sleep(120)\n"
    proc = spawn([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    return proc


def test_the_end_of_the_pipe_stops_the_process_and_removes_the_directory(tmp_path: Path) -> None:
    proc = sleeper()
    kept = tmp_path / "meshmirror-run-x"
    (kept / "sub").mkdir(parents=True)
    (kept / "sub" / "f.yaml").write_text("x")
    try:
        assert watch(io.StringIO(f"dir {kept}\npid {proc.pid}\n")) == 0
        assert proc.wait(10) == -signal.SIGTERM
        assert not kept.exists()
    finally:
        stop(proc)


def test_done_leaves_everything_alone(tmp_path: Path) -> None:
    proc = sleeper()
    try:
        assert watch(io.StringIO(f"dir {tmp_path}\npid {proc.pid}\ndone\n")) == 0
        assert proc.poll() is None and tmp_path.exists()
    finally:
        stop(proc)


def test_a_process_that_ignores_sigterm_is_killed_after_the_wait() -> None:
    proc = sleeper(ignore_term=True)
    try:
        stop_processes([(proc.pid, None)], wait=0.5)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        stop(proc)


def test_a_pid_that_is_no_longer_the_registered_process_is_spared() -> None:
    proc = sleeper()
    try:
        stop_processes([(proc.pid, "some other start time")], wait=0.5)
        assert proc.poll() is None
    finally:
        stop(proc)


def test_the_watchdog_process_cleans_up_when_its_owner_dies(tmp_path: Path) -> None:
    """A child that starts a Watchdog, registers a process and a directory, and is killed."""
    victim = sleeper()
    owner_code = (
        "import sys, time\n"
        "from meshmirror.cli.watchdog import Watchdog\n"
        "w = Watchdog()\n"
        f"w.process({victim.pid}); w.directory({str(tmp_path / 'd')!r})\n"
        "print(w.proc.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    (tmp_path / "d").mkdir()
    owner = spawn([sys.executable, "-c", owner_code], stdout=subprocess.PIPE)
    try:
        assert owner.stdout is not None
        dog = int(owner.stdout.readline())
        owner.kill()  # SIGKILL: nothing of the owner's own cleanup runs
        owner.wait(10)
        assert victim.wait(20) == -signal.SIGTERM
        wait_for(lambda: not (tmp_path / "d").exists(), timeout=10, what="the directory")
        assert wait_gone(dog, 10)  # the watchdog itself ends once it cleaned up
    finally:
        stop(owner)
        stop(victim)


def test_release_ends_the_watchdog_without_action(tmp_path: Path) -> None:
    victim = sleeper()
    try:
        w = Watchdog()
        w.process(victim.pid)
        w.directory(str(tmp_path))
        w.release()
        assert w.proc.returncode == 0
        assert victim.poll() is None and tmp_path.exists()
    finally:
        stop(victim)
