"""What loading produces: typed resources that remember their file and lines, and the result set.

These types are what every later stage (validate, registry, routes, analysis) consumes, so they
live apart from the reading and dispatch code and depend only on the model and diagnostics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshmirror.config.base import Resource
from meshmirror.diagnostics import Diagnostic, Path, Severity, Source

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class LoadedResource:
    """One typed resource with where it came from and the line of every YAML path inside it."""

    obj: Resource
    source: Source
    positions: Mapping[Path, int] = field(default_factory=dict, compare=False, repr=False)
    base_path: Path = ()  # ("items", 3) for members of a `kind: List`

    @property
    def kind(self) -> str:
        return self.obj.kind

    @property
    def name(self) -> str:
        return self.obj.metadata.name

    @property
    def namespace(self) -> str:
        return self.obj.metadata.namespace or DEFAULT_NAMESPACE

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def line_of(self, path: Path) -> int | None:
        """Line of the deepest existing prefix of `path` (relative to the resource)."""
        full = self.base_path + tuple(path)
        for end in range(len(full), -1, -1):
            line = self.positions.get(full[:end])
            if line is not None:
                return line
        return self.source.line

    def diag(
        self,
        severity: Severity,
        path: Path,
        message: str,
        value: object = ...,
        code: str | None = None,
    ) -> Diagnostic:
        kwargs: dict[str, Any] = {}
        if value is not ...:
            kwargs["value"] = value
        return Diagnostic(
            severity=severity,
            message=message,
            source=self.source,
            kind=self.kind,
            namespace=self.namespace,
            name=self.name,
            path=tuple(path),
            line=self.line_of(path),
            code=code,
            **kwargs,
        )


@dataclass
class LoadResult:
    resources: list[LoadedResource] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    def extend(self, other: LoadResult) -> None:
        self.resources.extend(other.resources)
        self.diagnostics.extend(other.diagnostics)
        self.files.extend(other.files)
