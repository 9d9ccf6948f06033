"""Hostile mirrors against a real mitmdump: a mirror that answers early and stops reading, floods
interim responses, drops a keep-alive connection under a copy, or sends bytes nobody asked for.
Whatever it does, the client's answer is the primary's, nothing leaks, a copy is delivered at
most once, and every counted status belongs to a copy.

Each mirror is a raw-socket server written for its misbehaviour (tests/support/servers.py's
FaultServer runs it per connection).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import meshconfig as mc
from tests.support import servers as srv
from tests.support.mitmdump import Proxy
from tests.support.processes import wait_for
from tests.support.procfs import fds_and_rss, process_tree, tcp_states_to

CLUSTER = "outbound|80||shadow.local"
HOSTS = {"Host": "app.example.com"}
BASE = ("mirror_summary_interval=0", "mirror_breaker_failures=0")


@pytest.fixture
def primary() -> Iterator[srv.Recorder]:
    p = srv.Recorder("primary")
    yield p
    p.close()


@pytest.fixture
def start(
    tmp_path: Path, primary: srv.Recorder, proxies: Callable[..., Proxy]
) -> Callable[..., Proxy]:
    """A proxy routing app.example.com to `primary` and mirroring every request to a mirror
    on `port`; extra `--set` options may be given (`mirror_verbosity=each` unless one says
    otherwise: mitmproxy drops every value of an option set twice)."""

    def run(port: int, *options: str) -> Proxy:
        se = mc.service_entry("shadow", "shadow.local", port)
        cfg = mc.mirror_config(tmp_path / "c.yaml", primary.port, {"shadow.local": se})
        if not any(o.startswith("mirror_verbosity=") for o in options):
            options = (*options, "mirror_verbosity=each")
        return proxies(f"http://127.0.0.1:{primary.port}", [cfg], *BASE, *options)

    return run


def request(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=HOSTS)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def outcomes(proxy: Proxy) -> list[str]:
    return proxy.log_lines("mirror sent") + proxy.log_lines("mirror failed")


def sender_pid(proxy: Proxy) -> int:
    """The sender process's pid (it starts once the proxy runs, just after it listens)."""

    def children() -> list[int] | None:
        found = [p for p in process_tree(proxy.proc.pid) if p != proxy.proc.pid]
        return found or None

    found = wait_for(children, timeout=10, what="the sender process")
    assert len(found) == 1, found
    return found[0]


# --- 1: a mirror that answers early and then neither reads nor closes -------------------------


