"""Fixtures for end-to-end tests: proxies and extra HTTP servers, all stopped after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from tests.support import grpc_servers as gs
from tests.support.launch import Launcher
from tests.support.mitmdump import Proxy, start_proxy
from tests.support.servers import Recorder


@pytest.fixture
def proxies() -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(*args: object, **kwargs: object) -> Proxy:
        p = start_proxy(*args, **kwargs)  # type: ignore[arg-type]
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def backends() -> Iterator[tuple[Recorder, Recorder]]:
    """Two recording servers that answer `primary` and `mirror` (`meshmirror run`'s tests)."""
    primary, mirror = Recorder("primary"), Recorder("mirror")
    yield primary, mirror
    primary.close()
    mirror.close()


@pytest.fixture
def mirror_server() -> Iterator[HTTPServer]:
    """A second pytest-httpserver instance standing for the shadow service."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def second_mirror_server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    """mitmdumps started with `launch(upstream_port, configs, *options, ...)` (see
    tests/support/launch.py), stopped after the test."""
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.stop_all()


@pytest.fixture
def primary() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("").respond_with_data("primary")
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def grpc_servers() -> Iterator[Callable[..., gs.GrpcServer]]:
    """Start grpcio servers (tests/support/grpc_servers.py); all stopped after the test."""
    started: list[gs.GrpcServer] = []

    def start(name: str = "primary", **kw: object) -> gs.GrpcServer:
        server = gs.GrpcServer(name, **kw)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
