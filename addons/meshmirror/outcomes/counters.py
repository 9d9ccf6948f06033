"""Mirror outcomes: counters per mirror cluster and the event-log lines that report them.

Every sampled copy ends in exactly one outcome, so that per cluster
`sent + failed + dropped + skipped == sampled` once nothing is in flight:
- sent:    the mirror answered with an HTTP status (any status: a 500 from the shadow is still
           delivered; the status is counted separately);
- failed:  no answer, by class (refused, timeout, reset, tls, protocol, dns, other, cancelled);
- dropped: never attempted because a bound was hit (overflow of `mirror_max_inflight`);
- skipped: never attempted because the copy must not be sent (body too large, streamed body,
           unknown mirror cluster, ...).
"""

from __future__ import annotations

import enum
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from meshmirror import grpc


class Outcome(enum.Enum):
    SENT = "sent"
    FAILED = "failed"
    DROPPED = "dropped"
    SKIPPED = "skipped"


def classify(status: int | None, failure: str | None) -> tuple[Outcome, str | None]:
    """A finished copy's outcome and reason, decided here once for every reader (counters,
    breaker, event log, outcome log, inspection): any answer is `sent`, whatever its status;
    no answer is `failed` with the writer's failure class, except a copy the writer would not
    send because its connection reached the proxy itself: `skipped: loop`."""
    if status is not None:
        return Outcome.SENT, None
    if failure == "loop":
        return Outcome.SKIPPED, "loop"
    return Outcome.FAILED, failure or "other"


@dataclass
class ClusterCounters:
    # Requests a rule with this mirror matched (sampled or not), and the share they should
    # have been sampled at, summed (so `expected / matched` is the configured share, weighted
    # over the rules when several with different percentages mirror to the cluster).
    matched: int = 0
    expected: float = 0.0
    sampled: int = 0
    sent: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    latency_sum: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    # Copies sent a second time after a stale keep-alive (idempotent methods only); each is
    # still one copy with one outcome.
    resent: int = 0
    # gRPC copies answered with a status (`grpc-status`), by code: a sent copy of a gRPC call
    # is counted here too.
    grpc_statuses: Counter[int] = field(default_factory=Counter)

    @property
    def finished(self) -> int:
        return (
            self.sent
            + sum(self.failed.values())
            + sum(self.dropped.values())
            + sum(self.skipped.values())
        )

    def share(self) -> tuple[float, float] | None:
        """(sampled share, configured share) of the matched requests, in percent."""
        if not self.matched:
            return None
        return self.sampled / self.matched * 100, self.expected / self.matched * 100

    def to_dict(self, inflight: int = 0) -> dict[str, Any]:
        answered = self.sent
        share = self.share()
        return {
            "matched": self.matched,
            "sampled": self.sampled,
            "sampled_percent": round(share[0], 3) if share else None,
            "configured_percent": round(share[1], 4) if share else None,
            "sent": self.sent,
            "failed": dict(self.failed),
            "dropped": dict(self.dropped),
            "skipped": dict(self.skipped),
            "in_flight": inflight,
            "status": {str(k): v for k, v in sorted(self.statuses.items())},
            "grpc_status": _grpc_labels(self.grpc_statuses),
            "mean_latency_ms": round(self.latency_sum / answered * 1000, 3) if answered else None,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "resent": self.resent,
        }


class MirrorStats:
    """Counters for every mirror cluster plus request-level skips (before any cluster is known)."""

    def __init__(self) -> None:
        self.clusters: dict[str, ClusterCounters] = {}
        # Requests no copy was considered for, by reason: no_virtual_host, no_route_matched,
        # local_reply (redirect, direct response), no_mirror_policy (the route mirrors nothing).
        self.requests_skipped: Counter[str] = Counter()
        # (rule label, mirror cluster) -> requests that rule matched: the outcome log's records
        # carry it so that a report can show the share sampled per rule and mirror.
        self.rule_matches: Counter[tuple[str, str]] = Counter()

    def cluster(self, name: str) -> ClusterCounters:
        c = self.clusters.get(name)
        if c is None:
            c = self.clusters[name] = ClusterCounters()
        return c

    def totals(self) -> ClusterCounters:
        t = ClusterCounters()
        for c in self.clusters.values():
            t.matched += c.matched
            t.expected += c.expected
            t.sampled += c.sampled
            t.sent += c.sent
            t.failed.update(c.failed)
            t.dropped.update(c.dropped)
            t.skipped.update(c.skipped)
            t.statuses.update(c.statuses)
            t.latency_sum += c.latency_sum
            t.bytes_sent += c.bytes_sent
            t.bytes_received += c.bytes_received
            t.resent += c.resent
            t.grpc_statuses.update(c.grpc_statuses)
        return t

    def snapshot(self, inflight: dict[str, int] | None = None) -> dict[str, Any]:
        inflight = inflight or {}
        return {
            "clusters": {
                name: c.to_dict(inflight.get(name, 0)) for name, c in sorted(self.clusters.items())
            },
            "total": self.totals().to_dict(sum(inflight.values())),
            "requests_not_mirrored": dict(self.requests_skipped),
        }

    def summary_line(self) -> str:
        if not self.clusters:
            return "mirror summary: nothing sampled yet"
        parts = []
        for name, c in sorted(self.clusters.items()):
            text = f"{name}: matched={c.matched} sampled={c.sampled}"
            share = c.share()
            if share is not None:
                text += f" ({share[0]:.3g}%, configured {share[1]:.4g}%)"
            text += f" sent={c.sent}"
            if c.grpc_statuses:
                text += " grpc=" + ",".join(
                    f"{k}:{v}" for k, v in _grpc_labels(c.grpc_statuses).items()
                )
            if c.resent:
                text += f" resent={c.resent}"
            for label, counter in (
                ("failed", c.failed),
                ("dropped", c.dropped),
                ("skipped", c.skipped),
            ):
                if counter:
                    text += f" {label}=" + ",".join(f"{k}:{v}" for k, v in sorted(counter.items()))
            parts.append(text)
        return "mirror summary: " + "; ".join(parts)