class EarlyAnswer:
    """Answers `200, Content-Length: 0` as soon as it has a request head, then stops reading
    (the request body piles up in the kernel buffers) and keeps the connection open."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.server = srv.FaultServer(self._serve)
        self.port = self.server.port

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.release.wait(60)

    def close(self) -> None:
        self.release.set()
        self.server.close()


@pytest.mark.parametrize("sender", ["process", "loop"])
def test_a_mirror_that_answers_early_and_stops_reading_leaks_nothing(
    sender: str, start: Callable[..., Proxy]
) -> None:
    mirror = EarlyAnswer()
    try:
        proxy = start(mirror.port, "mirror_timeout=2s", f"mirror_sender={sender}")
        pid = proxy.proc.pid if sender == "loop" else sender_pid(proxy)
        n, size = 24, 4_000_000
        body = b"p" * size

        def burst(first: int) -> None:
            for i in range(first, first + n):
                assert request(proxy.port, "POST", f"/upload/{i}", body) == (200, b"primary")
            wait_for(lambda: len(outcomes(proxy)) >= first + n, timeout=60)

        # The first burst sets the allocator's high-water mark (mitmproxy 11 keeps about 45 MiB
        # after 4 MB bodies whether or not a mirror misbehaves); a leak grows with every burst.
        burst(0)
        time.sleep(3.0)  # mirror_timeout + 1 s
        fds0, rss0 = fds_and_rss(pid)
        burst(n)
        # Within mirror_timeout + 1 s of the last outcome, every copy's socket is gone and
        # its unsent bytes with it.
        deadline = time.monotonic() + 3.0
        while True:
            fds1, rss1 = fds_and_rss(pid)
            if (fds1 - fds0 <= 3 and rss1 - rss0 < 32 * 1024) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert fds1 - fds0 <= 3, (fds0, fds1)
        assert rss1 - rss0 < 32 * 1024, (rss0, rss1)  # KiB; the leak kept ~80 MiB per burst
    finally:
        mirror.close()


@pytest.mark.parametrize("sender", ["process", "loop"])
def test_copies_given_up_with_bytes_unsent_do_not_linger_in_the_kernel(
    sender: str, start: Callable[..., Proxy]
) -> None:
    """A mirror that answers early and never reads: the copies' connections are reset, not
    closed, so none is left to the kernel in FIN_WAIT1 with its send queue (an orphan the
    kernel keeps for minutes: unbounded memory at a steady rate)."""
    mirror = EarlyAnswer()
    try:
        proxy = start(mirror.port, "mirror_timeout=1s", f"mirror_sender={sender}")
        body = b"p" * (2 * 1024 * 1024)
        for i in range(30):
            assert request(proxy.port, "POST", f"/upload/{i}", body) == (200, b"primary")
        wait_for(lambda: len(outcomes(proxy)) >= 30, timeout=60, what="30 outcomes")

        def lingering() -> dict[str, int]:
            states = tcp_states_to(mirror.port)
            return {k: n for k, n in states.items() if k in ("FIN_WAIT1", "CLOSING", "LAST_ACK")}

        # Four seconds after the last outcome, as the reproduction looked.
        deadline = time.monotonic() + 4.0
        while lingering() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lingering() == {}, tcp_states_to(mirror.port)
    finally:
        mirror.close()


# --- 2: interim responses count -------------------------------------------------------------


def continue_flood(conn: socket.socket) -> None:
    """`100 Continue` as fast as the socket takes it for 2.5 s, then a 200."""
    srv.read_request(conn, b"")
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" * 2000
    end = time.monotonic() + 2.5
    try:
        while time.monotonic() < end:
            conn.sendall(interim)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        time.sleep(0.5)
    except OSError:
        pass


@pytest.mark.parametrize("sender", ["process", "loop"])
def test_a_flood_of_interim_responses_fails_the_copy_as_protocol(
    sender: str, start: Callable[..., Proxy]
) -> None:
    mirror = srv.FaultServer(continue_flood)
    try:
        proxy = start(mirror.port, "mirror_timeout=10s", f"mirror_sender={sender}")
        t0 = time.monotonic()
        assert request(proxy.port, "GET", "/x") == (200, b"primary")
        wait_for(lambda: len(outcomes(proxy)) >= 1, timeout=15)
        elapsed = time.monotonic() - t0
        (line,) = outcomes(proxy)
        assert "mirror failed: protocol" in line, line
        assert "interim" in line, line
        # Given up long before the flood ends, not after reading it all.
        assert elapsed < 2.0, elapsed
    finally:
        mirror.close()


def test_a_few_interim_responses_before_the_answer_are_fine(start: Callable[..., Proxy]) -> None:
    def three_continues(conn: socket.socket) -> None:
        srv.read_request(conn, b"")
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 2 + b"HTTP/1.1 103 Early Hints\r\n\r\n")
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        time.sleep(0.5)

    mirror = srv.FaultServer(three_continues)
    try:
        proxy = start(mirror.port)
        assert request(proxy.port, "GET", "/x") == (200, b"primary")
        wait_for(lambda: len(outcomes(proxy)) >= 1, timeout=15)
        (line,) = outcomes(proxy)
        assert "mirror sent 201" in line, line
    finally:
        mirror.close()


# --- 5: a copy is delivered at most once ----------------------------------------------------


class DropsSecond:
    """Answers the first request on each connection; reads the second whole, records it, and
    closes the connection without a byte of answer (a stale keep-alive, as the client sees it)."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self._lock = threading.Lock()
        self.server = srv.FaultServer(self._serve)
        self.port = self.server.port

    def _serve(self, conn: socket.socket) -> None:
        for n, head in enumerate(srv.keep_alive_requests(conn, 2)):
            with self._lock:
                self.seen.append(head.split(b"\r\n", 1)[0])
            if n == 0:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def requests(self, line: bytes) -> int:
        with self._lock:
            return sum(1 for s in self.seen if s == line)

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("sender", ["process", "loop"])
def test_a_non_idempotent_copy_on_a_stale_connection_is_not_sent_again(
    sender: str, start: Callable[..., Proxy]
) -> None:
    mirror = DropsSecond()
    try:
        proxy = start(mirror.port, f"mirror_sender={sender}")
        assert request(proxy.port, "GET", "/warm") == (200, b"primary")
        wait_for(lambda: len(outcomes(proxy)) >= 1, timeout=10)
        assert request(proxy.port, "POST", "/pay", b'{"charge": 1}') == (200, b"primary")
        wait_for(lambda: len(outcomes(proxy)) >= 2, timeout=10)
        time.sleep(0.3)  # a re-send would arrive by now
        assert mirror.requests(b"POST /pay HTTP/1.1") == 1, mirror.seen
        line = outcomes(proxy)[1]
        assert "mirror failed: reset" in line, line
        proxy.stop()
        counters = mc.last_summary(proxy.lines)[CLUSTER]
        assert counters["sampled"] == 2 and counters["sent"] == 1, counters
        assert counters["failed"] == {"reset": 1}, counters
        assert "resent" not in counters, counters
    finally:
        mirror.close()


