"""The per-request timeline (`mirror_timeline=FILE`): where each request and each copy spent
its time, as JSON lines, for people who want to see why one request was slow.

Off by default, and then nothing here runs. On, it records (all times are `time.time()`
seconds, the clock mitmproxy stamps its flows with, so other processes can join them):

- per request, when it is done (`"kind": "request"`): mitmproxy's own stamps (request head
  read, request end, response start and end), and for each hook event (`requestheaders`,
  `request`, `responseheaders`, `response`, `error`) when mitmproxy began and ended it over
  the whole addon chain (two markers, first and last in the chain), when the meshmirror addon
  was in it and its own CPU-bound time there in microseconds;
- per copy, when its result is in (`"kind": "copy"`): submit (the fan-out handed it over),
  hand-off (written to the sender process's pipe), received (read by the sender), written to
  the mirror's socket, first response byte, done; plus outcome and cluster;
- per garbage collection in the proxy's process (`"kind": "gc"`): when it started, how long it
  paused everything, its generation: a request slow for no reason of its own may have waited
  for one.

Records are joined by `id`, the request's X-Request-Id (the client's, or the one the addon
added). Lines are buffered and written at most every `FLUSH_INTERVAL` seconds and at exit.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from typing import IO, Any, TypeVar

from mitmproxy import ctx, http

from meshmirror.mirror.types import MirrorResult

# flow.metadata key of a request's record while it is in flight.
RECORD_KEY = "meshmirror.timeline"
# The flow hook events the markers and the addon's wrappers time.
EVENTS = ("requestheaders", "request", "responseheaders", "response", "error")
FLUSH_INTERVAL = 1.0
# The names of MirrorResult.times, in order.
_COPY_STAMPS = ("handoff", "received", "written", "first_byte", "done")

F = TypeVar("F", bound=Callable[..., Any])


def _record(flow: http.HTTPFlow) -> dict[str, Any]:
    rec = flow.metadata.get(RECORD_KEY)
    if rec is None:
        rec = flow.metadata[RECORD_KEY] = {"events": {}, "addon": {}}
    return rec


class _ChainStart:
    """First in mitmproxy's addon chain: the time each event began."""

    name = "meshmirror-timeline-start"

    def __init__(self) -> None:
        for event in EVENTS:
            setattr(self, event, self._marker(event))

    @staticmethod
    def _marker(event: str) -> Callable[[http.HTTPFlow], None]:
        def mark(flow: http.HTTPFlow) -> None:
            _record(flow)["events"][event] = [time.time(), 0.0]

        return mark


class _ChainEnd:
    """Last in the chain: the time each event ended; a finished request's line is written."""

    name = "meshmirror-timeline-end"

    def __init__(self, timeline: Timeline) -> None:
        for event in EVENTS:
            setattr(self, event, self._marker(timeline, event))

    @staticmethod
    def _marker(timeline: Timeline, event: str) -> Callable[[http.HTTPFlow], None]:
        done = event in ("response", "error")

        def mark(flow: http.HTTPFlow) -> None:
            rec = _record(flow)
            span = rec["events"].get(event)
            if span is not None:
                span[1] = time.time()
            if done:
                timeline.request_done(flow, rec)

        return mark