def _grpc_labels(codes: Counter[int]) -> dict[str, int]:
    """gRPC status counts by name (`OK`, `UNAVAILABLE`, ...; `other` past the defined codes),
    in code order."""
    out: Counter[str] = Counter()
    for code, n in sorted(codes.items()):
        out[grpc.status_label(code)] += n
    return dict(out)


#: Longest a field of an outcome line may be, in characters after escaping; a longer one is cut
#: and ends in `FIELD_CUT`. The Host is the client's, so without a bound one request could make
#: a line as long as mitmproxy lets a header be.
MAX_FIELD = 256
FIELD_CUT = "..."


def format_outcome(
    *,
    outcome: Outcome,
    rule: str,
    cluster: str,
    endpoint: str,
    shadow_host: str,
    reason: str = "",
    status: int | None = None,
    latency: float | None = None,
    bytes_sent: int = 0,
    bytes_received: int = 0,
    generation: int = 0,
    resent: bool = False,
    grpc_status: int | None = None,
) -> str:
    """One event-log line per mirror outcome. Never includes header values (they may be secrets).

    Safe to print whatever the client sent: userinfo is removed from the host
    (`user:pw@app-shadow` -> `app-shadow`), control and format characters are escaped (`\\x0d`,
    `\\u202e`; no CR, LF or ESC reaches the log raw), spaces in the `key=value` fields too (a
    field cannot forge another), and each field is at most `MAX_FIELD` characters."""
    head = f"mirror {outcome.value}"
    if outcome is Outcome.SENT and status is not None:
        head += f" {status}"
        if grpc_status is not None:
            head += f" grpc={grpc.status_label(grpc_status)}"
    elif reason:
        head += f": {safe_field(reason, keep_spaces=True)}"
    text = (
        f"{head} rule={safe_field(rule)} cluster={safe_field(cluster)}"
        f" endpoint={safe_field(endpoint) or '-'}"
        f" host={safe_field(_without_userinfo(shadow_host)) or '-'}"
    )
    if latency is not None:
        text += f" latency={latency * 1000:.1f}ms"
    if bytes_sent or bytes_received:
        text += f" bytes={bytes_sent}/{bytes_received}"
    if resent:
        text += " resent=1"
    text += f" gen={generation}"
    return text


def _without_userinfo(host: str) -> str:
    # An authority's userinfo ends at its last "@" (RFC 3986 3.2.1); what follows is the host.
    return host.rpartition("@")[2]


def safe_field(value: str, *, keep_spaces: bool = False) -> str:
    """`value` with what must not reach a printed line raw escaped (control, format, separator
    and non-UTF-8 characters as `\\xNN` / `\\uNNNN`, a backslash doubled, spaces too unless
    `keep_spaces`), and bounded to MAX_FIELD. For every line or text output that shows what a
    client, a mirror or a config sent."""
    plain = value.isascii() and value.isprintable() and "\\" not in value
    if not (plain and (keep_spaces or " " not in value)):
        value = "".join(_escape(c, keep_spaces) for c in value)
    if len(value) > MAX_FIELD:
        value = value[: MAX_FIELD - len(FIELD_CUT)] + FIELD_CUT
    return value


def _escape(c: str, keep_spaces: bool) -> str:
    code = ord(c)
    if c == " ":
        return c if keep_spaces else "\\x20"
    if c == "\\":
        return "\\\\"  # so an escape in the line always stands for an escaped character
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (mitmproxy's surrogate escapes)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return c if c.isprintable() else f"\\x{code:02x}"
    # Control (C1), format (bidi overrides, zero-width), line/paragraph separators, surrogates,
    # unassigned: anything a terminal or log viewer may act on rather than show.
    if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
        if code <= 0xFF:
            return f"\\x{code:02x}"
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return c
