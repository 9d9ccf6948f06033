"""The config being served: its first load, hot reloads, and the self-mirror loop check.

- `load` is the startup (and option change) path, synchronous: any error is raised as
  `ConfigError`. At startup it first logs every line exactly as `meshmirror validate` prints it,
  errors at error level, so mitmproxy exits 1 with those lines and no traceback; at run time
  (`set mirror_config`) the addon raises it as an `OptionsError`.
- `reload_off_loop` is the hot path (file watcher, `mirror.reload` on a running proxy): the
  files are read, validated and compiled in a worker thread, so a large or hostile config never
  holds up mitmproxy's event loop; the result is swapped in on the loop, and only when valid.
  Otherwise the errors are logged, counted in `reloads.rejected`, and the last good generation
  keeps serving. `reload` does the same synchronously (no running loop: tests, scripts).
- A config that routes nothing (no VirtualService or HTTPRoute applies, an empty directory) is
  served, as the mesh would, with a warning saying what was removed and that every request now
  goes to the reverse upstream unmirrored; `state` says "empty" for `mirror.stats`.
- `mark_self_mirrors` checks the mirror clusters against our own listen addresses once an
  OS-chosen port is known: those copies are skipped as `loop` rather than stopping the proxy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshmirror.config.loader import PathError
from meshmirror.config.resources import LoadedResource
from meshmirror.diagnostics import Severity
from meshmirror.mitm.loop_guard import find_self_mirrors, self_mirror_diagnostics
from meshmirror.mitm.watch import ConfigWatcher
from meshmirror.pipeline import ConfigSet, load_config_set
from meshmirror.routing.table import RouteTable

log = logging.getLogger("meshmirror")

ROUTE_KINDS = ("VirtualService", "HTTPRoute")
# At most this many removed resources are named in the empty-config warning.
_NAMED = 10


class ConfigError(Exception):
    """`mirror_config` cannot be served; the message is complete (the addon re-raises it as an
    OptionsError at run time; at startup `load` has logged its lines already)."""


@dataclass(frozen=True)
class _Prepared:
    """A load done off the loop: the config set, or the lines of why there is none."""

    cs: ConfigSet | None
    errors: list[str]


def _prepare(
    paths: Sequence[str], gateway: str | None, listen: Sequence[tuple[str, int]] | None
) -> _Prepared:
    """Read, validate, compile and loop-check `paths`: no logging and no LiveConfig state, so it
    runs in a worker thread."""
    try:
        cs = load_config_set(paths, gateway=gateway)
    except PathError as e:
        return _Prepared(None, [f"mirror_config: {e}"])
    if cs.table is not None and not cs.errors and listen:
        cs.diagnostics.extend(self_mirror_diagnostics(cs, find_self_mirrors(cs.table, listen)))
    if cs.errors or cs.table is None:
        return _Prepared(cs, [d.format() for d in cs.errors] or ["no route table could be built"])
    return _Prepared(cs, [])


class LiveConfig:
    def __init__(
        self,
        watcher: ConfigWatcher,
        on_resources: Callable[[Sequence[LoadedResource]], None],
    ) -> None:
        self.watcher = watcher
        self._on_resources = on_resources
        self.table: RouteTable | None = None
        self.generation = 0
        self.reloads = {"loaded": 0, "rejected": 0}
        # Our own listen addresses (None: OS-chosen port, known only in running()), and the
        # mirror clusters found to point at them: their copies are skipped as `loop`.
        self.listen: list[tuple[str, int]] | None = None
        self.loop_clusters: frozenset[str] = frozenset()
        self._config: tuple[list[str], str | None] = ([], None)
        self._config_set: ConfigSet | None = None
        # Bumped by every `load`: a reload begun off the loop before it is stale and dropped.
        self._epoch = 0

    @property
    def state(self) -> str:
        """For `mirror.stats`: "unset" (no mirror_config), "none" (nothing loaded), "empty" (a
        table that routes nothing: every request goes to the reverse upstream) or "loaded"."""
        if not self._config[0]:
            return "unset"
        if self.table is None:
            return "none"
        return "loaded" if self.table.virtual_hosts else "empty"

    # --- startup and option changes (sync) ------------------------------------------------------

    def load(self, paths: Sequence[str], gateway: str | None, *, startup: bool = False) -> None:
        """Load `paths` now and serve them, or raise ConfigError (the served table is then left
        as it was). With `startup`, every message is logged in `meshmirror validate`'s order,
        errors at error level, and ConfigError only marks the failure."""
        self._config = (list(paths), gateway)
        self._epoch += 1
        self.watcher.rebase(paths)
        if not paths:
            self.table = None
            self._config_set = None
            log.warning("meshmirror: no mirror_config set; requests pass through unmirrored")
            return
        try:
            cs = load_config_set(paths, gateway=gateway)
        except PathError as e:
            # `meshmirror validate` prints the same line for a path it cannot read.
            line = f"meshmirror: {e}"
            if startup:
                log.error(line)
            raise ConfigError(f"mirror_config: {e}") from e
        if cs.table is not None and not cs.errors and self.listen:
            cs.diagnostics.extend(
                self_mirror_diagnostics(cs, find_self_mirrors(cs.table, self.listen))
            )
        failed = bool(cs.errors) or cs.table is None
        for d in cs.diagnostics:
            if d.severity is Severity.INFO:
                log.info(d.format())
            elif d.severity is Severity.WARNING:
                log.warning(d.format())
            elif startup:
                log.error(d.format())
        if failed:
            lines = [d.format() for d in cs.errors] or ["no route table could be built"]
            if startup:
                if not cs.errors:
                    log.error(lines[0])
                # `meshmirror validate`'s verdict line for the set
                log.error(
                    f"{', '.join(paths)}: INVALID: {len(cs.errors)} error(s), "
                    f"{len(cs.warnings)} warning(s)"
                )
            raise ConfigError(
                f"mirror_config: {len(cs.errors)} error(s) in {', '.join(paths)}:\n"
                + "\n".join(lines)
            )
        self._install(cs, paths, "startup" if startup else "mirror_config set")

    # --- hot reload -----------------------------------------------------------------------------

    def reload(self, why: str) -> bool:
        """Load mirror_config again now (on the calling thread); swap the table in only when the
        whole set is valid."""
        paths, gateway = self._config
        if not paths:
            log.info(f"meshmirror: {why}: mirror_config is empty, nothing to reload")
            return False
        self.watcher.rebase(paths)
        try:
            prepared = _prepare(paths, gateway, self.listen)
        except Exception as e:
            return self._failed(why, e)
        return self._commit(why, paths, prepared)

    async def reload_off_loop(self, why: str) -> bool:
        """`reload` with the loading in a worker thread and the swap on the loop. The caller
        runs one at a time; a `load` while it runs wins (this result is then dropped)."""
        paths, gateway = self._config
        if not paths:
            log.info(f"meshmirror: {why}: mirror_config is empty, nothing to reload")
            return False
        epoch = self._epoch
        # The baseline is taken before reading: a write during the load is seen by the next poll.
        self.watcher.rebase(paths)
        listen = list(self.listen) if self.listen else None
        try:
            prepared = await asyncio.to_thread(_prepare, list(paths), gateway, listen)
        except Exception as e:
            return self._failed(why, e)
        if epoch != self._epoch:
            log.info(f"meshmirror: {why}: reload dropped; mirror_config was set while it ran")
            return False
        return self._commit(why, paths, prepared)

    def _commit(self, why: str, paths: Sequence[str], prepared: _Prepared) -> bool:
        """On the loop: swap a valid load in, or reject it."""
        cs = prepared.cs
        if cs is None or prepared.errors:
            return self._reject(why, prepared.errors)
        for d in cs.warnings:
            log.warning(d.format())
        log.info(f"meshmirror: {why}: config change is valid; swapping it in")
        try:
            self._install(cs, paths, why)
        except Exception as e:
            return self._failed(why, e)
        self.reloads["loaded"] += 1
        return True

    def _failed(self, why: str, e: Exception) -> bool:
        """An exception where a located message was expected: a bug, but still a rejected change
        (the last good generation keeps serving), with its traceback for the report."""
        log.error(f"meshmirror: {why}: loading the config failed unexpectedly", exc_info=e)
        return self._reject(why, [f"internal error: {type(e).__name__}: {e}"])

    def _reject(self, why: str, errors: list[str]) -> bool:
        self.reloads["rejected"] += 1
        for line in errors:
            log.error(f"meshmirror: {line}")
        log.error(
            f"meshmirror: {why}: config change rejected ({len(errors)} error(s)); "
            f"generation {self.generation} keeps serving"
        )
        return False

    # --- serving --------------------------------------------------------------------------------

    def _install(self, cs: ConfigSet, paths: Sequence[str], why: str) -> None:
        assert cs.table is not None
        # First: this may refuse the set (a bad annotation), and must then leave all as it was.
        self._on_resources(cs.resources)
        previous = self._config_set
        self.generation += 1
        self._config_set = cs
        self.table = dataclasses.replace(cs.table, generation=self.generation)
        self.mark_self_mirrors()
        counts = ", ".join(f"{v} {k}" for k, v in sorted(cs.counts().items())) or "no resources"
        mirrors = sum(len(r.mirrors) for vh in self.table.virtual_hosts for r in vh.routes)
        log.info(
            f"meshmirror: config generation {self.generation} loaded from {', '.join(paths)}: "
            f"{counts}; acting as {self.table.gateway or 'mesh'}; "
            f"{len(self.table.virtual_hosts)} virtual host(s), {mirrors} mirror policies"
        )
        if not self.table.virtual_hosts:
            log.warning(_empty_warning(why, self.generation, self.table, cs, previous))

    def mark_self_mirrors(self) -> None:
        """Mirror clusters pointing at our own OS-chosen listen address (checked once the
        port is known): their copies are skipped as `loop` instead of stopping the proxy."""
        table, cs = self.table, self._config_set
        if table is None or cs is None or not self.listen:
            self.loop_clusters = frozenset()
            return
        found = find_self_mirrors(table, self.listen)
        self.loop_clusters = frozenset(h.policy.cluster.name for h in found)
        for d in self_mirror_diagnostics(cs, found):
            # A warning, not an error: mitmproxy exits on errors logged during startup.
            log.warning(f"meshmirror: {d.format()}; its copies are skipped: loop")


def _routes(cs: ConfigSet | None) -> list[str]:
    if cs is None:
        return []
    return [f"{r.kind} {r.ref}" for r in cs.resources if r.kind in ROUTE_KINDS]


def _empty_warning(
    why: str, generation: int, table: RouteTable, cs: ConfigSet, previous: ConfigSet | None
) -> str:
    """What a table without virtual hosts means, and what made it so."""
    present = set(_routes(cs))
    removed = [r for r in dict.fromkeys(_routes(previous)) if r not in present]
    if removed:
        named = ", ".join(removed[:_NAMED])
        if len(removed) > _NAMED:
            named += f" and {len(removed) - _NAMED} more"
        cause = f"removed {named}"
    elif present:
        where = table.gateway or "the mesh"
        cause = f"none of its {len(present)} VirtualService/HTTPRoute(s) applies to {where}"
    elif not cs.files:
        cause = "no YAML file in " + ", ".join(cs.paths)
    else:
        cause = "no VirtualService or HTTPRoute in it"
    now = " now" if previous is not None else ""
    return (
        f"meshmirror: {why}: config generation {generation} routes nothing ({cause}): "
        f"every request{now} goes to the reverse upstream and none is mirrored"
    )
