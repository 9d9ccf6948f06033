"""mitmproxy's per-connection event-log lines (`client connect`, `client disconnect`, `server
connect ADDR`, `server disconnect ADDR`), shown or left out (`mirror_connection_log`), and its
two lines per streamed message (`Streaming request to HOST.`, `Streaming response from HOST.`),
always left out: meshmirror streams every gRPC call (streams.py), so they would be two lines per
call, each costing the proxy a log record through every addon (the gRPC benchmark's proxy spent
two fifths of its time in mitmproxy's event dispatch).

Four lines per request for a client that opens a connection per request drown meshmirror's own
lines; `meshmirror run` leaves them out unless `--verbose`. A filter on mitmproxy's logger drops
exactly those messages: its other lines (errors connecting upstream, TLS failures, warnings)
still reach the event log.
"""

from __future__ import annotations

import logging

_LOGGER = "mitmproxy.proxy.server"
_PLAIN = frozenset({"client connect", "client disconnect"})
_WITH_ADDRESS = ("server connect ", "server disconnect ")


class _ConnectionLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if not isinstance(msg, str) or record.levelno != logging.INFO:
            return True
        return not (msg in _PLAIN or msg.startswith(_WITH_ADDRESS))


_FILTER = _ConnectionLines()
_STREAMING = ("Streaming request to ", "Streaming response from ")


class _StreamingLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        return not (isinstance(msg, str) and msg.startswith(_STREAMING))


_STREAMING_FILTER = _StreamingLines()


def hide_streaming_lines() -> None:
    """Drop mitmproxy's `Streaming request/response` lines before any handler sees them."""
    logging.getLogger(_LOGGER).addFilter(_STREAMING_FILTER)  # a no-op when it is there


def show_connection_lines(show: bool) -> None:
    """Let mitmproxy's per-connection lines through (True) or drop them (False)."""
    logger = logging.getLogger(_LOGGER)
    if show:
        logger.removeFilter(_FILTER)
    else:
        logger.addFilter(_FILTER)  # a no-op when it is there already