@pytest.mark.parametrize("sender", ["process", "loop"])
def test_an_idempotent_copy_on_a_stale_connection_is_resent_once_and_counted(
    sender: str, start: Callable[..., Proxy]
) -> None:
    mirror = DropsSecond()
    try:
        proxy = start(mirror.port, f"mirror_sender={sender}")
        assert request(proxy.port, "GET", "/warm") == (200, b"primary")
        wait_for(lambda: len(outcomes(proxy)) >= 1, timeout=10)
        assert request(proxy.port, "PUT", "/item/7", b"v") == (200, b"primary")
        wait_for(lambda: len(outcomes(proxy)) >= 2, timeout=10)
        assert mirror.requests(b"PUT /item/7 HTTP/1.1") == 2, mirror.seen
        line = outcomes(proxy)[1]
        assert "mirror sent 200" in line and "resent" in line, line
        proxy.stop()
        counters = mc.last_summary(proxy.lines)[CLUSTER]
        assert counters["sampled"] == 2 and counters["sent"] == 2, counters
        assert counters["resent"] == 1, counters
    finally:
        mirror.close()


# --- 11: late bytes are not credited to the next copy ---------------------------------------


def answer_then_late_bytes(answer: bytes, late: bytes) -> Callable[[socket.socket], None]:
    """A keep-alive mirror that answers each request with `answer`, then, 50 ms later, sends
    `late` on the same connection: bytes that belong to no copy."""

    def serve(conn: socket.socket) -> None:
        for _ in srv.keep_alive_requests(conn, 100):
            conn.sendall(answer)
            time.sleep(0.05)
            conn.sendall(late)

    return serve


UNSOLICITED = b"HTTP/1.1 599 Nobody Asked\r\nContent-Length: 0\r\n\r\n"
# A second, unsolicited response after a complete one; bytes after a body-less 204.
double_answer = answer_then_late_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", UNSOLICITED)
trailing_body = answer_then_late_bytes(b"HTTP/1.1 204 No Content\r\n\r\n", UNSOLICITED)


