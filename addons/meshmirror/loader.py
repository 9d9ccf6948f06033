"""Files, directories, multi-document YAML and `kind: List` -> typed resources + located messages.

A directory is one config set made of its own `*.yaml` / `*.yml` files in sorted order, as
`kubectl apply -f DIR` reads it. Kinds meshmirror does not model (Deployment, ServiceAccount, ...)
are skipped with one info line each. Every problem of every file is collected in one pass; nothing
here raises for bad input.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic
import yaml

from meshmirror.diagnostics import Diagnostic, Path, Severity, Source
from meshmirror.model import KINDS as _ISTIO_KINDS
from meshmirror.model import Resource
from meshmirror.model_gateway_api import GATEWAY_API_KINDS

DEFAULT_NAMESPACE = "default"
YAML_SUFFIXES = (".yaml", ".yml")
# Caps that keep hostile input (alias bombs, giant files) from exhausting memory or time.
MAX_NODES_PER_DOCUMENT = 200_000
MAX_FILE_BYTES = 16 * 1024 * 1024

#: (group, kind) -> (model, accepted versions): Istio and Kubernetes kinds plus the Gateway API.
KINDS = {**_ISTIO_KINDS, **GATEWAY_API_KINDS}

_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


class PathError(Exception):
    """A path that cannot be read at all (missing, unreadable): a usage error, not bad config."""


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files as given; directories expand to their own YAML files, sorted. Raises PathError."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            try:
                names = sorted(os.listdir(p))
            except OSError as e:
                raise PathError(f"{p}: cannot list directory: {e.strerror}") from e
            files.extend(
                os.path.join(p, n)
                for n in names
                if n.endswith(YAML_SUFFIXES) and os.path.isfile(os.path.join(p, n))
            )
        elif os.path.isfile(p):
            files.append(p)
        elif os.path.exists(p):
            raise PathError(f"{p}: not a regular file or directory")
        else:
            raise PathError(f"{p}: no such file or directory")
    return files


def discover_config_sets(root: str) -> list[str]:
    """Every directory under `root` (itself included) that holds YAML files, sorted."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(f.endswith(YAML_SUFFIXES) for f in filenames):
            found.append(dirpath)
    return sorted(found)


def load_paths(paths: Sequence[str]) -> LoadResult:
    """Load files and directories as one config set. Raises PathError for unreadable paths."""
    result = LoadResult()
    for f in expand_paths(paths):
        result.extend(load_file(f))
    return result


def load_file(path: str) -> LoadResult:
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            return _file_error(path, f"file too large ({size} bytes; limit {MAX_FILE_BYTES})")
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise PathError(f"{path}: cannot read: {e.strerror}") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return _file_error(path, f"not UTF-8 text (byte {e.start})")
    return load_text(text, path)


def _file_error(path: str, message: str) -> LoadResult:
    result = LoadResult(files=[path])
    result.diagnostics.append(Diagnostic(Severity.ERROR, message, source=Source(path, 0)))
    return result


def load_text(text: str, file: str = "<string>") -> LoadResult:
    """Parse one YAML stream (several documents) into resources and diagnostics."""
    result = LoadResult(files=[file])
    doc_index = 0
    try:
        for node in yaml.compose_all(text, Loader=_SafeLoader):
            doc_index += 1
            if node is None:
                continue
            source = Source(file, doc_index, node.start_mark.line + 1)
            builder = _Builder(source)
            data = builder.build(node, ())
            result.diagnostics.extend(builder.diagnostics)
            if builder.failed:
                continue
            if data is None:
                # An explicitly empty document (`---` then `---`, common in generated YAML) is
                # skipped, as kubectl skips it.
                continue
            _load_document(data, source, builder.positions, (), result)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        col = f", column {mark.column + 1}" if mark else ""
        problem = " ".join(p for p in (e.context, e.problem) if p)
        result.diagnostics.append(
            Diagnostic(
                Severity.ERROR,
                f"YAML syntax error{col}: {problem}",
                source=Source(file, doc_index + 1, line),
            )
        )
    except yaml.YAMLError as e:
        result.diagnostics.append(
            Diagnostic(Severity.ERROR, f"YAML error: {e}", source=Source(file, doc_index + 1))
        )
    return result


