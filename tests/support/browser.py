"""A real headless Chromium for the tests that look at pages (mitmweb, the report), driven over
the Chrome DevTools Protocol: load a URL, run JavaScript in the page, take screenshots.

Chromium is Debian's package, which scripts/setup installs as root (`find_chromium` says None
where there is none). It starts with a fresh profile in the test's directory, without network
services of its own (no background networking, component updates, sync or first-run), on a
DevTools port the OS picks; it is stopped by its pid. The protocol runs over one WebSocket
(wsproto, a dependency of mitmproxy), one command at a time; every wait has a deadline.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from tests.support.processes import spawn, stop, wait_for

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--remote-allow-origins=*",
)
NO_CHROMIUM = (
    "no headless browser: Debian's chromium is not installed (scripts/setup installs it when it "
    "runs as root with apt)"
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class CdpError(Exception):
    """The browser answered a command with an error, or the page's script threw."""


class Browser:
    """One headless Chromium with one page."""

    def __init__(self, executable: str, workdir: Path, width: int = 1280, height: int = 800):
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self.log = (workdir / "chromium.log").open("wb")
        self.proc = spawn(
            [
                executable,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=self.log,
        )
        try:
            port_file = profile / "DevToolsActivePort"
            text = wait_for(
                lambda: port_file.exists() and port_file.read_text(),
                timeout=60,
                what="Chromium's DevTools port",
                check=self._exited,
            )
            port = int(text.split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            self._ws = _WebSocket(pages[0]["webSocketDebuggerUrl"])
            self._next = 0
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _exited(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"chromium exited with {self.proc.returncode}")

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """One DevTools command and its result (events in between are dropped)."""
        self._next += 1
        ident = self._next
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self._ws.receive(deadline))
            if msg.get("id") != ident:
                continue
            if "error" in msg:
                raise CdpError(f"{method}: {msg['error']}")
            result: dict[str, Any] = msg.get("result", {})
            return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def wait(self, expression: str, timeout: float = 30.0, what: str = "") -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        return wait_for(
            lambda: self.evaluate(expression),
            timeout=timeout,
            interval=0.1,
            what=what or expression,
            check=self._exited,
        )

    def screenshot(self, path: Path | None = None, clip: dict[str, float] | None = None) -> bytes:
        """A PNG of the page (or of `clip`: x, y, width, height in CSS pixels)."""
        params: dict[str, Any] = {"format": "png"}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        data = base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])
        if path is not None:
            path.write_bytes(data)
        return data

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            ws.close()
        stop(self.proc)
        self.log.close()


class _WebSocket:
    """A minimal blocking WebSocket client (text messages) on top of wsproto."""

    def __init__(self, url: str) -> None:
        assert url.startswith("ws://"), url
        hostport, _, path = url[len("ws://") :].partition("/")
        host, _, port = hostport.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host=hostport, target="/" + path)))
        self._parts: list[str] = []
        self._ready: list[str] = []
        deadline = time.monotonic() + 30
        while True:
            event = self._event(deadline)
            if isinstance(event, AcceptConnection):
                break
            if isinstance(event, RejectConnection):
                raise CdpError("the browser refused the DevTools connection")

    def _event(self, deadline: float) -> object:
        while True:
            for event in self.ws.events():
                if isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                    continue
                if isinstance(event, CloseConnection):
                    raise CdpError("the browser closed the DevTools connection")
                if isinstance(event, TextMessage):
                    self._parts.append(event.data)
                    if event.message_finished:
                        self._ready.append("".join(self._parts))
                        self._parts = []
                    continue
                if isinstance(event, Message):
                    continue
                return event
            if self._ready:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer from the browser")
            self.sock.settimeout(remaining)
            data = self.sock.recv(1 << 20)
            if not data:
                raise CdpError("the browser closed the DevTools connection")
            self.ws.receive_data(data)

    def send(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def receive(self, deadline: float) -> str:
        while not self._ready:
            self._event(deadline)
        return self._ready.pop(0)

    def close(self) -> None:
        try:
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        except Exception:  # noqa: BLE001 - closing a connection the browser may have dropped
            pass
        self.sock.close()
