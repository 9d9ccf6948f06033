"""Comparisons off the proxy's event loop.

A comparison can take a good part of a second of CPU even within its budget (decoding, parsing
and aligning two 256 KiB bodies), and the proxy's event loop serves every client: run there, or
in a thread that holds the GIL, it would hold up responses that have nothing to do with it. So
`Comparer` hands each job (outcomes/compare_job.py) to a child process,
`python -m meshmirror.outcomes.compare_worker`, over a pipe, and calls the job's `on_done` with
its Comparison on the loop when the answer comes back. The loop only pickles the job (its
bodies are bounded by mirror_compare_max_body) and reads the answer.

Contract: every submitted job gets exactly one `on_done`, never inside `submit` unless it could
not be queued:
- at most `max_waiting` jobs, of at most `max_bytes` of bodies together, wait at once; one more
  is not compared (`busy`) at once;
- no answer for `answer_limit` seconds while jobs wait means the process is stuck (one
  comparison and its rest take about 1.5 s at most): it is killed, and its jobs are not
  compared (`lost`), as when it dies; the next job starts a new one (at most one start per
  second);
- `drain` waits for the jobs in flight, `close` gives up on the rest (`lost`) and stops the
  process (its stdin closes; it exits).
Where no process can be started (a frozen mitmproxy) the jobs run on one worker thread instead;
without a running event loop (tests, scripts) they run at once, inside `submit`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from meshmirror.outcomes.compare import Comparison, not_compared
from meshmirror.outcomes.compare_job import CompareJob, run_job
from meshmirror.outcomes.compare_worker import LENGTH, encode

log = logging.getLogger("meshmirror")

OnDone = Callable[[Comparison], None]

MAX_WAITING = 32
MAX_BYTES = 8 * 1024 * 1024  # bodies of the jobs waiting, together
ANSWER_LIMIT = 10.0
_RESTART_INTERVAL = 1.0
_CLOSE_WAIT = 1.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # addons/, which holds meshmirror/


class Comparer:
    """Runs comparisons off the loop (see the module docstring)."""

    def __init__(
        self,
        *,
        max_waiting: int = MAX_WAITING,
        max_bytes: int = MAX_BYTES,
        answer_limit: float = ANSWER_LIMIT,
        use_process: bool | None = None,
    ) -> None:
        self.max_waiting = max_waiting
        self.max_bytes = max_bytes
        self._bytes = 0  # bodies of the jobs waiting
        self.answer_limit = answer_limit
        # A frozen (PyInstaller) mitmproxy cannot run `-m module`.
        self.use_process = not getattr(sys, "frozen", False) if use_process is None else use_process
        self._waiting: dict[int, tuple[OnDone, int]] = {}  # token -> (on_done, size)
        self._heard = 0.0  # monotonic time of the last answer (or of the first job waiting)
        self._next_token = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_start = -_RESTART_INTERVAL
        self._wbuf = bytearray()
        self._rbuf = bytearray()
        self._writer_registered = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        #: Comparison processes started (1 in a healthy run).
        self.starts = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def has_room(self) -> bool:
        """Whether the jobs waiting leave room for more (half the caps: a pacer's margin)."""
        return len(self._waiting) < self.max_waiting // 2 and self._bytes < self.max_bytes // 2

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def submit(self, job: CompareJob, on_done: OnDone) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            on_done(run_job(job))
            return
        size = job.size()
        if len(self._waiting) >= self.max_waiting or (
            self._waiting and self._bytes + size > self.max_bytes
        ):
            on_done(not_compared("busy"))
            return
        self._loop = loop
        token = self._next_token
        self._next_token += 1
        if not self._waiting:
            self._heard = time.monotonic()
        self._waiting[token] = (on_done, size)
        self._bytes += size
        if not self.use_process:
            self._run_in_thread(loop, token, job)
            return
        if self._proc is None and not self._start(loop):
            self._complete(token, not_compared("lost", detail="cannot start it"))
            return
        self._wbuf += encode((token, job))
        self._write_some()
        if self._watchdog is None:
            self._watchdog = loop.call_later(1.0, self._check_answers)

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the jobs in flight; the rest are not compared."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while self._waiting and loop.time() < deadline:
            await asyncio.sleep(0.01)
        self._fail_all("stopped")

    def close(self) -> None:
        """Give up on the jobs in flight (`lost`) and stop the process (or the thread)."""
        proc = self._proc
        if proc is not None:
            self._detach()
            try:
                assert proc.stdin is not None
                proc.stdin.close()  # EOF: the process exits
            except OSError:
                pass
            _reap(proc, _CLOSE_WAIT)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._fail_all("stopped")

    # -- the thread (no process) ------------------------------------------------------------

    def _run_in_thread(self, loop: asyncio.AbstractEventLoop, token: int, job: CompareJob) -> None:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="meshmirror-compare"
            )
        future = loop.run_in_executor(self._executor, run_job, job)

        def done(f: asyncio.Future[Comparison]) -> None:
            if not f.cancelled():
                self._complete(token, f.result())

        future.add_done_callback(done)

    # -- the process --------------------------------------------------------------------------

    def _start(self, loop: asyncio.AbstractEventLoop) -> bool:
        now = time.monotonic()
        if now - self._last_start < _RESTART_INTERVAL:
            return False
        self._last_start = now
        env = dict(os.environ)
        # The child must import this package even when mitmproxy loaded it from addons/
        # without an install.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p
        )
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "meshmirror.outcomes.compare_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                start_new_session=True,  # a terminal's Ctrl-C is the proxy's to act on
            )
        except OSError as e:
            log.warning(f"meshmirror: cannot start the comparison process: {e}")
            return False
        assert proc.stdin is not None and proc.stdout is not None
        os.set_blocking(proc.stdin.fileno(), False)
        os.set_blocking(proc.stdout.fileno(), False)
        loop.add_reader(proc.stdout.fileno(), self._readable)
        self._proc = proc
        self._rbuf.clear()
        self._wbuf.clear()
        self.starts += 1
        if self.starts > 1:
            log.info(f"meshmirror: comparison process restarted (pid {proc.pid})")
        return True

    def _write_some(self) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or self._loop is None:
            return
        fd = proc.stdin.fileno()
        if self._wbuf:
            try:
                written = os.write(fd, self._wbuf)
            except BlockingIOError:
                written = 0
            except OSError as e:
                self._died(f"cannot write to it: {e.strerror or e}")
                return
            del self._wbuf[:written]
        if self._wbuf and not self._writer_registered:
            self._loop.add_writer(fd, self._write_some)
            self._writer_registered = True
        elif not self._wbuf and self._writer_registered:
            self._loop.remove_writer(fd)
            self._writer_registered = False

    def _readable(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        try:
            data = os.read(proc.stdout.fileno(), 1 << 18)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._died("it exited")
            return
        buf = self._rbuf
        buf += data
        while len(buf) >= LENGTH.size:
            (size,) = LENGTH.unpack_from(buf)
            if len(buf) < LENGTH.size + size:
                break
            token, comparison = pickle.loads(buf[LENGTH.size : LENGTH.size + size])
            del buf[: LENGTH.size + size]
            self._heard = time.monotonic()
            self._complete(token, comparison)

    def _check_answers(self) -> None:
        """Every second while jobs wait: no answer for answer_limit means a stuck process."""
        self._watchdog = None
        if not self._waiting or self._loop is None:
            return
        proc = self._proc
        if proc is not None and time.monotonic() - self._heard > self.answer_limit:
            proc.kill()
            self._died(f"no answer in {self.answer_limit:g}s, killed")
        if self._waiting:
            self._watchdog = self._loop.call_later(1.0, self._check_answers)

    def _died(self, why: str) -> None:
        proc = self._proc
        if proc is None:
            return
        self._detach()
        code = _reap(proc, 0.5)
        log.warning(
            f"meshmirror: comparison process lost ({why}; exit code {code}); "
            f"{len(self._waiting)} copies not compared"
        )
        self._fail_all(why)

    def _detach(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        proc, self._proc = self._proc, None
        if proc is None or self._loop is None or self._loop.is_closed():
            return
        assert proc.stdin is not None and proc.stdout is not None
        if self._writer_registered:
            self._loop.remove_writer(proc.stdin.fileno())
            self._writer_registered = False
        self._loop.remove_reader(proc.stdout.fileno())
        self._wbuf.clear()

    def _complete(self, token: int, comparison: Comparison) -> None:
        entry = self._waiting.pop(token, None)
        if entry is None:
            return  # given up on already
        self._bytes -= entry[1]
        try:
            entry[0](comparison)
        except Exception:
            log.exception("meshmirror: error while recording a comparison")

    def _fail_all(self, why: str) -> None:
        for token in list(self._waiting):
            self._complete(token, not_compared("lost", detail=why))


def _reap(proc: subprocess.Popen[bytes], wait: float) -> int | None:
    """Close our ends of the pipes and collect the process (killing it if it lingers)."""
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass
    try:
        return proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            return proc.wait(1.0)
        except subprocess.TimeoutExpired:
            return None
