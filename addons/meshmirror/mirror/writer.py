"""The mirror writer: sends fire-and-forget copies to shadow services, over HTTP/1.1 or HTTP/2.

Pure asyncio (no mitmproxy imports) so it runs on mitmproxy's event loop and is testable alone.
Each copy is one task bounded by a per-pool-key in-flight cap and an overall timeout; the
exchange itself is the upstream client's (client.py: pooled connections, HTTP/1.1 in http1.py,
HTTP/2 in http2.py). Responses are parsed as they arrive and their bodies discarded, so a copy
never buffers more than a response head (or what `capture` asks to keep). Exceptions are mapped
to failure classes once, here, by failures.classify.

Every accepted copy ends in exactly one ``on_done(MirrorResult)``; network problems never raise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from meshmirror.mirror.client import Progress, UpstreamClient
from meshmirror.mirror.failures import (
    SELF_LOOP,
    ClosedEarly,
    ConnectTimeout,
    SelfLoop,
    StreamReset,
    classify,
    short_error,
)
from meshmirror.mirror.http1 import Captured
from meshmirror.mirror.http2 import Http2Exchange
from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest, MirrorResult

log = logging.getLogger("meshmirror.writer")


def check_limits(timeout: float, max_inflight: int | None) -> None:
    """The writers' argument checks (MirrorWriter and sender.ProcessWriter)."""
    if timeout <= 0:
        raise ValueError("timeout must be > 0")
    if max_inflight is not None and max_inflight < 1:
        raise ValueError("max_inflight must be >= 1")


class InflightCaps:
    """Copies in flight per pool key, each key capped at `limit`: both writers count here
    before they accept a copy, and release when its on_done is due."""

    __slots__ = ("limit", "_counts")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def take(self, key: str) -> bool:
        """One more in flight for key; False (nothing taken) when key is at its cap."""
        count = self._counts.get(key, 0)
        if count >= self.limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def count(self, key: str | None = None) -> int:
        if key is None:
            return sum(self._counts.values())
        return self._counts.get(key, 0)


def call_on_done(
    on_done: Callable[[MirrorResult], None], result: MirrorResult, errors_so_far: int
) -> int:
    """Run a copy's callback; returns 1 if it raised (only the first is logged, with its
    traceback, so a broken callback cannot flood the log), else 0."""
    try:
        on_done(result)
    except Exception:
        if errors_so_far == 0:
            log.exception(
                "mirror on_done callback raised; further callback errors are only counted"
            )
        return 1
    return 0


class _Copy(Progress):
    """Book-keeping for one accepted submit."""

    __slots__ = ("pool_key", "on_done", "started", "finished", "task")

    def __init__(
        self,
        pool_key: str,
        on_done: Callable[[MirrorResult], None],
        started: float,
        capture: int = 0,
    ) -> None:
        super().__init__(capture)
        self.pool_key = pool_key
        self.on_done = on_done
        self.started = started
        self.finished = False
        self.task: asyncio.Task[None] | None = None


