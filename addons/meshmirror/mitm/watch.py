"""Hot reload of `mirror_config`: notice that the files behind it changed.

- `fingerprint` summarises the files behind `mirror_config` (mtime and size of every file, and
  of every `*.yaml`/`*.yml` in a directory, so added and removed files count as changes).
- `ConfigWatcher` polls the fingerprint every `interval` seconds on the event loop and calls
  back when it changed; the callback starts a reload (the addon loads the whole set with
  `pipeline.load_config_set` in a worker thread and swaps the table in, on the loop, only when it
  has no error) and returns it, and the watcher waits for it before it polls again, so reloads
  never overlap. Only the stat() calls of a poll run on the loop.

Pure except for `ConfigWatcher`, which owns one asyncio task (strongly referenced; `stop()`
cancels it). It is started from the addon's sync `running()` and stopped from its sync `done()`,
so mitmproxy's script hot reload keeps working.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

from meshmirror.config.loader import YAML_SUFFIXES

log = logging.getLogger("meshmirror.reload")

Fingerprint = tuple[tuple[str, int, int], ...]


def _stat(path: str) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (path, -1, -1)
    return (path, st.st_mtime_ns, st.st_size)


def fingerprint(paths: Sequence[str]) -> Fingerprint:
    """(path, mtime_ns, size) for each path and each YAML file directly inside a directory."""
    out: list[tuple[str, int, int]] = []
    for path in paths:
        out.append(_stat(path))
        if os.path.isdir(path):
            try:
                names = sorted(os.listdir(path))
            except OSError:
                continue
            for name in names:
                if name.endswith(YAML_SUFFIXES):
                    out.append(_stat(os.path.join(path, name)))
    return tuple(out)


class ConfigWatcher:
    """Polls `fingerprint(paths)`; calls `on_change()` when it differs from the last one, and
    awaits what it returns when that is awaitable (a reload in progress).

    `rebase()` takes a new baseline (call it just before loading the files, so that a write
    during the load is seen by the next poll). `interval` 0 disables polling.
    """

    def __init__(self, on_change: Callable[[], Awaitable[object] | object]) -> None:
        self._on_change = on_change
        self.paths: tuple[str, ...] = ()
        self.interval = 2.0
        self._last: Fingerprint = ()
        self._task: asyncio.Task[None] | None = None

    def rebase(self, paths: Sequence[str]) -> None:
        self.paths = tuple(paths)
        self._last = fingerprint(self.paths)

    def changed(self) -> bool:
        """Compare with the baseline (without taking a new one)."""
        return fingerprint(self.paths) != self._last

    async def check(self) -> bool:
        """One poll: True (and `on_change` called and awaited) when the files changed."""
        if not self.paths or not self.changed():
            return False
        pending = self._on_change()
        if inspect.isawaitable(pending):
            # Shielded: turning polling off (mirror_reload_interval=0) must not cancel a reload
            # half way; it ends with its own outcome (the addon's done() drops it on exit).
            await asyncio.shield(pending)
        return True

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.running or self.interval <= 0:
            return
        self._task = loop.create_task(self._poll(), name="meshmirror config watcher")

    def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # a watcher that dies silently would stop all future reloads
                log.exception("meshmirror: config reload failed unexpectedly")
