"""Hot reload of `mirror_config`, and the config-time loop guard.

- `fingerprint` summarises the files behind `mirror_config` (mtime and size of every file, and
  of every `*.yaml`/`*.yml` in a directory, so added and removed files count as changes).
- `ConfigWatcher` polls the fingerprint every `interval` seconds on the event loop and calls
  back when it changed; the addon then loads the whole set with `configset.load_config_set`
  and swaps the table in only when it has no error (a bad change keeps the last good table).
- `find_self_mirrors` finds mirror endpoints equal to the proxy's own listen address: a copy sent
  there would come back as a new request and (without the marker header) be mirrored again.

Pure except for `ConfigWatcher`, which owns one asyncio task (strongly referenced; `stop()`
cancels it). It is started from the addon's sync `running()` and stopped from its sync `done()`,
so mitmproxy's script hot reload keeps working.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from meshmirror.configset import ConfigSet
from meshmirror.diagnostics import Diagnostic, Severity
from meshmirror.registry import Endpoint
from meshmirror.routes import MirrorPolicy, Route, RouteTable

log = logging.getLogger("meshmirror.reload")

Fingerprint = tuple[tuple[str, int, int], ...]
_YAML_SUFFIXES = (".yaml", ".yml")


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
                if name.endswith(_YAML_SUFFIXES):
                    out.append(_stat(os.path.join(path, name)))
    return tuple(out)


class ConfigWatcher:
    """Polls `fingerprint(paths)`; calls `on_change()` (sync) when it differs from the last one.

    `rebase()` takes a new baseline (call it just before loading the files, so that a write
    during the load is seen by the next poll). `interval` 0 disables polling.
    """

    def __init__(self, on_change: Callable[[], object]) -> None:
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

    def check(self) -> bool:
        """One poll: True (and `on_change` called) when the files changed."""
        if not self.paths or not self.changed():
            return False
        self._on_change()
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
                self.check()
            except Exception:  # a watcher that dies silently would stop all future reloads
                log.exception("meshmirror: config reload failed unexpectedly")


# --- loop guard -----------------------------------------------------------------------------

_ANY_HOSTS = frozenset({"", "0.0.0.0", "::", "*"})


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def same_address(endpoint_host: str, listen_host: str) -> bool:
    """Would a connection to `endpoint_host` reach a socket listening on `listen_host`?
    Loopback names are one machine; a wildcard listener accepts any local address we can tell."""
    e = endpoint_host.strip("[]").lower()
    h = listen_host.strip("[]").lower()
    if h in _ANY_HOSTS:
        return _is_loopback(e) or e in _ANY_HOSTS
    if e == h:
        return True
    return _is_loopback(e) and _is_loopback(h)


@dataclass(frozen=True, slots=True)
class SelfMirror:
    route: Route
    policy: MirrorPolicy
    endpoint: Endpoint
    listen: tuple[str, int]


def find_self_mirrors(table: RouteTable, listen: Iterable[tuple[str, int]]) -> list[SelfMirror]:
    """Every (route, mirror policy, endpoint) whose endpoint is one of our listen addresses."""
    addrs = [(h, p) for h, p in listen if p]
    found: list[SelfMirror] = []
    if not addrs:
        return found
    for vh in table.virtual_hosts:
        for route in vh.routes:
            for policy in route.mirrors:
                for ep in policy.cluster.endpoints:
                    for host, port in addrs:
                        if ep.port == port and same_address(ep.address, host):
                            found.append(SelfMirror(route, policy, ep, (host, port)))
                            break
    return found


def self_mirror_diagnostics(cs: ConfigSet, found: Sequence[SelfMirror]) -> list[Diagnostic]:
    """Located errors (file, line, VirtualService, YAML path) for `find_self_mirrors` hits."""
    out: list[Diagnostic] = []
    seen: set[tuple[str, str, str, int]] = set()
    for hit in found:
        route, policy, ep = hit.route, hit.policy, hit.endpoint
        key = (route.virtual_service, str(policy.source_path), ep.address, ep.port)
        if key in seen:
            continue
        seen.add(key)
        res = next(
            (
                r
                for r in cs.resources
                if r.kind == "VirtualService" and r.ref == route.virtual_service
            ),
            None,
        )
        ns, _, name = route.virtual_service.partition("/")
        out.append(
            Diagnostic(
                Severity.ERROR,
                f"mirror endpoint {ep.address}:{ep.port} of {policy.cluster.name} is this "
                f"proxy's own listen address {hit.listen[0] or '*'}:{hit.listen[1]}; every copy "
                "would come back to the proxy",
                source=res.source if res is not None else None,
                kind="VirtualService",
                namespace=ns,
                name=name,
                path=policy.source_path,
                line=res.line_of(policy.source_path) if res is not None else None,
            )
        )
    return out
