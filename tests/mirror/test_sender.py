"""ProcessWriter specifics; the shared writer contract runs in tests/test_writer.py on both
writers. Here: the sender is a real child process, its death fails only its own copies and a
new one takes over, it never outlives the proxy (however the proxy ends), and the framing
survives every split of the byte stream. Real sockets and processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from meshmirror.mirror import sender
from meshmirror.mirror.sender import ProcessWriter
from meshmirror.mirror.types import MirrorEndpoint, MirrorRequest, MirrorResult
from meshmirror.mirror.worker import FrameReader, copy_message, encode_frame, endpoint_message
from tests.support.processes import gone, wait_gone

DEADLINE = 10.0
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
ADDONS = Path(__file__).resolve().parents[2] / "addons"


class Server:
    """Keep-alive server answering 200; with hold=True it reads requests and never answers."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def endpoint(self) -> MirrorEndpoint:
        assert self._server is not None
        return MirrorEndpoint("127.0.0.1", int(self._server.sockets[0].getsockname()[1]))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                if not self.hold:
                    writer.write(OK)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.transport.abort()

    async def stop(self) -> None:
        for w in self._writers:
            w.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = await Server().start()
    yield s
    await s.stop()


@pytest.fixture
async def held() -> AsyncIterator[Server]:
    s = await Server(hold=True).start()
    yield s
    await s.stop()


def get() -> MirrorRequest:
    return MirrorRequest("GET", "/", [(b"Host", b"app-shadow")], b"")


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_the_copies_are_sent_by_a_child_process(server: Server) -> None:
    w = ProcessWriter(timeout=5.0, max_inflight=100)
    results: list[MirrorResult] = []
    try:
        w.start()
        pid = w.pid
        assert pid is not None and pid != os.getpid()
        for _ in range(50):
            assert w.submit("k", server.endpoint, get(), results.append)
        await until(lambda: len(results) == 50)
        # Read once it answered: right after the fork its cmdline can still be empty.
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"meshmirror.mirror.worker" in f.read()
        assert {r.status for r in results} == {200}
        assert server.requests == 50
        assert w.starts == 1
    finally:
        w.close()
    assert w.pid is None
    assert gone(pid)


async def test_a_killed_sender_fails_only_its_copies_and_a_new_one_takes_over(
    server: Server, held: Server
) -> None:
    w = ProcessWriter(timeout=30.0, max_inflight=8)
    results: list[MirrorResult] = []
    try:
        for _ in range(3):
            assert w.submit("k", held.endpoint, get(), results.append)
        await until(lambda: held.requests == 3)
        pid = w.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await until(lambda: len(results) == 3)
        assert {r.failure for r in results} == {"other"}
        assert all("sender process lost" in r.detail for r in results)
        assert w.inflight() == 0 and w.pid is None
        # A copy within a second of the loss fails fast (no restart storm)...
        assert w.submit("k", server.endpoint, get(), results.append)
        assert results[-1].failure == "other" and "not running" in results[-1].detail
        # ...and after that a new sender takes over.
        await asyncio.sleep(1.05)
        assert w.submit("k", server.endpoint, get(), results.append)
        await until(lambda: len(results) == 5)
        assert results[-1].status == 200
        assert w.starts == 2 and w.pid not in (None, pid)
    finally:
        w.close()


def test_the_sender_exits_when_the_proxy_dies_without_closing(tmp_path: Path) -> None:
    # A proxy killed with SIGKILL runs no cleanup: the sender must notice on its own (EOF on
    # its stdin) and exit, never lingering as an orphan.
    script = tmp_path / "proxy.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, os, signal, sys
            from meshmirror.mirror.sender import ProcessWriter

            async def main():
                w = ProcessWriter(timeout=5.0, max_inflight=4)
                w.start()
                print(w.pid, flush=True)
                await asyncio.sleep(30)

            asyncio.run(main())
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(ADDONS))
    proxy = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proxy.stdout is not None
        sender = int(proxy.stdout.readline())
        assert not gone(sender)
        proxy.kill()
        proxy.wait(DEADLINE)
        assert wait_gone(sender, DEADLINE), "the sender process outlived its proxy"
    finally:
        if proxy.poll() is None:
            proxy.kill()
            proxy.wait()


async def test_drain_waits_then_cancels_what_the_mirror_still_holds(held: Server) -> None:
    w = ProcessWriter(timeout=30.0, max_inflight=8)
    results: list[MirrorResult] = []
    try:
        for _ in range(3):
            assert w.submit("k", held.endpoint, get(), results.append)
        await until(lambda: held.requests == 3)
        t0 = time.monotonic()
        assert await w.drain(0.2) == 3
        assert time.monotonic() - t0 < 0.2 + 2.5
        assert [r.failure for r in results] == ["cancelled"] * 3
        assert w.inflight() == 0
        assert w.pid is not None  # drain cancels copies; the sender keeps running
    finally:
        w.close()


async def test_endpoints_cross_the_pipe_once_and_the_table_starts_over_when_full(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sender, "_MAX_ENDPOINTS", 2)
    w = ProcessWriter(timeout=5.0, max_inflight=100)
    sent: list[tuple[object, ...]] = []
    send = w._send
    monkeypatch.setattr(w, "_send", lambda m: (sent.append(m), send(m)))
    results: list[MirrorResult] = []
    try:
        w.start()
        # Five endpoint objects (as five config generations would build), each used twice.
        endpoints = [MirrorEndpoint(server.endpoint.host, server.endpoint.port) for _ in range(5)]
        for ep in endpoints + endpoints[-1:]:
            assert w.submit("k", ep, get(), results.append)
        await until(lambda: len(results) == 6)
        assert {r.status for r in results} == {200}
        kinds = [m[0] for m in sent]
        assert kinds.count("endpoint") == 5 and kinds.count("copy") == 6
        assert kinds.count("forget") == 2  # at the third and the fifth new endpoint
    finally:
        w.close()


def test_frames_survive_every_split_of_the_stream() -> None:
    messages = [
        [endpoint_message(i, MirrorEndpoint("h", i)), copy_message(i, "k", i, get(), 0)]
        for i in range(3)
    ]
    stream = b"".join(encode_frame(m) for m in messages)
    expected = [part for m in messages for part in m]
    for cut in range(len(stream) + 1):
        reader = FrameReader()
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert got == expected, cut
    reader = FrameReader()
    got = [m for byte in range(len(stream)) for m in reader.feed(stream[byte : byte + 1])]
    assert got == expected


def test_bad_arguments_raise_in_the_caller() -> None:
    with pytest.raises(ValueError, match="timeout"):
        ProcessWriter(timeout=0, max_inflight=1)
    with pytest.raises(ValueError, match="max_inflight"):
        ProcessWriter(timeout=1.0, max_inflight=0)


def test_the_child_finds_the_package_without_an_install() -> None:
    # The child gets this directory on PYTHONPATH, so that `mitmdump -s addons/mirror.py` works
    # from a checkout that was never pip-installed.
    assert (Path(sender._PACKAGE_ROOT) / "meshmirror" / "mirror" / "worker.py").is_file()
