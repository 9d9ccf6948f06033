"""mitmweb as a user sees it, in a real headless Chromium: `meshmirror run --web` with a primary
and a mirror whose answer to /users/1 comes last, four requests, then the flow list itself.

- Originals and copies are told apart in any font: their markers are drawn as glyphs, not as the
  missing-glyph box an emoji becomes without an emoji font (checked on screenshots: a marker
  must not look like a character no font has).
- A copy's URL is where it went: the mirror's address, not the shadow Host with its port.
- Copies are listed right after their originals, in the originals' order, whenever they finish.
- The pairing is one filter away: the filter an original's comment names lists it with its copy.
"""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import meshconfig as mc
from tests.support.browser import NO_CHROMIUM, Browser, find_chromium
from tests.support.meshmirror_run import Running
from tests.support.processes import wait_for
from tests.support.procfs import listening_ports, process_tree
from tests.support.servers import FaultServer, Recorder, keep_alive_requests

PATHS = [f"/users/{i}" for i in range(1, 5)]
SLOW = "/users/1"  # its copy is answered last

# Each row of the flow list: the path cell's text (without the marker), the marker, the comment
# cell and the marker's box on the page (mitmweb 12 and 11 alike: td.col-path, span.marker).
ROWS_JS = """
[...document.querySelectorAll('tbody tr')].filter(tr => tr.querySelector('td.col-path')).map(tr => {
  const path = tr.querySelector('td.col-path');
  const marker = path.querySelector('.marker');
  const comment = tr.querySelector('td.col-comment');
  const status = tr.querySelector('td.col-status');
  const box = marker ? marker.getBoundingClientRect() : null;
  return {
    url: [...path.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join(''),
    marker: marker ? marker.textContent : '',
    comment: comment ? comment.textContent : null,
    status: status ? status.textContent.trim() : '',
    box: box ? {x: box.x, y: box.y, width: box.width, height: box.height} : null,
  };
})
"""


def mirror_handler(conn: socket.socket) -> None:
    """Answers each copy; the one for SLOW after a second."""
    for head in keep_alive_requests(conn, 100, timeout=10):
        if b" " + SLOW.encode() + b" " in head.split(b"\r\n", 1)[0] + b" ":
            time.sleep(1.0)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nshadow")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    executable = find_chromium()
    if executable is None:
        pytest.skip(NO_CHROMIUM)
    b = Browser(executable, tmp_path)
    yield b
    b.close()


def web_port(run: Running, proxy_port: int) -> int:
    """mitmweb's own port (it prints the configured 0): the other one it listens on."""

    def found() -> int | None:
        for pid in process_tree(run.proc.pid):
            try:
                ports = listening_ports(pid) - {proxy_port}
            except OSError:
                continue
            if ports:
                return ports.pop()
        return None

    return wait_for(found, timeout=30, what="mitmweb's web server")


def glyph_drawn(b: Browser, row: int, shots: Path, name: str) -> bool:
    """Whether the marker of the row-th flow is drawn as a glyph: its screenshot differs from
    the same place showing a character no font has (U+0378, unassigned: the missing-glyph box)
    and from the same place empty."""
    box = b.evaluate(f"({ROWS_JS})[{row}].box")
    clip = {"x": box["x"], "y": box["y"], "width": max(box["width"], 8), "height": box["height"]}
    marker = f"[...document.querySelectorAll('tbody td.col-path .marker')][{row}]"
    original = b.evaluate(f"{marker}.textContent")
    drawn = b.screenshot(shots / f"{name}.png", clip)
    b.evaluate(f"{marker}.textContent = '\\u0378'")
    missing = b.screenshot(shots / f"{name}-missing.png", clip)
    b.evaluate(f"{marker}.textContent = ''")
    empty = b.screenshot(clip=clip)
    b.evaluate(f"{marker}.textContent = {original!r}")
    return drawn not in (missing, empty)


