"""The config being served: its first load, hot reloads, and the self-mirror loop check.

- `load` is the startup (and option change) path: any error is raised as `ConfigError`, which
  the addon turns into mitmproxy's `OptionsError` (startup stops with every located message).
- `reload` is the hot path (file watcher, `mirror.reload`): the whole set is loaded again and
  swapped in only when valid; otherwise the errors are logged and the last good generation
  keeps serving.
- `mark_self_mirrors` checks the mirror clusters against our own listen addresses once an
  OS-chosen port is known: those copies are skipped as `loop` rather than stopping the proxy.

Sync throughout: it runs from mitmproxy's `configure` and `running` and from the watcher.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from meshmirror.config.loader import PathError
from meshmirror.config.resources import LoadedResource
from meshmirror.diagnostics import Severity
from meshmirror.mitm.loop_guard import find_self_mirrors, self_mirror_diagnostics
from meshmirror.mitm.watch import ConfigWatcher
from meshmirror.pipeline import ConfigSet, load_config_set
from meshmirror.routing.table import RouteTable

log = logging.getLogger("meshmirror")


class ConfigError(Exception):
    """`mirror_config` cannot be served; the message is complete (the addon re-raises it)."""


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

    def load(self, paths: Sequence[str], gateway: str | None) -> None:
        self._config = (list(paths), gateway)
        self.watcher.rebase(paths)
        if not paths:
            self.table = None
            log.warning("meshmirror: no mirror_config set; requests pass through unmirrored")
            return
        try:
            cs = load_config_set(paths, gateway=gateway)
        except PathError as e:
            raise ConfigError(f"mirror_config: {e}") from e
        for d in cs.diagnostics:
            if d.severity is Severity.INFO:
                log.info(d.format())
            elif d.severity is Severity.WARNING:
                log.warning(d.format())
        if cs.table is not None and not cs.errors and self.listen:
            cs.diagnostics.extend(
                self_mirror_diagnostics(cs, find_self_mirrors(cs.table, self.listen))
            )
        if cs.errors or cs.table is None:
            lines = [d.format() for d in cs.errors] or ["no route table could be built"]
            raise ConfigError(
                f"mirror_config: {len(cs.errors)} error(s) in {', '.join(paths)}:\n"
                + "\n".join(lines)
            )
        self._install(cs, paths)

    def _install(self, cs: ConfigSet, paths: Sequence[str]) -> None:
        assert cs.table is not None
        self.generation += 1
        self._config_set = cs
        self.table = dataclasses.replace(cs.table, generation=self.generation)
        self._on_resources(cs.resources)
        self.mark_self_mirrors()
        counts = ", ".join(f"{v} {k}" for k, v in sorted(cs.counts().items()))
        mirrors = sum(len(r.mirrors) for vh in self.table.virtual_hosts for r in vh.routes)
        log.info(
            f"meshmirror: config generation {self.generation} loaded from {', '.join(paths)}: "
            f"{counts}; acting as {self.table.gateway or 'mesh'}; "
            f"{len(self.table.virtual_hosts)} virtual host(s), {mirrors} mirror policies"
        )

    def reload(self, why: str) -> bool:
        """Load mirror_config again; swap the table in only when the whole set is valid."""
        paths, gateway = self._config
        if not paths:
            log.info(f"meshmirror: {why}: mirror_config is empty, nothing to reload")
            return False
        self.watcher.rebase(paths)
        try:
            cs = load_config_set(paths, gateway=gateway)
        except PathError as e:
            return self._reject(why, [f"mirror_config: {e}"])
        if cs.table is not None and not cs.errors and self.listen:
            found = find_self_mirrors(cs.table, self.listen)
            cs.diagnostics.extend(self_mirror_diagnostics(cs, found))
        if cs.errors or cs.table is None:
            return self._reject(
                why, [d.format() for d in cs.errors] or ["no route table could be built"]
            )
        for d in cs.warnings:
            log.warning(d.format())
        log.info(f"meshmirror: {why}: config change is valid; swapping it in")
        self.reloads["loaded"] += 1
        self._install(cs, paths)
        return True

    def _reject(self, why: str, errors: list[str]) -> bool:
        self.reloads["rejected"] += 1
        for line in errors:
            log.error(f"meshmirror: {line}")
        log.error(
            f"meshmirror: {why}: config change rejected ({len(errors)} error(s)); "
            f"generation {self.generation} keeps serving"
        )
        return False

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
