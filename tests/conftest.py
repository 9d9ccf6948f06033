"""Session-wide setup for every test."""

from __future__ import annotations

import signal


def pytest_configure() -> None:
    """Give the processes the tests start the default dispositions of the signals the tests
    send them. A shell starts a background job with SIGINT and SIGQUIT ignored (`nohup` adds
    SIGHUP), an ignored signal stays ignored across exec, and Python keeps SIGINT ignored when
    it starts that way: a suite launched in the background would see every process it
    interrupts run on. A handled signal is reset to the default at exec, so children start
    with the defaults."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGQUIT, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
