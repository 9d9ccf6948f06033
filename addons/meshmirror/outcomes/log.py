"""`mirror_log=PATH`: one JSON object per line for every sampled copy (JSON Lines).

A line is written once the copy's outcome and the primary's response are both known (or the
primary never answered), with one write() and no buffering, so `tail -f` and `meshmirror report`
can read the file while the proxy writes it. Lines are ASCII: other characters are JSON escapes.
Records carry names, statuses, sizes and timings, never header values (x-request-id excepted: it
is the correlation id, not a secret).

Fields (null when unknown):
    time            ISO 8601 UTC time the record was written
    request_id      the x-request-id shared by primary and copy
    flow            the original mitmproxy flow id
    method, path    the request's method and path, without the query (it may carry tokens)
    rule            route label, e.g. default/httpbin[0]
    cluster         mirror cluster (Envoy name), e.g. outbound|80||httpbin.mirror.cluster-b
    endpoint        address:port the copy went to
    outcome         sent | failed | dropped | skipped
    reason          failure class, drop or skip reason
    detail          short failure text
    primary_status, primary_latency_ms
    shadow_status,  shadow_latency_ms
    grpc            true when the request was a gRPC call (content-type application/grpc)
    grpc_status     the gRPC status code of the copy's answer (trailers, or a trailers-only
                    answer); null when it gave none
    bytes_sent, bytes_received      the copy's request and response bytes
    comparison      null when the rule does not compare or the copy has no answer, else
                    {"match": bool, "fields": [...], ...}, or {"not_compared": REASON,
                    "note": "..."} when the comparison was not made (too_costly, ...)
    generation      config generation the decision was made with
    replay          true for flows loaded from a recording (-r)
    matched         requests this rule matched for this mirror so far, sampled or not (so a
                    report shows the share sampled)
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from meshmirror.files import open_for_append

log = logging.getLogger("meshmirror")

FIELDS = (
    "time",
    "request_id",
    "flow",
    "method",
    "path",
    "rule",
    "cluster",
    "endpoint",
    "outcome",
    "reason",
    "detail",
    "primary_status",
    "primary_latency_ms",
    "shadow_status",
    "shadow_latency_ms",
    "grpc",
    "grpc_status",
    "bytes_sent",
    "bytes_received",
    "comparison",
    "generation",
    "replay",
    "matched",
)


def _now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class OutcomeLog:
    """Appends records to PATH, one line each, each written at once with one write().

    The path must be a regular file, or a FIFO (with a reader) or a character device such as
    /dev/stdout; those are written without ever blocking (`files.open_for_append`), and
    anything else is refused (`FileRefused`). A record that cannot be written (a full disk,
    EFBIG, a FIFO that is full) is lost, not retried: `write` says so, one warning names the
    file and the error until a write succeeds again, and a record cut short by the error is
    ended by a newline before the next one, so no complete record is ever joined to it."""

    def __init__(self, path: str) -> None:
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self._fd: int | None = open_for_append(path)[0]
        self.written = 0
        self.lost = 0
        self._failing = ""  # the error, while writes fail
        self._cut = False  # the last line written is incomplete

    def write(self, record: dict[str, Any]) -> bool:
        """Write one record; False when it was lost (or the log is closed)."""
        if self._fd is None:
            return False
        line = {k: record.get(k) for k in FIELDS}
        if line["time"] is None:
            line["time"] = _now_iso()
        # ASCII only: a value from a client or a mirror cannot put a raw control, bidi or
        # separator character in a file that `tail -f` prints to a terminal.
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode("ascii")
        try:
            self._write_all(b"\n" + data if self._cut else data)
        except OSError as e:
            self.lost += 1
            if not self._failing:
                self._failing = e.strerror or str(e)
                log.warning(
                    f"meshmirror: mirror_log: {self.path}: cannot write ({self._failing}); "
                    "records are counted as lost until writing works again"
                )
            return False
        if self._failing:
            log.info(
                f"meshmirror: mirror_log: {self.path}: writing again after {self._failing} "
                f"({self.lost} record(s) lost so far)"
            )
            self._failing = ""
        self.written += 1
        return True

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        done = 0
        while done < len(data):
            try:
                done += os.write(self._fd, view[done:])
            except OSError:
                if done:
                    self._cut = True
                raise
        self._cut = False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def closed(self) -> bool:
        return self._fd is None


def read_records(path: str) -> list[dict[str, Any]]:
    """Every complete JSON line of PATH; a partial or garbled line (a file being written) is
    skipped rather than fatal."""
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
    return out
