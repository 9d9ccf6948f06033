"""meshmirror.mitm.connection_log: which of mitmproxy's log records the filter drops."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from meshmirror.mitm.connection_log import hide_streaming_lines, show_connection_lines


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def server_log() -> Iterator[tuple[logging.Logger, Collect]]:
    logger = logging.getLogger("mitmproxy.proxy.server")
    handler = Collect()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield logger, handler
    show_connection_lines(True)
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_only_the_per_connection_lines_are_dropped(
    server_log: tuple[logging.Logger, Collect],
) -> None:
    logger, seen = server_log
    show_connection_lines(False)
    show_connection_lines(False)  # twice: still one filter
    logger.info("client connect")
    logger.info("server connect 127.0.0.1:8080")
    logger.info("server disconnect 127.0.0.1:8080")
    logger.info("client disconnect")
    logger.info("error establishing server connection: [Errno 111] Connection refused")
    logger.warning("client connect")  # not at INFO: not the connection line
    logging.getLogger("meshmirror").info("client connect")  # another logger: untouched
    assert seen.messages == [
        "error establishing server connection: [Errno 111] Connection refused",
        "client connect",
    ]
    show_connection_lines(True)
    logger.info("client connect")
    assert seen.messages[-1] == "client connect"


def test_the_streaming_lines_are_dropped_and_nothing_else(
    server_log: tuple[logging.Logger, Collect],
) -> None:
    logger, seen = server_log
    hide_streaming_lines()
    hide_streaming_lines()  # twice: still one filter
    for message in (
        "Streaming request to 127.0.0.1.",
        "Streaming response from 127.0.0.1.",
        "client connect",
        "Streaming is fine",
    ):
        logger.info(message)
    assert seen.messages == ["client connect", "Streaming is fine"]
    logger.filters.clear()
