"""The YAML reading layer: a multi-document stream -> plain data with the line of every path.

Kept apart from the loader's resource and kind handling because it knows nothing about Kubernetes:
it only turns text into dicts, lists and scalars, and refuses what yaml.safe_load would accept
silently or die on (duplicate keys, non-scalar keys, alias cycles, alias bombs, nesting deep enough
to exhaust Python's recursion limit). Every problem becomes a located Diagnostic; nothing here
raises for bad input.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import yaml

from meshmirror.diagnostics import Diagnostic, Path, Severity, Source

# Caps that keep hostile input (alias bombs, giant files) from exhausting memory or time. Nodes
# are counted as built, so an alias counts its whole expansion each time it is used. The file cap
# bounds a stream of documents that each stay under the document cap (40 such documents fit in
# 15 kB); a config set is read file by file, so each file has its own budget.
MAX_NODES_PER_DOCUMENT = 200_000
MAX_NODES_PER_FILE = 1_000_000
# Mappings and sequences nested deeper than this are refused: the builder and later stages recurse
# once per level, and libyaml accepts up to 1000 levels, deeper than Python's recursion limit
# leaves room for. Istio and Kubernetes resources stay under 20.
MAX_DEPTH = 100
# How much of a too-deep path a message shows (the path itself is MAX_DEPTH parts long).
_DEPTH_PATH_SHOWN = 6

_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class YamlDocument:
    """One non-empty document that built without errors, and the line of every path in it."""

    data: object
    source: Source
    positions: Mapping[Path, int]


def read_documents(text: str, file: str) -> Iterator[YamlDocument | Diagnostic]:
    """Documents and diagnostics of one YAML stream, in stream order.

    Lazy on purpose: a syntax error late in the stream is reported after everything the earlier
    documents produced, and the documents before it are still used. Once the documents together
    pass MAX_NODES_PER_FILE the rest of the stream is not read.
    """
    doc_index = 0
    file_nodes = 0  # nodes built by the documents before this one
    try:
        for node in yaml.compose_all(text, Loader=_SafeLoader):
            doc_index += 1
            if node is None:
                continue
            source = Source(file, doc_index, node.start_mark.line + 1)
            builder = DocumentBuilder(source, file_nodes)
            data = builder.build(node, ())
            file_nodes += builder.nodes
            yield from builder.diagnostics
            if builder.file_full:
                return
            if builder.failed:
                continue
            if data is None:
                # An explicitly empty document (`---` then `---`, common in generated YAML) is
                # skipped, as kubectl skips it.
                continue
            yield YamlDocument(data, source, builder.positions)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        col = f", column {mark.column + 1}" if mark else ""
        problem = " ".join(p for p in (e.context, e.problem) if p)
        yield Diagnostic(
            Severity.ERROR,
            f"YAML syntax error{col}: {problem}",
            source=Source(file, doc_index + 1, line),
        )
    except yaml.YAMLError as e:
        yield Diagnostic(Severity.ERROR, f"YAML error: {e}", source=Source(file, doc_index + 1))
    except RecursionError:
        # The builder refuses deep nesting before this can happen; this is the backstop for a
        # composer without libyaml's depth limit (PyYAML's pure-Python one recurses per level).
        yield Diagnostic(
            Severity.ERROR,
            f"nested too deeply to read (more than {MAX_DEPTH} levels of mappings and sequences)",
            source=Source(file, doc_index + 1),
        )


class DocumentBuilder:
    """Builds plain Python data from a composed YAML node, recording the line of every path.

    Unlike yaml.safe_load it reports duplicate keys (Kubernetes rejects them), non-scalar keys,
    alias cycles, alias bombs and deep nesting as located errors instead of silently keeping the
    last value, running out of memory or raising RecursionError. `file_nodes` is what the
    documents before this one in the same file built: `file_full` says the file's budget is spent.
    """

    def __init__(self, source: Source, file_nodes: int = 0) -> None:
        self.source = source
        self.positions: dict[Path, int] = {}
        self.diagnostics: list[Diagnostic] = []
        self.failed = False
        self.file_full = False
        self.nodes = 0
        self._file_nodes = file_nodes
        self._stack: set[int] = set()
        self._constructor = yaml.SafeLoader("")

    def _error(self, path: Path, message: str, line: int) -> None:
        self.diagnostics.append(
            Diagnostic(Severity.ERROR, message, source=self.source, path=path, line=line)
        )

    def build(self, node: yaml.Node, path: Path, depth: int = 0) -> object:
        if self.file_full:
            return None
        self.nodes += 1
        line = node.start_mark.line + 1
        if self._file_nodes + self.nodes > MAX_NODES_PER_FILE:
            docs = f"documents 1-{self.source.doc}" if self.source.doc > 1 else "document 1"
            self._error(
                path,
                f"file too large: {docs} build more than {MAX_NODES_PER_FILE} YAML nodes "
                f"(counting alias expansions; the limit is per file, {self._file_nodes} before "
                "this document); the rest of the file is not read",
                line,
            )
            self.failed = self.file_full = True
            return None
        if self.nodes > MAX_NODES_PER_DOCUMENT:
            if not self.failed:
                self._error(
                    path,
                    f"document too large (more than {MAX_NODES_PER_DOCUMENT} YAML nodes, "
                    "counting alias expansions)",
                    line,
                )
            self.failed = True
            return None
        if depth > MAX_DEPTH:
            if not self.failed:
                shown = path[:_DEPTH_PATH_SHOWN]
                self._error(
                    shown,
                    f"nested too deeply{' below here' if len(path) > len(shown) else ''}: "
                    f"more than {MAX_DEPTH} levels of mappings and sequences",
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
            except _SCALAR_ERRORS as e:
                self._error(path, _invalid_scalar(node, e), line)
                self.failed = True
                return None
        self._stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [
                    self.build(child, path + (i,), depth + 1) for i, child in enumerate(node.value)
                ]
            if isinstance(node, yaml.MappingNode):
                return self._build_mapping(node, path, depth)
        finally:
            self._stack.discard(id(node))
        self._error(path, "unsupported YAML node", line)
        self.failed = True
        return None

    def _build_mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[str, object]:
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
            try:
                key_obj = self._constructor.construct_object(key_node, deep=True)
            except _SCALAR_ERRORS as e:
                self._error(path, _invalid_scalar(key_node, e), kline)
                self.failed = True
                continue
            key = key_obj if isinstance(key_obj, str) else str(key_node.value)
            if key in out:
                self._error(path + (key,), f"duplicate key {key!r}", kline)
                self.failed = True
                continue
            # Point at the key's line: that is where a reader looks for a field.
            self.positions.setdefault(path + (key,), kline)
            out[key] = self.build(value_node, path + (key,), depth + 1)
        return out


# An explicit tag on a scalar that does not parse (`!!int foo`, `!!int ""`, `!!timestamp
# 2020-99-99`): PyYAML's constructors raise whatever Python raises (ValueError, IndexError,
# TypeError, binascii errors ...), not a YAMLError. Any of them is a message about that scalar.
_SCALAR_ERRORS = (Exception,)


def _invalid_scalar(node: yaml.ScalarNode, e: Exception) -> str:
    problem = getattr(e, "problem", None) or str(e)
    return f"invalid scalar {node.value!r} for tag {node.tag}: {problem}"
