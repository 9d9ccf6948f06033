"""What a settled copy turns into: the two sides compared, its outcome record and its texts.

- `primary_of` / `shadow_side`: the primary's response (a mitmproxy flow) and the copy's
  response (the writer's `MirrorResult`) as a comparison job's `RawSide`s (bodies as received:
  never decoded here, on the event loop);
- `outcome_record`: the JSON object `mirror_log` writes per copy (fields in outcomes/log.py);
- `outcome_text` / `comparison_detail`: the lines for the original flow's comment and the
  mirror flow's.
Pure functions of a `Probe` and its results; `Inspection._finalize` decides when they run and
where their output goes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mitmproxy import http

from meshmirror import grpc
from meshmirror.mirror.types import MirrorResult
from meshmirror.mitm.probes import Primary, Probe
from meshmirror.outcomes.compare import Comparison
from meshmirror.outcomes.compare_job import RawSide, raw_side
from meshmirror.outcomes.counters import Outcome, safe_field


def outcome_record(
    probe: Probe, primary: Primary | None, comparison: Comparison | None
) -> dict[str, Any]:
    """The `mirror_log` line for one copy, before OutcomeLog stamps its time."""
    pending = probe.pending
    result = probe.result
    outcome = probe.outcome.value if probe.outcome else "failed"
    request = pending.flow.request
    return {
        "request_id": pending.request_id,
        "flow": pending.flow.id,
        "method": request.method,
        # Without the query: it may carry tokens, and records never carry secrets.
        "path": request.path.partition("?")[0][:_MAX_PATH],
        "rule": probe.route.label,
        "cluster": probe.cluster,
        "endpoint": probe.endpoint,
        "outcome": outcome,
        "reason": probe.reason,
        "detail": (result.detail or None) if result is not None else None,
        "primary_status": primary.status if primary else None,
        "primary_latency_ms": _ms(primary.latency) if primary else None,
        "shadow_status": result.status if result else None,
        "shadow_latency_ms": _ms(result.latency) if result else None,
        # A gRPC call's copy: its answer's gRPC status (None when it gave none).
        "grpc": grpc.is_grpc(request.headers.get("content-type", "")),
        "grpc_status": result.grpc_status if result else None,
        "bytes_sent": result.bytes_sent if result else 0,
        "bytes_received": result.bytes_received if result else 0,
        "comparison": comparison.summary() if comparison is not None else None,
        "generation": probe.generation,
        "replay": pending.replay,
    }


_MAX_PATH = 512


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def outcome_text(probe: Probe, result: MirrorResult | None) -> str:
    if probe.outcome is Outcome.SENT and result is not None:
        status = f"{result.status}"
        if result.grpc_status is not None:
            status += f" grpc={grpc.status_label(result.grpc_status)}"
        return f"sent {status} in {result.latency * 1000:.1f}ms"
    if result is not None:
        detail = f" ({safe_field(result.detail, keep_spaces=True)})" if result.detail else ""
        return f"failed: {probe.reason}{detail}"
    return f"{probe.outcome.value if probe.outcome else 'failed'}: {probe.reason}"


def comparison_detail(comparison: Comparison | None) -> str:
    """The mirror flow's comment lines for a mismatch: each field and its example, escaped
    (both come from the mirror's answer), one line each."""
    if comparison is None or comparison.match:
        return ""
    lines = [
        f"\n  {safe_field(k, keep_spaces=True)}: {safe_field(v, keep_spaces=True)}"
        for k, v in list(comparison.examples.items())[:20]
    ]
    return "".join(lines)


def primary_of(flow: http.HTTPFlow, with_body: bool, max_body: int) -> Primary:
    """The primary's status and latency, and with `with_body` its response as a comparison
    needs it: the body as received (still content-encoded: decoding is the comparison's, off
    the loop and bounded), no more of it than `max_body` calls for."""
    resp = flow.response
    if resp is None:
        return Primary(None, None, None)
    latency = None
    if resp.timestamp_end is not None and flow.request.timestamp_end is not None:
        latency = max(0.0, resp.timestamp_end - flow.request.timestamp_end)
    side = None
    if with_body:
        side = raw_side(
            resp.status_code,
            _fields(resp.headers.fields),
            resp.raw_content,
            max_body,
            _fields(resp.trailers.fields) if resp.trailers else (),
        )
    return Primary(resp.status_code, latency, side)


def shadow_side(result: MirrorResult) -> RawSide:
    """The copy's response as captured (its body at most the capture, still encoded)."""
    assert result.status is not None
    return RawSide(
        result.status,
        _fields(result.headers or ()),
        result.body,
        result.body_truncated,
        trailers=_fields(result.trailers or ()),
    )


def _fields(fields: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    return tuple((n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in fields)
