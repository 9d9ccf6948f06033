"""Diagnostics that point back at the HTTPRoute: a generated VirtualService remembers its origin.

A VirtualService made from HTTPRoutes has no file of its own. `ConvertedResource` keeps, for each
generated `spec.http[k]`, the HTTPRoute it came from and a map from Istio sub-paths to HTTPRoute
paths, so every later diagnostic (validation, compile, `explain`) names the user's file, document
and YAML path instead of a VirtualService nobody wrote. Used by the conversion modules
(gatewayapi_rules, gatewayapi); depends only on the loader and diagnostics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshmirror.config.resources import LoadedResource
from meshmirror.diagnostics import Diagnostic, Path, Severity

_NO_VALUE: Any = ...


@dataclass(frozen=True)
class RuleOrigin:
    """Where one generated `http[k]` came from: the HTTPRoute, and the HTTPRoute path of each
    sub-path of the Istio route (`("route", 0)` -> `spec.rules[1].backendRefs[0]`)."""

    res: LoadedResource
    paths: Mapping[Path, Path]


@dataclass(frozen=True)
class ConvertedResource(LoadedResource):
    """A VirtualService generated from HTTPRoutes; its diagnostics name the HTTPRoute."""

    origins: tuple[RuleOrigin, ...] = ()
    first: LoadedResource | None = field(default=None, compare=False, repr=False)
    head_paths: Mapping[Path, Path] = field(default_factory=dict, compare=False, repr=False)

    def origin_of(self, path: Path) -> tuple[LoadedResource, Path]:
        """The HTTPRoute resource and path that a VirtualService path stands for."""
        path = tuple(path)
        if len(path) >= 3 and path[:2] == ("spec", "http") and isinstance(path[2], int):
            k = path[2]
            if 0 <= k < len(self.origins):
                origin = self.origins[k]
                return origin.res, _translate(origin.paths, path[3:])
        assert self.first is not None
        return self.first, _translate(self.head_paths, path)

    def line_of(self, path: Path) -> int | None:
        res, translated = self.origin_of(path)
        return res.line_of(translated)

    def diag(
        self,
        severity: Severity,
        path: Path,
        message: str,
        value: object = _NO_VALUE,
        code: str | None = None,
    ) -> Diagnostic:
        res, translated = self.origin_of(path)
        return res.diag(severity, translated, message, value, code)


def _translate(paths: Mapping[Path, Path], sub: Path) -> Path:
    for end in range(len(sub), -1, -1):
        found = paths.get(sub[:end])
        if found is not None:
            return found
    return ()
