"""Why a mirror copy failed: the wire layer's exception types and their failure classes.

``classify`` translates any exception a copy can meet into one of ``FAILURE_CLASSES`` plus a short
detail, once, at the writer's boundary.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

#: Every value ``MirrorResult.failure`` can take (``None`` means the mirror answered).
FAILURE_CLASSES = ("refused", "timeout", "reset", "tls", "protocol", "dns", "other", "cancelled")


class InvalidRequest(Exception):
    """The copy cannot be framed safely (CR/LF or space where the wire format forbids it)."""


class ProtocolViolation(Exception):
    """The mirror's response is not valid HTTP (or not the protocol the copy needs)."""


class StreamReset(Exception):
    """HTTP/2: the mirror reset the copy's stream, or went away (GOAWAY) before answering it;
    `refused` when it says it never processed it (REFUSED_STREAM, or above GOAWAY's last
    stream)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class ConnectTimeout(TimeoutError):
    """connect_timeout expired (as opposed to the overall timeout)."""


class TLSConfigError(Exception):
    """The endpoint's TLS settings cannot be loaded (e.g. an unreadable ca_file)."""


class ClosedEarly(Exception):
    """The connection ended before the response was complete."""


#: MirrorResult.failure of a copy not sent because its connection reached the proxy's own
#: listen address: a skip (`skipped: loop`), not a failure class.
SELF_LOOP = "loop"


class SelfLoop(Exception):
    """The connection reached one of the proxy's own listen addresses (see MirrorWriter)."""


_ERRNO_CLASS = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timeout",
    errno.ECONNRESET: "reset",
    errno.EPIPE: "reset",
    errno.ECONNABORTED: "reset",
}


def short_error(exc: BaseException) -> str:
    text = str(exc)
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def classify(exc: BaseException) -> tuple[str, str]:
    """Map an exception to (failure class, detail). Order matters: subclasses first."""
    if isinstance(exc, BaseExceptionGroup):
        # create_connection(all_errors=True): one error per address tried.
        leaves = [classify(e) for e in exc.exceptions]
        for leaf in leaves:
            if leaf[0] == "refused":
                return "refused", leaf[1]
        return leaves[0] if leaves else ("other", short_error(exc))
    if isinstance(exc, ProtocolViolation):
        return "protocol", str(exc)
    if isinstance(exc, ClosedEarly):
        return "reset", f"connection closed while {exc}"
    if isinstance(exc, StreamReset):
        return "reset", str(exc)
    if isinstance(exc, TLSConfigError):
        return "tls", str(exc)
    if isinstance(exc, InvalidRequest):
        return "other", f"invalid request: {exc}"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return "reset", short_error(exc)
        return "tls", short_error(exc)
    if isinstance(exc, socket.gaierror):
        return "dns", short_error(exc)
    if isinstance(exc, TimeoutError):
        return "timeout", short_error(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "refused", short_error(exc)
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset", short_error(exc)
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return "reset", short_error(exc)
    if isinstance(exc, OSError) and exc.errno in _ERRNO_CLASS:
        return _ERRNO_CLASS[exc.errno], short_error(exc)
    if type(exc).__name__ == "RemoteProtocolError":  # h11, should a caller's hook raise one
        return "protocol", short_error(exc)
    return "other", short_error(exc)
