"""Located configuration messages: one format for every error and warning.

Every message names where it comes from (file, line, document, kind, namespace/name), the YAML path
in the CRD's spelling and the offending value, so a user can fix all mistakes in one pass:

    configs/vs.yaml:14: doc 1 (VirtualService default/httpbin): spec.http[0].timeout:
        only durations to ms precision are supported (got '1.0005s')

A message that states the value itself (Istio's percentage messages: `(it has 150.000000)`)
carries no value, so it is not shown twice.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PathPart = str | int
Path = tuple[PathPart, ...]


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """info < warning < error, for thresholds."""
        return _RANK[self]


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}

#: istioctl analyze's level for the analysis codes meshmirror reports (its messages.yaml):
#: `meshmirror validate` rates findings by these; the proxy serves with them as warnings.
ANALYZER_LEVELS: dict[str, Severity] = {
    "IST0101": Severity.ERROR,  # ReferencedResourceNotFound
    "IST0112": Severity.ERROR,  # VirtualServiceDestinationPortSelectorRequired
}


@dataclass(frozen=True, slots=True)
class Source:
    """Where a document came from: file, 1-based document index and the line its object starts."""

    file: str
    doc: int
    line: int | None = None


_NO_VALUE = object()


@dataclass(frozen=True)
class Diagnostic:
    """One located message. `severity` is how meshmirror acts on it (an error stops a load; the
    proxy starts with warnings); `level` is how `istioctl analyze` rates it, for validate."""

    severity: Severity
    message: str
    source: Source | None = None
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    path: Path = ()
    value: object = field(default=_NO_VALUE, compare=False)
    line: int | None = None
    code: str | None = None  # istioctl analyze code where one exists, e.g. IST0101

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    @property
    def level(self) -> Severity:
        """The analyzer's level for an analysis code (IST0101 is an Error to istioctl, though
        the proxy serves with it), else the severity."""
        return ANALYZER_LEVELS.get(self.code or "", self.severity)

    @property
    def has_value(self) -> bool:
        return self.value is not _NO_VALUE

    def format(self, severity: Severity | None = None) -> str:
        """`file:line: doc N (Kind ns/name): path: message (got value)`, prefixed with the
        severity (or `severity`, e.g. the analyzer's level) unless it is an error."""
        parts: list[str] = []
        if self.source is not None:
            line = self.line if self.line is not None else self.source.line
            where = f"{self.source.file}:{line}" if line is not None else self.source.file
            obj = f"doc {self.source.doc}"
            if self.kind:
                ident = "/".join(_printable(p) for p in (self.namespace, self.name) if p)
                obj += f" ({self.kind} {ident})" if ident else f" ({self.kind})"
            parts.append(f"{where}: {obj}")
        if self.path:
            parts.append(format_path(self.path))
        text = self.message
        if self.code:
            text = f"{self.code} {text}"
        if self.has_value:
            text += f" (got {format_value(self.value)})"
        parts.append(text)
        shown = severity or self.severity
        prefix = "" if shown is Severity.ERROR else f"{shown.value}: "
        return prefix + ": ".join(parts)

    def __str__(self) -> str:
        return self.format()


def format_path(path: Sequence[PathPart]) -> str:
    """`("spec", "http", 0, "mirror")` -> `spec.http[0].mirror` (map keys with dots are quoted)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and all(c.isalnum() or c in "_-@" for c in part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _printable(name: str) -> str:
    """A resource name as a message shows it: with any non-printable character escaped, as
    `repr` escapes it (the name comes from the user's YAML)."""
    return name if name.isprintable() else repr(name)[1:-1]


def format_value(value: object, limit: int = 120) -> str:
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


class ConfigError(Exception):
    """Raised by entry points (CLI, addon) that need the whole set of errors as one exception."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.format() for d in self.errors))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]


def errors_of(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.is_error]
