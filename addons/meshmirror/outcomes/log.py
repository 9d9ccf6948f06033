"""`mirror_log=PATH`: one JSON object per line for every sampled copy (JSON Lines).

A line is written once the copy's outcome and the primary's response are both known (or the
primary never answered), and flushed at once, so `tail -f` and `meshmirror report` can read the
file while the proxy writes it. Records carry names, statuses, sizes and timings, never header
values (x-request-id excepted: it is the correlation id, not a secret).

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
    comparison      null when not compared, else {"match": bool, "fields": [...], ...}
    generation      config generation the decision was made with
    replay          true for flows loaded from a recording (-r)
    matched         requests this rule matched for this mirror so far, sampled or not (so a
                    report shows the share sampled)
"""

from __future__ import annotations

import json
import os
import time
from typing import IO, Any

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
    """Appends records to PATH, one line each, flushed per line."""

    def __init__(self, path: str) -> None:
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self._file: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self.written = 0

    def write(self, record: dict[str, Any]) -> None:
        f = self._file
        if f is None:
            return
        line = {k: record.get(k) for k in FIELDS}
        if line["time"] is None:
            line["time"] = _now_iso()
        # One write() per line: a reader never sees half a record followed by another one.
        f.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")
        f.flush()
        self.written += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def closed(self) -> bool:
        return self._file is None


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
