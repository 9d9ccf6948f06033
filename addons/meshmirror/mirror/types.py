"""The mirror writer's vocabulary: where a copy goes, what it carries, how it ended.

Plain data, no behaviour, so the wire layer, the pools and the writer can all depend on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

#: MirrorEndpoint.alpn values: the protocols a connection may speak, as ALPN names them.
HTTP1_ONLY = ("http/1.1",)
HTTP2_ONLY = ("h2",)  # plain text: h2c with prior knowledge; TLS: ALPN h2 or fail
EITHER = ("h2", "http/1.1")  # TLS only: what the server picks


@dataclass(frozen=True, slots=True)
class MirrorEndpoint:
    host: str  # IP or DNS name to connect to
    port: int
    tls: bool = False
    sni: str | None = None  # TLS server_hostname; None -> host (no SNI for IP literals)
    ca_file: str | None = None  # PEM bundle; None -> system default trust
    insecure_skip_verify: bool = False
    alpn: tuple[str, ...] = HTTP1_ONLY
    ca_path: str | None = None  # a directory of hashed CA certificates, beside ca_file
    client_cert: str | None = None  # PEM with the client certificate and its key


@dataclass(slots=True)
class MirrorRequest:
    method: str
    target: str  # origin-form: "/path?query"
    headers: list[tuple[bytes, bytes]]  # as sent, incl. Host (already the shadow host)
    body: bytes


@dataclass(frozen=True, slots=True)
class MirrorResult:
    status: int | None  # HTTP status when the mirror answered
    failure: str | None  # one of FAILURE_CLASSES when it did not, or SELF_LOOP (not sent)
    detail: str  # short text for logs; never contains request header values
    latency: float  # seconds from submit to completion
    bytes_sent: int  # request bytes written (head + body) on the attempt reported
    bytes_received: int  # response bytes read (head + body framing), body discarded
    # Only with submit(capture=N > 0): the response's header fields and its first N body bytes
    # (raw, still content-encoded); body_truncated when the body was longer than what was kept.
    headers: tuple[tuple[bytes, bytes], ...] | None = None
    body: bytes | None = None
    body_truncated: bool = False
    # The copy met a stale keep-alive connection and was sent again on a fresh one (idempotent
    # methods only, and only when no byte of a response had arrived).
    resent: bool = False
    # Only from a writer made with timeline=True: time.time() stamps (handoff to the sender
    # process, received by it, written to the mirror's socket, first response byte, done);
    # 0.0 where the copy never got that far.
    times: tuple[float, float, float, float, float] | None = None
    # The gRPC status the mirror answered with (`grpc-status` of the trailers, or of the
    # headers of a trailers-only response); None when it sent none.
    grpc_status: int | None = None
    # Only with capture: the response's trailer fields (HTTP/2), for the comparison.
    trailers: tuple[tuple[bytes, bytes], ...] | None = None


@dataclass(frozen=True, slots=True)
class CapturedResponse:
    """A finished exchange's response as captured: status line, header fields as received."""

    status: int
    reason: bytes  # HTTP/1.x only (HTTP/2 has none)
    fields: tuple[tuple[bytes, bytes], ...]
    body: bytes
    truncated: bool  # the body went past what the connection kept
    trailers: tuple[tuple[bytes, bytes], ...] = ()  # HTTP/2 trailers


class CopyWriter(Protocol):
    """What the fan-out needs from a sender: writer.MirrorWriter (copies on the proxy's loop)
    and sender.ProcessWriter (copies sent by a child process) both provide it."""

    callback_errors: int

    def submit(
        self,
        pool_key: str,
        endpoint: MirrorEndpoint,
        request: MirrorRequest,
        on_done: Callable[[MirrorResult], None],
        capture: int = 0,
    ) -> bool: ...

    def inflight(self, pool_key: str | None = None) -> int: ...

    def set_own_addresses(self, addresses: list[tuple[str, int]]) -> None: ...

    async def drain(self, timeout: float) -> int: ...

    def close(self) -> None: ...