def has_emoji_font() -> bool:
    try:
        out = subprocess.run(
            ["fc-list", ":charset=1f47b"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return True  # unknown: do not rely on its absence
    return bool(out.stdout.strip())


def test_mitmweb_shows_copies_readably_where_they_went_and_beside_their_originals(
    tmp_path: Path, browser: Browser
) -> None:
    primary = Recorder("primary")
    mirror = FaultServer(mirror_handler)
    try:
        cfg = mc.mirror_config(
            tmp_path / "c.yaml",
            primary.port,
            {"shadow.local": mc.service_entry("shadow", "shadow.local", mirror.port)},
        )
        run = Running(
            "--web",
            "-f",
            str(cfg),
            "--primary",
            primary.url,
            "--",
            "--set",
            "web_port=0",
            "--set",
            "web_open_browser=false",
        )
        try:
            proxy_port = run.port()
            for path in PATHS:  # one after another, a new connection each, as curl does
                conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
                conn.request("GET", path, headers={"Host": "app.example.com"})
                assert conn.getresponse().read() == b"primary"
                conn.close()
            port = web_port(run, proxy_port)
            token = re.search(r"\?token=(\w+)", run.output)
            base = f"http://127.0.0.1:{port}/"
            browser.open(base + (f"?token={token.group(1)}" if token else ""))
            rows: list[dict[str, Any]] = browser.wait(
                f"(() => {{ const r = {ROWS_JS}; return r.length === 8 && "
                "r.every(x => x.status === '200') && r; })()",
                timeout=30,
                what="four originals and four copies, all answered",
            )
            browser.screenshot(tmp_path / "flow-list.png")
            check_rows(rows, mirror.port)
            assert glyph_drawn(browser, 0, tmp_path, "original-marker")
            assert glyph_drawn(browser, 1, tmp_path, "copy-marker")
            if not has_emoji_font():
                # The check can fail: without an emoji font the old ghost marker is the
                # missing-glyph box.
                browser.evaluate(
                    "[...document.querySelectorAll('tbody td.col-path .marker')][3]"
                    ".textContent = '\\u{1F47B}'"
                )
                assert not glyph_drawn(browser, 3, tmp_path, "ghost")

            # One filter away: the filter the original's comment names shows the pair.
            shown = re.search(r"~comment (\w+)", rows[0]["comment"])
            assert shown, rows[0]
            # A new page load (the query differs): mitmweb reads its filter from the URL then.
            browser.open(f"{base}?pair=1#/flows?s={shown.group(0).replace(' ', '%20')}")
            pair: list[dict[str, Any]] = browser.wait(
                f"(() => {{ const r = {ROWS_JS}; return r.length === 2 && r; }})()",
                timeout=30,
                what="the filtered list",
            )
            browser.screenshot(tmp_path / "filtered.png")
            assert [r["url"] for r in pair] == [rows[0]["url"], rows[1]["url"]], pair
        finally:
            assert run.interrupt() == 0, run.output[-3000:]
    finally:
        primary.close()
        mirror.close()
    assert (tmp_path / "flow-list.png").stat().st_size > 5000


def check_rows(rows: list[dict[str, Any]], mirror_port: int) -> None:
    originals, copies = rows[0::2], rows[1::2]
    # Each copy right after its original, in the order the requests came.
    order = [(re.search(r"/users/\d+$", r["url"]) or re.search("$", "")).group(0) for r in rows]
    assert order == [p for p in PATHS for _ in (0, 1)], rows
    for path, original, copy in zip(PATHS, originals, copies, strict=True):
        assert original["url"].endswith(path) and "-shadow" not in original["url"], rows
        # Where the copy went: the mirror's own address (its Host header says app...-shadow).
        assert copy["url"] == f"http://127.0.0.1:{mirror_port}{path}", rows
        # Markers that differ, and text characters, not emoji.
        assert (original["marker"], copy["marker"]) == ("\u25aa", "\u2194"), rows
        # The comment column names the pairing: the original's filter, the copy's original.
        key = re.search(r"~comment (\w+)", original["comment"] or "")
        assert key, original
        assert key.group(1) in (copy["comment"] or ""), (original, copy)
