"""Schema validation of one resource's data against its pydantic model, errors in YAML terms.

pydantic reports locations in its own terms (union-member names, Python field names) and stops a
model at its first schema errors; users need the YAML path in the CRD's spelling, a hint for a
mistyped field and every mistake of a document at once. This module does that translation, once,
so the loader's kind dispatch only attaches the results to files and lines.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from meshmirror.config.base import Resource
from meshmirror.diagnostics import Path


def validate_model(
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
