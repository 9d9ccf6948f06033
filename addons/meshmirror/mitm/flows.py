"""Mirror flows: each mirrored copy as a synthetic mitmproxy flow, for mitmweb, the console, `-w`
and `mirror_record`.

A mirror flow holds the request exactly as sent to the mirror (shadow Host, X-Forwarded-For,
marker header) and the shadow's response as captured by the writer (or the error). Its URL is
where the copy went, the mirror endpoint's address (`http://127.0.0.1:9090/users/3`; the Host
header beside it says `app.example.com-shadow`), not the shadow Host joined with the endpoint's
port, an address that exists nowhere. It is marked `:left_right_arrow:` (drawn as a text
character, so any font shows it; an emoji needs an emoji font) and has `is_replay="request"`
(`~replayq` shows or `!~replayq` hides mirror flows; mitmweb draws its replay icon). The
original is marked `:black_small_square:` (unless already marked). Both comments name the
original's flow id, and the original's first line is the filter that lists it with its copies
(`~comment 5e92d5a6 lists this flow and its copies`, first so that a narrow comment column
shows it); both also carry the same X-Request-Id.

A copy is listed right after its original: it sorts by the original's creation time (mitmproxy's
view orders flows by `timestamp_created`), and in the view it is shown as soon as it is handed to
the sender, then updated with its result, so mitmweb, which appends flows as they arrive, also
lists it there, however long the mirror takes.

How they are published (`mirror_flows`):
- `view`:  added to the view directly (mitmweb / console); about 0.2 ms per flow, no addon hooks;
- `hooks`: run through the whole addon chain like a replayed flow once the copy is done, so `-w`
           saves them and mitmdump prints them (about 1 ms per flow);
- `off`:   not built at all (unless `mirror_record` wants them).
The view keeps at most `mirror_flows_max` mirror flows: older ones are removed from it. Flows
read back from a file (`mirror_record`, `-w`) are plain mitmproxy flows again: mitmproxy derives
their URL from the Host header, as for every flow; the endpoint is the server address.
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

# The same metadata key as request_path.COPY_MARK: the addon never mirrors a flow that carries it.
MIRROR_FLOW_MARK = "meshmirror.copy"
ORIGINAL_KEY = "meshmirror.original"
# Markers from mitmproxy's table whose characters (U+2194, U+25AA) are in practically every text
# font (Windows' WGL4 set: DejaVu, Liberation, Arial): its emoji (a ghost, twisted arrows) are an
# empty box where no emoji font is installed. Not a hollow shape: that looks like the box.
COPY_MARK = ":left_right_arrow:"
ORIGINAL_MARK = ":black_small_square:"
FLOW_MODES = ("auto", "off", "view", "hooks")
_MAX_HOOK_TASKS = 256  # mirror flows being pushed through the hooks at once; more are shown only
# A copy sorts this long after its original: after it, before any flow created later.
_AFTER_ORIGINAL = 1e-6


def pairing_key(original_id: str) -> str:
    """The part of an original's flow id both comments show: `~comment KEY` lists the pair."""
    return original_id[:8]


def pairing_line(original_id: str) -> str:
    """The first line of an original's comment: the filter that lists it with its copies."""
    return f"~comment {pairing_key(original_id)} lists this flow and its copies"


class SentRequest(http.Request):
    """A copy's request: its URL is the address it was sent to (the mirror endpoint), whatever
    its Host header says. mitmproxy shows a request's URL with the Host header's host and the
    connection's port, which for a copy is an address that exists nowhere."""

    @property
    def pretty_host(self) -> str:
        return self.host

    @property
    def pretty_url(self) -> str:
        return self.url


def build_mirror_flow(
    *,
    original: http.HTTPFlow,
    request: MirrorRequest,
    endpoint: MirrorEndpoint,
    started: float,
    comment: str,
) -> http.HTTPFlow:
    """The copy as a flow, before its result: the request as sent, listed after `original`."""
    client = connection.Client(peername=("mirror", 0), sockname=("", 0), timestamp_start=started)
    server = connection.Server(address=(endpoint.host, endpoint.port))
    f = http.HTTPFlow(client, server)
    f.timestamp_created = original.timestamp_created + _AFTER_ORIGINAL
    f.request = SentRequest(
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
    f.marked = COPY_MARK
    f.is_replay = "request"
    f.comment = comment
    f.live = False
    f.metadata[MIRROR_FLOW_MARK] = True
    f.metadata[ORIGINAL_KEY] = original.id
    return f


def settle_mirror_flow(
    f: http.HTTPFlow, result: MirrorResult | None, not_sent: str, comment: str
) -> None:
    """The copy's result into its flow: the shadow's response, or the error (`not_sent`, e.g.
    `dropped: overflow`, when the copy never left)."""
    started = f.request.timestamp_start
    done = started + (result.latency if result is not None else 0.0)
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
    else:
        if result is not None:
            text = f"{result.failure}: {result.detail}" if result.detail else str(result.failure)
        else:
            text = not_sent
        f.error = flow.Error(text)
        f.error.timestamp = done
    f.comment = comment


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

    @property
    def shows_early(self) -> bool:
        """Copies go into the view when they are handed to the sender (`show`), not when done."""
        return self.mode == "view" and self.max_flows > 0 and flow_view() is not None

    def show(self, f: http.HTTPFlow) -> None:
        """Add a copy still in flight to the view; `publish` updates it once it is done."""
        view = flow_view()
        if view is not None:
            view.add([f])  # type: ignore[attr-defined]
            self._kept.append(f)
            self._trim()

    def publish(self, f: http.HTTPFlow, shown: bool = False) -> None:
        """A done copy: recorded, and in the view (updated when `show` put it there)."""
        if self._writer is not None and self._record is not None:
            self._writer.add(f)
            self._record.flush()
            self.recorded += 1
        if self.mode == "view":
            if shown:
                if f in self._kept:
                    self.update(f)
                return
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
