"""Mirror flows: each mirrored copy as a synthetic mitmproxy flow, for mitmweb, the console, `-w`
and `mirror_record`.

A mirror flow holds the request exactly as sent to the mirror (shadow Host, X-Forwarded-For,
marker header) and the shadow's response as captured by the writer (or the error). It is marked
`:ghost:` (mitmweb shows a ghost), has `is_replay="request"` (so `~replayq` shows or `!~replayq`
hides mirror flows) and a comment naming the original flow and the outcome. The original is marked
`:twisted_rightwards_arrows:` (unless already marked) and its comment names each mirror flow's id;
both carry the same X-Request-Id, so `~hq "x-request-id: ID"` lists an original with its copies.

How they are published (`mirror_flows`):
- `view`:  added to the view directly (mitmweb / console); about 0.2 ms per flow, no addon hooks;
- `hooks`: run through the whole addon chain like a replayed flow, so `-w` saves them and
           mitmdump prints them (about 1 ms per flow);
- `off`:   not built at all (unless `mirror_record` wants them).
The view keeps at most `mirror_flows_max` mirror flows: older ones are removed from it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import BinaryIO

from mitmproxy import connection, ctx, eventsequence, flow, http, io
from mitmproxy.hooks import UpdateHook

from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest, MirrorResult

log = logging.getLogger("meshmirror.flows")

# The same metadata key as addon.COPY_MARK: the addon never mirrors a flow that carries it.
MIRROR_FLOW_MARK = "meshmirror.copy"
ORIGINAL_KEY = "meshmirror.original"
GHOST = ":ghost:"
# The mark of an original flow whose copies are shown (mitmweb draws the emoji in the list).
ORIGINAL_MARK = ":twisted_rightwards_arrows:"
FLOW_MODES = ("auto", "off", "view", "hooks")
_MAX_HOOK_TASKS = 256  # mirror flows being pushed through the hooks at once; more are shown only


def build_mirror_flow(
    *,
    original_id: str,
    request: MirrorRequest,
    endpoint: MirrorEndpoint,
    result: MirrorResult | None,
    started: float,
    comment: str,
) -> http.HTTPFlow:
    """The copy as a flow. `result` None: the copy was never sent (dropped or skipped)."""
    client = connection.Client(peername=("mirror", 0), sockname=("", 0), timestamp_start=started)
    server = connection.Server(address=(endpoint.host, endpoint.port))
    f = http.HTTPFlow(client, server)
    done = started + (result.latency if result is not None else 0.0)
    f.request = http.Request(
        host=endpoint.host,
        port=endpoint.port,
        method=request.method.encode(),
        scheme=b"https" if endpoint.tls else b"http",
        authority=b"",
        path=request.target.encode("utf-8", "surrogateescape"),
        http_version=b"HTTP/1.1",
        headers=http.Headers(list(request.headers)),
        content=None,
        trailers=None,
        timestamp_start=started,
        timestamp_end=started,
    )
    f.request.raw_content = request.body
    if result is not None and result.status is not None:
        resp = http.Response(
            http_version=b"HTTP/1.1",
            status_code=result.status,
            reason=b"",
            headers=http.Headers(list(result.headers or ())),
            content=None,
            trailers=None,
            timestamp_start=done,
            timestamp_end=done,
        )
        resp.raw_content = result.body or b""
        f.response = resp
    elif result is not None:
        f.error = flow.Error(
            f"{result.failure}: {result.detail}" if result.detail else str(result.failure)
        )
        f.error.timestamp = done
    f.marked = GHOST
    f.is_replay = "request"
    f.comment = comment
    f.live = False
    f.metadata[MIRROR_FLOW_MARK] = True
    f.metadata[ORIGINAL_KEY] = original_id
    return f


def flow_view() -> object | None:
    """mitmproxy's View addon: present in mitmweb and the console, absent in mitmdump."""
    view: object | None = ctx.master.addons.get("view")  # type: ignore[no-untyped-call]
    return view


class MirrorFlows:
    """Publishes mirror flows (view or hooks), records them to a flow file, keeps memory bounded."""

    def __init__(self) -> None:
        self.mode = "off"
        self.max_flows = 1000
        self._kept: collections.deque[http.HTTPFlow] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._record: BinaryIO | None = None
        self._writer: io.FlowWriter | None = None
        self.recorded = 0

    @property
    def wanted(self) -> bool:
        """Whether mirror flows must be built at all."""
        return self.mode != "off" or self._writer is not None

    def configure(self, mode: str, max_flows: int, record_path: str) -> None:
        if mode == "auto":
            mode = "view" if flow_view() is not None else "off"
        self.mode = mode
        self.max_flows = max(0, max_flows)
        self.set_record(record_path)
        self._trim()

    def set_record(self, path: str) -> None:
        if self._record is not None and getattr(self._record, "name", None) == path:
            return
        self.close_record()
        if path:
            self._record = open(path, "wb")  # noqa: SIM115 - closed in close_record()
            self._writer = io.FlowWriter(self._record)  # type: ignore[no-untyped-call]

    def close_record(self) -> None:
        if self._record is not None:
            self._record.close()
        self._record = None
        self._writer = None

    def publish(self, f: http.HTTPFlow) -> None:
        if self._writer is not None and self._record is not None:
            self._writer.add(f)
            self._record.flush()
            self.recorded += 1
        if self.mode == "view":
            view = flow_view()
            if view is not None and self.max_flows > 0:
                view.add([f])  # type: ignore[attr-defined]
                self._kept.append(f)
                self._trim()
        elif self.mode == "hooks":
            if len(self._tasks) >= _MAX_HOOK_TASKS:
                return
            task = asyncio.get_running_loop().create_task(self._run_hooks(f))
            if not task.done():
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run_hooks(self, f: http.HTTPFlow) -> None:
        try:
            for event in eventsequence.iterate(f):
                await ctx.master.addons.handle_lifecycle(event)
        except Exception:  # a broken third-party addon must not break mirroring
            log.exception("meshmirror: running a mirror flow through the addons failed")
        if flow_view() is not None:
            self._kept.append(f)
            self._trim()

    def update(self, f: http.HTTPFlow) -> None:
        """Tell the view (and mitmweb's browsers) that `f` changed, e.g. its comment."""
        if flow_view() is not None:
            ctx.master.addons.trigger(UpdateHook([f]))

    def _trim(self) -> None:
        view = flow_view()
        while len(self._kept) > self.max_flows:
            old = self._kept.popleft()
            if view is not None:
                # One at a time: View.remove logs an alert for every batch of more than one.
                view.remove([old])  # type: ignore[attr-defined]

    @property
    def busy(self) -> bool:
        """Flows are still being added to the view or the record file."""
        return bool(self._tasks)

    async def drain(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self.close_record()
