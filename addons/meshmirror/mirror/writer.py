"""The mirror writer: sends fire-and-forget HTTP/1.1 copies to shadow services.

Pure asyncio (no mitmproxy imports) so it runs on mitmproxy's event loop and is testable alone.
Each copy is one task bounded by a per-pool-key in-flight cap and an overall timeout; connections
are pooled per endpoint (pool.py) and reused LIFO. Responses are parsed incrementally inside the
protocol (http1.py) and their bodies discarded as they arrive, so a copy never buffers more than a
response head. The request head is serialised by request_head.py; exceptions are mapped to
failure classes once, here, by failures.classify.

Every accepted copy ends in exactly one ``on_done(MirrorResult)``; network problems never raise.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

from meshmirror.mirror.failures import (
    SELF_LOOP,
    ClosedEarly,
    ConnectTimeout,
    SelfLoop,
    classify,
    short_error,
)
from meshmirror.mirror.http1 import Captured, Connection, take_capture
from meshmirror.mirror.pool import IdlePool
from meshmirror.mirror.request_head import encode_head
from meshmirror.mirror.sockets import tune_mirror_connection
from meshmirror.mirror.tls import ClientContexts
from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest, MirrorResult

log = logging.getLogger("meshmirror.writer")

# RFC 9110 9.2.2: a request the server may receive twice with the effect of once. Only these are
# sent again after a stale keep-alive; a POST that met one fails instead of being delivered twice.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


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


class _Copy:
    """Book-keeping for one accepted submit."""

    __slots__ = (
        "pool_key",
        "on_done",
        "started",
        "finished",
        "task",
        "conn",
        "phase",
        "sent",
        "capture",
        "resent",
        "times",
    )

    def __init__(
        self,
        pool_key: str,
        on_done: Callable[[MirrorResult], None],
        started: float,
        capture: int = 0,
    ) -> None:
        self.pool_key = pool_key
        self.on_done = on_done
        self.started = started
        self.finished = False
        self.task: asyncio.Task[None] | None = None
        self.conn: Connection | None = None
        self.phase = "starting"
        self.sent = 0
        self.capture = capture
        self.resent = False
        # With timeline=True: [handoff, received, written, first byte, done] (time.time()).
        self.times: list[float] | None = None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# create_connection(all_errors=...) appeared in 3.12; without it, several failed addresses
# collapse into a bare OSError("Multiple exceptions: ...") that cannot be classified.
_CONNECT_KWARGS: dict[str, Any] = {"all_errors": True} if sys.version_info >= (3, 12) else {}


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
        self._connect_timeout = connect_timeout
        self._max_idle = max(0, max_idle_per_endpoint)
        self._max_body = max(0, max_response_body)
        self._live: set[_Copy] = set()
        self._pools: dict[MirrorEndpoint, IdlePool] = {}
        self._ssl_contexts = ClientContexts()
        self._own: list[tuple[str, int]] = []
        self._own_ports: frozenset[int] = frozenset()
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
        self._own = [(h.strip("[]").lower(), p) for h, p in addresses if p]
        self._own_ports = frozenset(p for _, p in self._own)

    def _reaches_own(self, conn: Connection) -> str | None:
        transport = conn.transport
        if transport is None:
            return None
        peer = transport.get_extra_info("peername")
        if not peer or peer[1] not in self._own_ports:
            return None
        local = transport.get_extra_info("sockname")
        peer_ip = str(peer[0]).lower()
        for host, port in self._own:
            if port != peer[1]:
                continue
            if host in ("", "0.0.0.0", "::", "*"):
                # A wildcard listener takes any local address; a connection to a local address
                # leaves from that same address (and loopback is always local).
                if (local and str(local[0]).lower() == peer_ip) or _loopback(peer_ip):
                    return f"{peer[0]}:{peer[1]}"
            elif host == peer_ip or (_loopback(host) and _loopback(peer_ip)):
                return f"{peer[0]}:{peer[1]}"
        return None

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
        pools, self._pools = self._pools, {}
        self._ssl_contexts.clear()
        for pool in pools.values():
            pool.close()

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
        )
        self.callback_errors += call_on_done(copy.on_done, result, self.callback_errors)

    async def _run(self, copy: _Copy, endpoint: MirrorEndpoint, request: MirrorRequest) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                conn, detail = await self._exchange(copy, endpoint, request)
            copy.conn = None
            captured = take_capture(conn) if copy.capture else None
            conn.pool.release(conn)
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
                and copy.phase != "starting"
                and not isinstance(exc, ClosedEarly)
            ):
                text = f"{text} ({copy.phase})"
            self._finish(copy, None, failure, text, received)
        else:
            self._finish(copy, conn.status, None, detail, conn.wire, captured)
        finally:
            self._live.discard(copy)

    def _abort_conn(self, copy: _Copy) -> int:
        """Abort the connection a failed copy was using; returns its response bytes."""
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

    async def _exchange(
        self, copy: _Copy, endpoint: MirrorEndpoint, request: MirrorRequest
    ) -> tuple[Connection, str]:
        head = encode_head(request, endpoint)
        body = request.body
        pool = self._pools.get(endpoint)
        if pool is None:
            pool = self._new_pool(endpoint)
        head_request = request.method == "HEAD"
        may_resend = request.method in IDEMPOTENT_METHODS
        conn = pool.take()
        while True:
            if conn is None:
                copy.phase = "connect"
                conn = await self._connect(pool)
                if self._own_ports:
                    own = self._reaches_own(conn)
                    if own is not None:
                        conn.abort()
                        raise SelfLoop(f"connected to this proxy's own listen address {own}")
            copy.conn = conn
            conn.capture = copy.capture
            copy.phase = "waiting for response head"
            copy.sent = len(head) + len(body)
            answered = conn.send(head, body, head_request)
            times = copy.times
            if times is not None:
                times[2] = time.time()  # send() wrote the head (and a small body) already
            await answered
            if times is not None:
                times[3] = conn.first_byte
            error = conn.error
            if error is None:
                break
            if conn.reused and conn.wire == 0 and may_resend and not copy.resent:
                # Stale keep-alive: the server closed an idle connection as we reused it. No
                # response byte arrived and the method is idempotent, so the server may see the
                # copy twice with the effect of once: one more try on a fresh connection.
                conn.abort()
                copy.conn = None
                conn = None
                copy.resent = True
                continue
            copy.phase = conn.error_phase
            raise error
        if conn.truncated:
            return conn, f"response body truncated at {self._max_body} bytes; connection closed"
        if copy.resent:
            return conn, "resent on a fresh connection after a stale keep-alive"
        return conn, ""

    async def _connect(self, pool: IdlePool) -> Connection:
        loop = asyncio.get_running_loop()
        endpoint = pool.endpoint
        limit = self._max_body

        def factory() -> Connection:
            return Connection(pool, limit)

        coro = loop.create_connection(
            factory,
            endpoint.host,
            endpoint.port,
            ssl=pool.ssl_context,
            server_hostname=pool.server_hostname,
            **_CONNECT_KWARGS,
        )
        connect_timeout = self._connect_timeout
        if connect_timeout is None or connect_timeout >= self._timeout:
            transport, conn = await coro
        else:
            try:
                async with asyncio.timeout(connect_timeout) as deadline:
                    transport, conn = await coro
            except TimeoutError:
                if deadline.expired():
                    raise ConnectTimeout(f"connect not done within {connect_timeout:g}s") from None
                raise
        tune_mirror_connection(transport)
        return conn

    def _new_pool(self, endpoint: MirrorEndpoint) -> IdlePool:
        context = self._ssl_context(endpoint) if endpoint.tls else None
        pool = self._pools[endpoint] = IdlePool(endpoint, self._max_idle, context)
        return pool

    def _ssl_context(self, endpoint: MirrorEndpoint) -> ssl.SSLContext:
        # close() forgets the contexts and a remembered broken ca_file with them.
        return self._ssl_contexts.get(endpoint.ca_file, endpoint.insecure_skip_verify)
