"""Mirror sending off the proxy's process: MirrorWriter's contract, served by a child process.

Why: mitmproxy runs on one core, and each copy sent from its loop cost about 0.11 ms of CPU
there (a task, a timer, a socket send and a receive, parsing the answer). A worker thread does
not help (measured slower: the GIL serialises it with the proxy). A child process does: the
proxy only pickles the ready copy into a pipe, batched once per loop iteration, and reads back
the results; the sockets, timeouts, slow and dead mirrors all live in the sender process on the
other core. BENCHMARKS.md has the figures.

Seen from the proxy's loop nothing changes: `submit` decides at once (the per-pool-key in-flight
cap is counted here, before the copy crosses the pipe), and every accepted copy ends in exactly
one `on_done`, called on the proxy's loop. If the sender process dies, its copies fail with
class `other` and the next copy starts a new one (at most one start per second).

The proxy does not trust the child to keep time: a copy without a result `mirror_timeout` +
`ANSWER_MARGIN` after submit fails here as `timeout` (a result that comes later is ignored). When
the child has said nothing for that long while copies are overdue, one warning says so; still
silent for as long again (stopped, wedged), it is killed and the next copy starts a new one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest, MirrorResult
from meshmirror.mirror.worker import FrameReader, copy_message, encode_frame, endpoint_message
from meshmirror.mirror.writer import InflightCaps, call_on_done, check_limits

log = logging.getLogger("meshmirror.writer")

_RESTART_INTERVAL = 1.0  # seconds between starts of the sender process after it died
_CLOSE_WAIT = 2.0  # how long close() waits for the sender to report and exit
# Seconds past mirror_timeout the proxy waits for a copy's result before failing it itself: the
# child times each copy to mirror_timeout, so only a stopped or starved child is this late.
ANSWER_MARGIN = 1.0
# Endpoints the sender process has been told about, at most; then the table starts over
# (each config generation brings new endpoint objects).
_MAX_ENDPOINTS = 1024
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # addons/, which holds meshmirror/


def can_spawn() -> bool:
    """False in a frozen (PyInstaller) mitmproxy, whose executable cannot run `-m module`."""
    return not getattr(sys, "frozen", False)


class ProcessWriter:
    """MirrorWriter's interface; the copies are sent by a child process."""

    def __init__(
        self,
        *,
        timeout: float,
        max_inflight: int,
        connect_timeout: float | None = None,
        max_idle_per_endpoint: int = 16,
        max_response_body: int = 8 * 1024 * 1024,
        timeline: bool = False,
    ) -> None:
        check_limits(timeout, max_inflight)
        self._answer_limit = timeout + ANSWER_MARGIN
        # With timeline=True each result carries its progress stamps (`MirrorResult.times`),
        # the hand-off to the pipe stamped here.
        self._timeline = timeline
        self._handoff: dict[int, float] = {}
        # MirrorWriter's arguments, handed to the sender process on its command line.
        self._params = json.dumps(
            {
                "timeout": timeout,
                "connect_timeout": connect_timeout,
                "max_idle_per_endpoint": max_idle_per_endpoint,
                "max_response_body": max_response_body,
                "timeline": timeline,
            }
        )
        self._caps = InflightCaps(max_inflight)
        self._endpoint_ids: dict[int, tuple[MirrorEndpoint, int]] = {}
        self._next_endpoint_id = 0
        # token -> (pool key, on_done, deadline); in submit order, so the oldest come first.
        self._pending: dict[int, tuple[str, Callable[[MirrorResult], None], float]] = {}
        self._next_token = 0
        self._cancelled = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_start = -_RESTART_INTERVAL
        self._outq: list[Any] = []
        self._wbuf = bytearray()
        self._flush_scheduled = False
        self._writer_registered = False
        self._frames = FrameReader()
        self._watchdog: asyncio.TimerHandle | None = None
        self._own: list[tuple[str, int]] = []
        self._last_heard = 0.0  # monotonic time of the child's last result bytes
        self._stalled_since: float | None = None  # when it was found not answering
        #: How many on_done callbacks raised (only the first is logged, with its traceback).
        self.callback_errors = 0
        #: How many times the sender process was started (1 in a healthy run).
        self.starts = 0
        #: Copies failed here as `timeout` because the child did not report them in time.
        self.overdue = 0

    # -- public API (proxy loop) ------------------------------------------------------------

    def submit(
        self,
        pool_key: str,
        endpoint: MirrorEndpoint,
        request: MirrorRequest,
        on_done: Callable[[MirrorResult], None],
        capture: int = 0,
    ) -> bool:
        """As MirrorWriter.submit. on_done is called later, on this loop; only when the sender
        process cannot be started is it called at once (failure `other`)."""
        if not self._caps.take(pool_key):
            return False
        token = self._next_token
        self._next_token = token + 1
        self._pending[token] = (pool_key, on_done, time.monotonic() + self._answer_limit)
        if self._proc is None and not self._start():
            self._complete(token, _failed("other", "mirror sender process not running"))
            return True
        self._send(copy_message(token, pool_key, self._endpoint_id(endpoint), request, capture))
        return True

    def _endpoint_id(self, endpoint: MirrorEndpoint) -> int:
        """The sender process's id for `endpoint`, telling it the endpoint on first use. Keyed by
        identity: the fan-out builds each endpoint once per config generation."""
        known = self._endpoint_ids.get(id(endpoint))
        if known is not None and known[0] is endpoint:
            return known[1]
        if len(self._endpoint_ids) >= _MAX_ENDPOINTS:
            self._endpoint_ids.clear()
            self._send(("forget",))
        endpoint_id = self._next_endpoint_id
        self._next_endpoint_id = endpoint_id + 1
        self._endpoint_ids[id(endpoint)] = (endpoint, endpoint_id)
        self._send(endpoint_message(endpoint_id, endpoint))
        return endpoint_id

    def start(self) -> None:
        """Start the sender process now (on the running loop) rather than with the first copy,
        so that the first copies do not wait for its start-up (about 0.1 s) in the pipe."""
        if self._proc is None:
            self._last_start = -_RESTART_INTERVAL
            self._start()

    def inflight(self, pool_key: str | None = None) -> int:
        return self._caps.count(pool_key)

    def set_own_addresses(self, addresses: list[tuple[str, int]]) -> None:
        """As MirrorWriter.set_own_addresses; told to every sender process it starts."""
        own = [(str(h), int(p)) for h, p in addresses]
        if own != self._own:
            self._own = own
            if self._proc is not None:
                self._send(("own", own))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def drain(self, timeout: float) -> int:
        """Wait up to timeout for in-flight copies; cancel the rest (on_done gets "cancelled").
        Returns how many were cancelled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while self._pending and self._proc is not None and loop.time() < deadline:
            await asyncio.sleep(min(0.01, max(0.0, deadline - loop.time())))
        self._cancelled = 0
        if self._pending and self._proc is not None:
            self._send(("cancel",))
            cancel_deadline = loop.time() + _CLOSE_WAIT
            while self._pending and self._proc is not None and loop.time() < cancel_deadline:
                await asyncio.sleep(0.01)
        self._fail_all("cancelled", "cancelled by drain()")
        return self._cancelled

    def close(self) -> None:
        """Cancel every copy in flight (on_done gets "cancelled") and stop the sender process.
        Synchronous, as mitmproxy's done() needs: waits at most about two seconds for the
        sender to report its cancelled copies and exit. The next submit starts a new one."""
        proc = self._proc
        if proc is not None:
            self._detach()
            # Copies not yet written to the pipe never reach the sender: cancelled below.
            self._outq.clear()
            self._wbuf.clear()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.close()  # EOF: the sender cancels what is in flight, reports, exits
            except OSError:
                pass
            self._read_until_eof(proc, time.monotonic() + _CLOSE_WAIT)
            _reap(proc)
        self._fail_all("cancelled", "cancelled by close()")

    # -- the sender process -----------------------------------------------------------------

    def _start(self) -> bool:
        now = time.monotonic()
        if now - self._last_start < _RESTART_INTERVAL:
            return False
        self._last_start = now
        self._loop = asyncio.get_running_loop()
        env = dict(os.environ)
        # The child must import this package even when mitmproxy loaded it from addons/
        # without an install.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p
        )
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "meshmirror.mirror.worker", self._params],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                # Its own session: a terminal's Ctrl-C reaches the proxy only, which then
                # drains the copies in flight before it closes the pipe.
                start_new_session=True,
            )
        except OSError as exc:
            log.warning(f"meshmirror: cannot start the mirror sender process: {exc}")
            return False
        assert proc.stdin is not None and proc.stdout is not None
        os.set_blocking(proc.stdin.fileno(), False)
        os.set_blocking(proc.stdout.fileno(), False)
        self._loop.add_reader(proc.stdout.fileno(), self._readable)
        self._proc = proc
        self._frames = FrameReader()
        self._endpoint_ids.clear()  # a new process knows no endpoint yet
        self._last_heard = now
        self._stalled_since = None
        self._arm_watchdog()
        if self._own:
            self._send(("own", self._own))
        self.starts += 1
        if self.starts > 1:
            log.info(f"meshmirror: mirror sender process restarted (pid {proc.pid})")
        return True

    def _send(self, message: Any) -> None:
        self._outq.append(message)
        if not self._flush_scheduled and self._loop is not None:
            # One pipe write per loop iteration, however many messages were queued in it.
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._proc is None:
            return
        if self._outq:
            self._wbuf += encode_frame(self._outq)
            if self._timeline:
                now = time.time()
                for message in self._outq:
                    if message[0] == "copy":
                        self._handoff[message[1]] = now
            self._outq = []
        self._write_some()

    def _write_some(self) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        fd = proc.stdin.fileno()
        if self._wbuf:
            try:
                written = os.write(fd, self._wbuf)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._died(f"cannot write to it: {exc.strerror or exc}")
                return
            del self._wbuf[:written]
        assert self._loop is not None
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
        self._last_heard = time.monotonic()
        if self._stalled_since is not None:
            self._stalled_since = None
            log.info(f"meshmirror: mirror sender process (pid {proc.pid}) is answering again")
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            self._complete(message[0], MirrorResult(*message[1:]))

    def _died(self, why: str) -> None:
        proc = self._proc
        if proc is None:
            return
        self._detach()
        code = _reap(proc)
        detail = f"mirror sender process lost ({why}; exit code {code})"
        log.warning(f"meshmirror: {detail}; {len(self._pending)} copies in flight failed")
        self._outq.clear()
        self._wbuf.clear()
        self._fail_all("other", detail)

    def _arm_watchdog(self) -> None:
        assert self._loop is not None
        self._watchdog = self._loop.call_later(
            min(0.5, self._answer_limit / 4), self._check_answers
        )

    def _check_answers(self) -> None:
        """Fail the copies the child is late with; warn about, then replace, a silent child."""
        self._watchdog = None
        proc = self._proc
        if proc is None:
            return
        now = time.monotonic()
        overdue = []
        for token, entry in self._pending.items():
            if entry[2] > now:
                break
            overdue.append(token)
        limit = self._answer_limit
        if overdue:
            self.overdue += len(overdue)
            result = _failed("timeout", f"no result from the mirror sender process in {limit:g}s")
            for token in overdue:
                self._complete(token, result)
            silent = now - self._last_heard
            if silent >= limit:
                if self._stalled_since is None:
                    self._stalled_since = now
                    log.warning(
                        f"meshmirror: mirror sender process (pid {proc.pid}) has not answered "
                        f"for {silent:.1f}s; its late copies fail as timeout, and it is "
                        f"replaced if it stays silent for {limit:g}s more"
                    )
                elif now - self._stalled_since >= limit:
                    proc.kill()
                    self._died(f"not answering for {silent:.1f}s, killed")
                    return
        self._arm_watchdog()

    def _detach(self) -> None:
        """Stop watching the pipes; self._proc becomes None."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        proc, self._proc = self._proc, None
        if proc is None or self._loop is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        if not self._loop.is_closed():
            if self._writer_registered:
                self._loop.remove_writer(proc.stdin.fileno())
            self._loop.remove_reader(proc.stdout.fileno())
        self._writer_registered = False

    def _read_until_eof(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("meshmirror: mirror sender process did not stop within 2s")
                return
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            try:
                data = os.read(fd, 1 << 18)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return
            self._deliver(data)

    # -- results ----------------------------------------------------------------------------

    def _complete(self, token: int, result: MirrorResult) -> None:
        entry = self._pending.pop(token, None)
        if entry is None:
            return  # already answered for (close() or drain() gave up on it)
        pool_key, on_done, _ = entry
        if self._timeline:
            result = self._stamped(token, result)
        if result.failure == "cancelled":
            self._cancelled += 1
        self._caps.release(pool_key)
        self.callback_errors += call_on_done(on_done, result, self.callback_errors)

    def _stamped(self, token: int, result: MirrorResult) -> MirrorResult:
        """The result with this side's hand-off stamp (and a done stamp when the sender
        process never reported the copy)."""
        handoff = self._handoff.pop(token, 0.0)
        t = result.times
        times = (handoff, t[1], t[2], t[3], t[4]) if t else (handoff, 0.0, 0.0, 0.0, time.time())
        return dataclasses.replace(result, times=times)

    def _fail_all(self, failure: str, detail: str) -> None:
        for token in list(self._pending):
            self._complete(token, _failed(failure, detail))


def _failed(failure: str, detail: str) -> MirrorResult:
    return MirrorResult(None, failure, detail, 0.0, 0, 0)


def _reap(proc: subprocess.Popen[bytes]) -> int | None:
    """Close our ends of the pipes and collect the process (killing it if it lingers)."""
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass
    try:
        return proc.wait(0.5)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            return proc.wait(1.0)
        except subprocess.TimeoutExpired:
            return None
