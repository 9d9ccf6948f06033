"""Ports for the cases where no server can bind port 0 and report it.

`refused_port()`: a port on 127.0.0.1 where connections are refused, for as long as this process
lives; `refusing_socket()`: the same, for a port that later starts to answer. `on_picked_port()`:
for a program that must be told its port up front (nginx rejects `listen 127.0.0.1:0`; a
mitmdump whose port must already be in a config); it retries when the port was taken in between.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
LOOPBACK = "127.0.0.1"

# Sockets bound by refused_port(), kept open until the process exits: a bound socket that does
# not listen answers every connection with a reset (refused), and since it is bound without
# SO_REUSEADDR no other socket can bind the port, so it stays refusing for the whole run.
_held: list[socket.socket] = []


def refused_port() -> int:
    """A 127.0.0.1 port where connections are refused until this process exits."""
    s = refusing_socket()
    _held.append(s)
    port: int = s.getsockname()[1]
    return port


def refusing_socket() -> socket.socket:
    """A socket bound to a 127.0.0.1 port, not listening: connections to the port are refused
    while the caller holds it, and calling listen() on it makes the port answer."""
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    return s


class PortTaken(Exception):
    """Raised by an `on_picked_port` attempt whose program found its port already in use."""


def on_picked_port(attempt: Callable[[int], T], tries: int = 5) -> T:
    """Return `attempt(port)` for a port that was free a moment before; when the attempt raises
    PortTaken (another process bound the port in between), try again with a new one.

    Only for programs that cannot bind port 0 themselves: picking a port and binding it later
    leaves a window in which another process may take it, which the retry covers.
    """
    for _ in range(tries - 1):
        try:
            return attempt(_pick())
        except PortTaken:
            continue
    return attempt(_pick())


def _pick() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
    return port
