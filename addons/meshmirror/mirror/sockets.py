"""Socket options for upstream connections: how a given-up connection is torn down.

A connection closed with request bytes still unsent (a mirror that answered early and stopped
reading, a timeout, a cancel) must not linger: after close() the kernel keeps the socket and
its send queue as an orphan in FIN_WAIT1 until the peer reads or the kernel gives up, minutes
later, so a steady rate of such copies is unbounded kernel memory. It is reset instead, as
Envoy resets an upstream connection it gives up.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios

# SO_LINGER on, 0 seconds: close() sends RST and the kernel drops the unsent bytes at once.
_LINGER_RESET = struct.pack("ii", 1, 0)
_OUTQ = struct.Struct("i")


def reset(transport: asyncio.Transport | None) -> None:
    """End a connection with a TCP reset, whatever is still unsent."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
    transport.abort()


def unsent_in_kernel(transport: asyncio.BaseTransport | None) -> int:
    """Bytes written to the socket that the kernel has not sent (or had acknowledged) yet; 0
    where the platform cannot tell."""
    if transport is None:
        return 0
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * _OUTQ.size)
    except (OSError, ValueError, AttributeError):
        return 0
    return int(_OUTQ.unpack(raw)[0])