@pytest.mark.parametrize("sender", ["process", "loop"])
@pytest.mark.parametrize(
    ("fault", "expected"),
    [(double_answer, "200"), (trailing_body, "204")],
    ids=["double-answer", "trailing-body"],
)
def test_bytes_on_an_idle_connection_are_credited_to_no_copy(
    sender: str,
    fault: Callable[[socket.socket], None],
    expected: str,
    start: Callable[..., Proxy],
) -> None:
    mirror = srv.FaultServer(fault)
    try:
        proxy = start(mirror.port, f"mirror_sender={sender}")
        n = 8
        for i in range(n):
            assert request(proxy.port, "GET", f"/r/{i}") == (200, b"primary")
            time.sleep(0.15)  # the late bytes arrive while the connection is idle
        wait_for(lambda: len(outcomes(proxy)) >= n, timeout=10)
        proxy.stop()
        counters = mc.last_summary(proxy.lines)[CLUSTER]
        assert counters["sampled"] == n and counters["sent"] == n, counters
        answered = [re.search(r"mirror sent (\d+)", line) for line in outcomes(proxy)]
        assert {m.group(1) for m in answered if m} == {expected}, outcomes(proxy)
        # Every late answer closed its connection: each copy needed a new one.
        assert mirror.accepted == n, mirror.accepted
    finally:
        mirror.close()


# --- 13: a stopped sender is noticed -------------------------------------------------------


def test_a_stopped_sender_process_is_timed_out_warned_about_and_replaced(
    start: Callable[..., Proxy],
) -> None:
    mirror = srv.Recorder("primary")  # a healthy mirror: only the sender process misbehaves
    # verbosity each: the test waits for the first copies' results before stopping the sender,
    # or a loaded machine could stop it with them still in flight.
    proxy = start(mirror.port, "mirror_timeout=1s", "mirror_verbosity=each")
    stopped = 0
    try:
        for i in range(3):
            assert request(proxy.port, "GET", f"/before/{i}") == (200, b"primary")
        wait_for(lambda: len(proxy.log_lines("mirror sent 200")) == 3, 10, what="3 copies sent")
        stopped = sender_pid(proxy)
        os.kill(stopped, signal.SIGSTOP)
        t0 = time.monotonic()
        sent_while_stopped = 0
        replaced_after = None
        while time.monotonic() - t0 < 12:
            t = time.monotonic()
            assert request(proxy.port, "GET", f"/during/{sent_while_stopped}") == (200, b"primary")
            # The primary never waits for the stopped sender.
            assert time.monotonic() - t < 1.0
            sent_while_stopped += 1
            children = [p for p in process_tree(proxy.proc.pid) if p != proxy.proc.pid]
            if children and children != [stopped]:
                replaced_after = time.monotonic() - t0
                break
            time.sleep(0.1)
        assert replaced_after is not None, proxy.output[-3000:]
        # Warned once, then replaced: limit 2 s (1 s timeout + 1 s margin) to notice, as
        # long again to give up on it.
        assert len(proxy.log_lines("has not answered")) == 1, proxy.output[-3000:]
        assert 3.0 < replaced_after < 8.0, replaced_after
        late = proxy.log_lines("no result from the mirror sender process")
        assert late and all("mirror failed: timeout" in line for line in late), late
        assert not proxy.log_lines("dropped: overflow")
        for i in range(3):
            assert request(proxy.port, "GET", f"/after/{i}") == (200, b"primary")
        wait_for(lambda: not any(p == stopped for p in process_tree(proxy.proc.pid)), 5)
        proxy.stop()
        counters = mc.last_summary(proxy.lines)[CLUSTER]
        assert counters["sampled"] == 3 + sent_while_stopped + 3, counters
        assert mc.accounted(counters) == counters["sampled"], counters
        assert counters["sent"] >= 6, counters  # before and after, at least
    finally:
        if stopped:
            with contextlib.suppress(OSError):
                os.kill(stopped, signal.SIGCONT)
        mirror.close()
