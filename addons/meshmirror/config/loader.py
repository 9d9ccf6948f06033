"""Files, directories, multi-document YAML and `kind: List` -> typed resources + located messages.

A directory is one config set made of its own `*.yaml` / `*.yml` files in sorted order, as
`kubectl apply -f DIR` reads it. Kinds meshmirror does not model (Deployment, ServiceAccount, ...)
are skipped with one info line each; a directory that gives no YAML file, and a YAML name in it
that is not a file (a broken symlink, a symlink loop), is a warning. Every problem of every file is
collected in one pass; nothing here raises for bad input.

This module is the file-system side (paths, directories, size and encoding checks). Beside it in
`config/`, each importable on its own:

    documents       text -> plain data + line of every path (duplicate keys, node caps per
                    document and per file, nesting depth)
    kinds           one document's data -> typed resource, by (group, kind) and apiVersion
    schema_errors   pydantic validation with errors translated to YAML paths and hints
    resources       LoadedResource / LoadResult, the types every later stage consumes
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from meshmirror.config.documents import read_documents
from meshmirror.config.kinds import load_document
from meshmirror.config.resources import LoadResult
from meshmirror.diagnostics import Diagnostic, Severity, Source

YAML_SUFFIXES = (".yaml", ".yml")
# Caps that keep hostile input (alias bombs, giant files) from exhausting memory or time; the
# node caps (MAX_NODES_PER_DOCUMENT, MAX_NODES_PER_FILE) and the nesting cap (MAX_DEPTH) live
# with the YAML reader that enforces them, config/documents.py.
MAX_FILE_BYTES = 16 * 1024 * 1024


class PathError(Exception):
    """A path that cannot be read at all (missing, unreadable): a usage error, not bad config."""


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files as given; directories expand to their own YAML files, sorted. Raises PathError."""
    return _expand(paths, [])


def _expand(paths: Iterable[str], notes: list[Diagnostic]) -> list[str]:
    """expand_paths, adding a warning to `notes` for each directory that gives no YAML file and
    for each YAML name in a directory that is not a readable file (a broken link, a loop)."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            try:
                names = sorted(os.listdir(p))
            except OSError as e:
                raise PathError(f"{p}: cannot list directory: {e.strerror}") from e
            found = 0
            for n in names:
                if not n.endswith(YAML_SUFFIXES):
                    continue
                full = os.path.join(p, n)
                if os.path.isfile(full):
                    files.append(full)
                    found += 1
                elif not os.path.isdir(full):
                    notes.append(
                        _warning(f"{full}: skipped: not a file (a broken symlink or a loop)")
                    )
            if not found:
                notes.append(_warning(f"{p}: no YAML file (*.yaml, *.yml) in this directory"))
        elif os.path.isfile(p):
            files.append(p)
        elif os.path.exists(p):
            raise PathError(f"{p}: not a regular file or directory")
        else:
            raise PathError(f"{p}: no such file or directory")
    return files


def _warning(message: str) -> Diagnostic:
    return Diagnostic(Severity.WARNING, message)


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
    files = _expand(paths, result.diagnostics)
    for f in files:
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
    for item in read_documents(text, file):
        if isinstance(item, Diagnostic):
            result.diagnostics.append(item)
        else:
            load_document(item.data, item.source, item.positions, (), result)
    return result