class MirrorWriter:
    """Sends mirror copies: pooled per endpoint, bounded per pool key, timed, fire-and-forget.

    `max_inflight=None` leaves the cap to the caller: the sender process, whose parent already
    counted every copy against it before sending it over."""

    def __init__(
        self,
        *,
        timeout: float,
        max_inflight: int | None,
        connect_timeout: float | None = None,
        max_idle_per_endpoint: int = 16,
        max_response_body: int = 8 * 1024 * 1024,
        timeline: bool = False,
    ) -> None:
        check_limits(timeout, max_inflight)
        self._timeout = timeout
        self._timeline = timeline  # stamp each copy's progress into its result (`times`)
        self._caps = None if max_inflight is None else InflightCaps(max_inflight)
        if connect_timeout is not None and connect_timeout >= timeout:
            connect_timeout = None  # the copy's own deadline comes first
        self._client = UpstreamClient(
            connect_timeout=connect_timeout,
            max_idle_per_endpoint=max_idle_per_endpoint,
            max_response_body=max_response_body,
        )
        self._live: set[_Copy] = set()
        #: How many on_done callbacks raised (only the first is logged, with its traceback).
        self.callback_errors = 0

    # -- public API -------------------------------------------------------------------------

    def submit(
        self,
        pool_key: str,
        endpoint: MirrorEndpoint,
        request: MirrorRequest,
        on_done: Callable[[MirrorResult], None],
        capture: int = 0,
    ) -> bool:
        """Never blocks, never raises for network reasons. False (on_done NOT called) when
        pool_key already has max_inflight copies in flight; True otherwise, and then on_done is
        called exactly once (possibly before submit returns: mitmproxy 12 on py3.12+ installs an
        eager task factory, so create_task may run the coroutine inline up to its first await).
        capture > 0 keeps the response's headers and up to that many body bytes in the result."""
        caps = self._caps
        if caps is not None and not caps.take(pool_key):
            return False
        loop = asyncio.get_running_loop()
        copy = _Copy(pool_key, on_done, time.monotonic(), capture)
        if self._timeline:
            now = time.time()
            copy.times = [now, now, 0.0, 0.0, 0.0]
        # Registered before the task exists: an eagerly-run copy may finish inside create_task.
        self._live.add(copy)
        try:
            copy.task = loop.create_task(self._run(copy, endpoint, request))
        except BaseException:
            # Only a closed or broken loop gets here; undo so the caller sees just the raise.
            self._live.discard(copy)
            copy.finished = True
            if caps is not None:
                caps.release(pool_key)
            raise
        return True

    def set_own_addresses(self, addresses: list[tuple[str, int]]) -> None:
        """The proxy's own listen addresses: a new connection whose peer is one of them is
        aborted before a byte is written, and its copy ends as `SELF_LOOP` (a name in the
        config may resolve there at run time, after the config-time check)."""
        self._client.set_own_addresses(addresses)

    def inflight(self, pool_key: str | None = None) -> int:
        if self._caps is not None:
            return self._caps.count(pool_key)
        return sum(1 for c in self._live if pool_key is None or c.pool_key == pool_key)

    async def drain(self, timeout: float) -> int:
        """Wait up to timeout for in-flight copies; cancel the rest (on_done gets "cancelled").
        Returns how many were cancelled. Idle connections stay pooled (close() drops them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while self._live:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            tasks = [c.task for c in self._live if c.task is not None]
            if not tasks:
                break
            await asyncio.wait(tasks, timeout=remaining)
        leftovers = self._cancel_all("cancelled by drain()")
        if leftovers:
            # Let cancelled copies unwind (they abort their sockets) before returning.
            await asyncio.wait(leftovers, timeout=1.0)
        return len(leftovers)

    def close(self) -> None:
        """Cancel every copy in flight (on_done gets "cancelled") and drop idle connections.
        Synchronous so mitmproxy's done() can call it; the writer stays usable afterwards."""
        self._cancel_all("cancelled by close()")
        self._client.close()

    # -- internals --------------------------------------------------------------------------

    def _cancel_all(self, detail: str) -> list[asyncio.Task[None]]:
        copies = list(self._live)
        self._live.clear()
        tasks: list[asyncio.Task[None]] = []
        for copy in copies:
            received = copy.conn.wire if copy.conn is not None else 0
            self._finish(copy, None, "cancelled", detail, received)
            if copy.task is not None and not copy.task.done():
                # Cancel first: it cancels the awaited response future before the abort below
                # could complete it.
                copy.task.cancel()
                tasks.append(copy.task)
            if copy.conn is not None:
                copy.conn.abort()
                copy.conn = None
        return tasks

    def _finish(
        self,
        copy: _Copy,
        status: int | None,
        failure: str | None,
        detail: str,
        received: int,
        captured: Captured | None = None,
        grpc_status: int | None = None,
        trailers: tuple[tuple[bytes, bytes], ...] | None = None,
    ) -> None:
        if copy.finished:
            return
        copy.finished = True
        if self._caps is not None:
            self._caps.release(copy.pool_key)
        latency = time.monotonic() - copy.started
        times = copy.times
        stamps = None
        if times is not None:
            times[4] = time.time()
            stamps = (times[0], times[1], times[2], times[3], times[4])
        headers, body, truncated = captured if captured is not None else (None, None, False)
        result = MirrorResult(
            status,
            failure,
            detail,
            latency,
            copy.sent,
            received,
            headers,
            body,
            truncated,
            copy.resent,
            stamps,
            grpc_status,
            trailers,
        )
        self.callback_errors += call_on_done(copy.on_done, result, self.callback_errors)

    async def _run(self, copy: _Copy, endpoint: MirrorEndpoint, request: MirrorRequest) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                ex, detail = await self._client.exchange(copy, endpoint, request)
            copy.conn = None
            captured = ex.take_capture() if copy.capture else None
            trailers = ex.trailers if copy.capture and isinstance(ex, Http2Exchange) else None
            self._client.release(ex)
        except asyncio.CancelledError:
            received = self._abort_conn(copy)
            self._finish(copy, None, "cancelled", "cancelled", received)
            raise
        except ConnectTimeout as exc:
            self._finish(copy, None, "timeout", str(exc), 0)
        except SelfLoop as exc:
            self._finish(copy, None, SELF_LOOP, str(exc), 0)
        except TimeoutError as exc:
            received = self._abort_conn(copy)
            if str(exc):  # the OS's ETIMEDOUT, not our deadline
                text = f"{short_error(exc)} ({copy.phase})"
            else:
                text = f"no answer within {self._timeout:g}s ({copy.phase})"
            self._finish(copy, None, "timeout", text, received)
        except Exception as exc:
            received = self._abort_conn(copy)
            failure, text = classify(exc)
            if (
                failure in ("reset", "protocol", "other")
                and copy.phase not in ("starting", "connect")
                and not isinstance(exc, ClosedEarly | StreamReset)
            ):
                text = f"{text} ({copy.phase})"
            self._finish(copy, None, failure, text, received)
        else:
            self._finish(copy, ex.status, None, detail, ex.wire, captured, ex.grpc_status, trailers)
        finally:
            self._live.discard(copy)

    def _abort_conn(self, copy: _Copy) -> int:
        """Give up the exchange a failed copy was using; returns its response bytes."""
        conn = copy.conn
        if conn is None:
            return 0
        copy.conn = None
        if conn.error is None:
            phase = conn.phase()
            if phase != "idle":
                copy.phase = phase
        conn.abort()
        return conn.wire
