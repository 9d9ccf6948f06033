"""gRPC calls passed through as they arrive.

mitmproxy buffers a whole message before it forwards it, so a server-streaming call's messages
would reach the client all at once at the end, and a bidirectional call whose client waits for
an answer before it sends on would never end. For gRPC calls (content-type `application/grpc`)
meshmirror sets mitmproxy's `stream` on the request and the response to a `BodyTee`: every
chunk is forwarded when it arrives, and a copy of the body is kept up to a limit, which becomes
the message's content when it ends, as if it had not been streamed (so the copy, the comparison,
mitmweb's gRPC view and saved flows see it). A body over the limit is forwarded whole but not
kept: its content stays empty and the call is not mirrored (`body_too_large`).
"""

from __future__ import annotations

from mitmproxy import http

from meshmirror import grpc


def is_grpc(message: http.Message) -> bool:
    """A gRPC message by its content-type (gRPC-Web is not gRPC: it is plain HTTP/1.1-able)."""
    return grpc.is_grpc(message.headers.get("content-type", ""))


class BodyTee:
    """mitmproxy's `stream` callable for one message: passes each chunk on, keeps the body."""

    __slots__ = ("message", "limit", "parts", "size", "over")

    def __init__(self, message: http.Message, limit: int) -> None:
        self.message = message
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.over = False  # the body passed `limit` and is not kept

    def __call__(self, chunk: bytes) -> bytes:
        if chunk:
            self.size += len(chunk)
            if not self.over:
                if self.size > self.limit:
                    self.over = True
                    self.parts = []
                else:
                    self.parts.append(chunk)
            return chunk
        # mitmproxy's call with b"" at the end of the message, before its hook.
        if not self.over:
            self.message.data.content = b"".join(self.parts)
        self.parts = []
        return b""