def _load_document(
    data: object,
    source: Source,
    positions: Mapping[Path, int],
    base: Path,
    result: LoadResult,
) -> None:
    def err(path: Path, message: str, *value: object) -> None:
        full = base + path
        line = _line_at(positions, full) or source.line
        d = Diagnostic(Severity.ERROR, message, source=source, path=full, line=line)
        if value:
            d = Diagnostic(
                Severity.ERROR, message, source=source, path=full, line=line, value=value[0]
            )
        result.diagnostics.append(d)

    if not isinstance(data, dict):
        err((), "a document must be a mapping with apiVersion and kind", _type_name(data))
        return
    kind = data.get("kind")
    api_version = data.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        err(("kind",), "kind is required")
        return
    if not isinstance(api_version, str) or not api_version:
        err(("apiVersion",), "apiVersion is required")
        return
    if kind == "List" and api_version == "v1":
        items = data.get("items")
        if not isinstance(items, list):
            err(("items",), "a List needs an items sequence")
            return
        for i, item in enumerate(items):
            _load_document(item, source, positions, base + ("items", i), result)
        return
    group, _, version = api_version.rpartition("/")
    entry = KINDS.get((group, kind))
    if entry is None:
        name = (
            data.get("metadata", {}).get("name") if isinstance(data.get("metadata"), dict) else None
        )
        result.diagnostics.append(
            Diagnostic(
                Severity.INFO,
                f"skipped {kind} ({api_version}){' ' + str(name) if name else ''}: "
                "not a kind meshmirror uses",
                source=source,
                path=base,
                line=_line_at(positions, base) or source.line,
            )
        )
        return
    model, versions = entry
    if version not in versions:
        err(
            ("apiVersion",),
            f"unsupported apiVersion for {kind}; use one of "
            + ", ".join(f"{group + '/' if group else ''}{v}" for v in versions),
            api_version,
        )
        return
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    obj, schema_errors = _validate_model(model, data)
    for path, message, value in schema_errors:
        extra: dict[str, Any] = {} if value is ... else {"value": value}
        result.diagnostics.append(
            Diagnostic(
                Severity.ERROR,
                message,
                source=source,
                kind=kind,
                namespace=str(meta.get("namespace") or DEFAULT_NAMESPACE),
                name=str(meta.get("name") or ""),
                path=path,
                line=_line_at(positions, base + path) or source.line,
                **extra,
            )
        )
    if obj is None:
        return
    if not obj.metadata.name:
        err(("metadata", "name"), "metadata.name is required")
        return
    line = _line_at(positions, base) or source.line
    result.resources.append(
        LoadedResource(
            obj=obj,
            source=Source(source.file, source.doc, line),
            positions=positions,
            base_path=base,
        )
    )


def _validate_model(
    model: type[Resource], data: dict[str, Any]
) -> tuple[Resource | None, list[tuple[Path, str, object]]]:
    """Validate `data`; on schema errors, also validate a copy without the offending values.

    The pruned copy lets the Istio rules run on the rest of the resource, so one typo does not
    hide the other mistakes of the same document (the resource is still reported as invalid and
    never compiled, since its errors are kept).
    """
    errors: list[tuple[Path, str, object]] = []
    current: object = data
    for _ in range(4):
        try:
            return model.model_validate(current), errors
        except pydantic.ValidationError as e:
            items = e.errors(include_url=False)
            described = [_describe_pydantic_error(item, current, model) for item in items]
            known = {(p, m) for p, m, _ in errors}
            errors.extend(d for d in described if (d[0], d[1]) not in known)
            pruned = copy.deepcopy(current)
            if not all(_prune(pruned, p) for p, _, _ in described):
                return None, errors
            current = pruned
    return None, errors


def _prune(data: object, path: Path) -> bool:
    """Remove the value at `path` (map key deleted, list item nulled). False if impossible."""
    if not path:
        return False
    parent = _resolve(data, list(path[:-1]))
    last = path[-1]
    if isinstance(parent, dict) and isinstance(last, str):
        parent.pop(last, None)
        return True
    if isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
        parent[last] = None
        return True
    return False


def _line_at(positions: Mapping[Path, int], path: Path) -> int | None:
    for end in range(len(path), -1, -1):
        line = positions.get(path[:end])
        if line is not None:
            return line
    return None


def _type_name(value: object) -> str:
    names: dict[type, str] = {dict: "mapping", list: "sequence", str: "string"}
    return names.get(type(value), type(value).__name__)