class Timeline:
    """The recorder. `install(chain)` puts its two markers into mitmproxy's addon chain;
    `timed(event, hook)` wraps one of the addon's hooks; `copy_done` writes a copy's line."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
        self._lines: list[str] = []
        self._clock = clock
        self._last_flush = clock()
        self._start = _ChainStart()
        self._end = _ChainEnd(self)
        self._chain: list[Any] | None = None
        self._gc_start = 0.0
        self._gc_t0 = 0
        self.requests = 0
        self.copies = 0

    def install(self, chain: list[Any]) -> None:
        """Put the markers first and last in `chain` (mitmproxy's `AddonManager.chain`) and
        start watching the garbage collector."""
        self.uninstall()
        chain.insert(0, self._start)
        chain.append(self._end)
        self._chain = chain
        gc.callbacks.append(self._gc)

    def uninstall(self) -> None:
        chain, self._chain = self._chain, None
        if chain is not None:
            chain[:] = [a for a in chain if a is not self._start and a is not self._end]
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.time()
            self._gc_t0 = time.perf_counter_ns()
            return
        pause_ms = (time.perf_counter_ns() - self._gc_t0) / 1e6
        # Only buffered here: the collector's callbacks must not do I/O.
        self._lines.append(
            json.dumps(
                {
                    "kind": "gc",
                    "start": self._gc_start,
                    "ms": round(pause_ms, 3),
                    "generation": info.get("generation"),
                    "collected": info.get("collected"),
                },
                separators=(",", ":"),
            )
        )

    def timed(self, event: str, hook: F) -> F:
        """`hook` (a flow hook of the addon) with its entry time and own time recorded."""
        perf = time.perf_counter_ns

        def timed_hook(flow: http.HTTPFlow) -> Any:
            entered = time.time()
            t0 = perf()
            try:
                return hook(flow)
            finally:
                _record(flow)["addon"][event] = [entered, (perf() - t0) / 1e3]

        return timed_hook  # type: ignore[return-value]

    def routed(self, flow: http.HTTPFlow, label: str) -> None:
        _record(flow)["route"] = label

    def request_done(self, flow: http.HTTPFlow, rec: dict[str, Any]) -> None:
        if rec.get("written"):
            return
        rec["written"] = True
        req, resp = flow.request, flow.response
        line: dict[str, Any] = {
            "kind": "request",
            "id": request_id(flow),
            "method": req.method,
            "status": resp.status_code if resp is not None else None,
            "error": flow.error.msg if flow.error is not None else None,
            "request_start": req.timestamp_start,
            "request_end": req.timestamp_end,
            "response_start": resp.timestamp_start if resp is not None else None,
            "response_end": resp.timestamp_end if resp is not None else None,
            "events": rec["events"],
            "addon": rec["addon"],
        }
        if "route" in rec:
            line["route"] = rec["route"]
        self.requests += 1
        self._write(line)

    def copy_done(
        self, request: str, cluster: str, submitted: float, outcome: str, result: MirrorResult
    ) -> None:
        times = result.times or ()
        line: dict[str, Any] = {
            "kind": "copy",
            "id": request,
            "cluster": cluster,
            "outcome": outcome,
            "status": result.status,
            "submit": submitted,
        }
        for name, value in zip(_COPY_STAMPS, times, strict=False):
            line[name] = value or None
        self.copies += 1
        self._write(line)

    def copy_not_sent(self, request: str, cluster: str, outcome: str, reason: str) -> None:
        t = time.time()
        self.copies += 1
        self._write(
            {"kind": "copy", "id": request, "cluster": cluster, "outcome": outcome,
             "reason": reason, "submit": t, "done": t}
        )  # fmt: skip

    def _write(self, line: dict[str, Any]) -> None:
        self._lines.append(json.dumps(line, separators=(",", ":")))
        now = self._clock()
        if now - self._last_flush >= FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        self._last_flush = self._clock()
        if self._lines:
            lines, self._lines = self._lines, []
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()

    def close(self) -> None:
        self.uninstall()
        self.flush()
        self._file.close()


def reopen(current: Timeline | None, path: str) -> Timeline | None:
    """The timeline for option value `path` ("" = off) in mitmproxy's running chain: `current`
    when it already writes there, else a new one (`current` closed). OSError: cannot open it."""
    if current is not None and current.path == path:
        return current
    if current is not None:
        current.close()
    if not path:
        return None
    timeline = Timeline(path)
    timeline.install(ctx.master.addons.chain)
    return timeline


def request_id(flow: http.HTTPFlow) -> str | None:
    """The first X-Request-Id value, as the addon and the mirror copies carry it."""
    for name, value in flow.request.headers.fields:
        if name.lower() == b"x-request-id":
            return value.decode("utf-8", "surrogateescape").split(",", 1)[0]
    return None


class TimelineAddon:
    """The timeline alone, for a mitmproxy without meshmirror's addon (plain mitmdump beside
    meshmirror, as the benchmark's baseline runs it): option `mirror_timeline` as the addon's,
    only the markers and mitmproxy's stamps (no addon times, no copies)."""

    def __init__(self) -> None:
        self.timeline: Timeline | None = None

    def load(self, loader: Any) -> None:
        loader.add_option(
            "mirror_timeline", str, "", "Append a per-request timeline to this file (JSON lines)."
        )

    def configure(self, updated: set[str]) -> None:
        if "mirror_timeline" in updated:
            self.timeline = reopen(self.timeline, ctx.options.mirror_timeline.strip())

    def done(self) -> None:
        if self.timeline is not None:
            self.timeline.close()
            self.timeline = None