def _describe_pydantic_error(
    item: Mapping[str, Any], data: object, model: type[Resource]
) -> tuple[Path, str, object]:
    """Turn one pydantic error into (YAML path, message, offending value).

    pydantic's locations include union-member names (`int`, `str`) that are not YAML keys; they
    are dropped by walking the location alongside the document.
    """
    loc = list(item.get("loc", ()))
    kind = str(item.get("type", ""))
    path: list[str | int] = []
    current: object = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(current, dict) and isinstance(part, str):
            if part in current:
                path.append(part)
                current = current[part]
                continue
            if last or kind == "missing":
                path.append(part)
                current = None
            continue
        if isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path.append(part)
            current = current[part]
            continue
    value: object = item.get("input")
    if kind == "extra_forbidden":
        key = path[-1] if path else ""
        parent = _resolve(data, path[:-1])
        message = f"unknown field {key!r}"
        known = _known_fields(model, path[:-1], parent)
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        elif known:
            message += "; known fields: " + ", ".join(sorted(known))
        return tuple(path), message, ...
    if kind == "missing":
        return tuple(path), "field is required", ...
    msg = str(item.get("msg", "invalid value"))
    msg = msg[0].lower() + msg[1:] if msg else msg
    return tuple(path), msg, value


def _resolve(data: object, path: Sequence[str | int]) -> object:
    cur = data
    for p in path:
        if isinstance(cur, dict) and isinstance(p, str):
            cur = cur.get(p)
        elif isinstance(cur, list) and isinstance(p, int) and 0 <= p < len(cur):
            cur = cur[p]
        else:
            return None
    return cur


def _known_fields(
    model: type[pydantic.BaseModel], path: Sequence[str | int], parent: object
) -> list[str]:
    """The YAML spellings of the fields allowed at `path` inside `model`."""
    current: Any = model
    for p in path:
        if isinstance(p, int):
            continue
        fields = _alias_map(current)
        if p not in fields:
            return []
        current = _model_in(fields[p])
        if current is None:
            return []
    return sorted(_alias_map(current))


def _alias_map(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gen = model.model_config.get("alias_generator")
    for name, info in model.model_fields.items():
        alias = info.alias or (gen(name) if callable(gen) else name)
        out[str(alias)] = info.annotation
    return out


def _model_in(annotation: Any) -> type[pydantic.BaseModel] | None:
    """Find the model class inside `X | None`, `list[X | None]`, `dict[str, X]`."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


class _Builder:
    """Builds plain Python data from a composed YAML node, recording the line of every path.

    Unlike yaml.safe_load it reports duplicate keys (Kubernetes rejects them), non-scalar keys,
    alias cycles and alias bombs as located errors instead of silently keeping the last value or
    running out of memory.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self.positions: dict[Path, int] = {}
        self.diagnostics: list[Diagnostic] = []
        self.failed = False
        self._nodes = 0
        self._stack: set[int] = set()
        self._constructor = yaml.SafeLoader("")

    def _error(self, path: Path, message: str, line: int) -> None:
        self.diagnostics.append(
            Diagnostic(Severity.ERROR, message, source=self.source, path=path, line=line)
        )

    def build(self, node: yaml.Node, path: Path) -> object:
        self._nodes += 1
        line = node.start_mark.line + 1
        if self._nodes > MAX_NODES_PER_DOCUMENT:
            if not self.failed:
                self._error(
                    path,
                    f"document too large (more than {MAX_NODES_PER_DOCUMENT} YAML nodes, "
                    "counting alias expansions)",
                    line,
                )
            self.failed = True
            return None
        self.positions.setdefault(path, line)
        if id(node) in self._stack:
            self._error(path, "recursive YAML alias", line)
            self.failed = True
            return None
        if isinstance(node, yaml.ScalarNode):
            try:
                return self._constructor.construct_object(node, deep=True)
            except yaml.YAMLError as e:
                self._error(path, f"invalid scalar: {getattr(e, 'problem', e)}", line)
                self.failed = True
                return None
        self._stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self._build_mapping(node, path)
        finally:
            self._stack.discard(id(node))
        self._error(path, "unsupported YAML node", line)
        self.failed = True
        return None

    def _build_mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, object]:
        try:
            self._constructor.flatten_mapping(node)
        except yaml.YAMLError as e:
            self._error(
                path, f"invalid merge key: {getattr(e, 'problem', e)}", node.start_mark.line + 1
            )
            self.failed = True
            return {}
        out: dict[str, object] = {}
        for key_node, value_node in node.value:
            kline = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self._error(path, "mapping keys must be scalars", kline)
                self.failed = True
                continue
            key_obj = self._constructor.construct_object(key_node, deep=True)
            key = key_obj if isinstance(key_obj, str) else str(key_node.value)
            if key in out:
                self._error(path + (key,), f"duplicate key {key!r}", kline)
                self.failed = True
                continue
            # Point at the key's line: that is where a reader looks for a field.
            self.positions.setdefault(path + (key,), kline)
            out[key] = self.build(value_node, path + (key,))
        return out
