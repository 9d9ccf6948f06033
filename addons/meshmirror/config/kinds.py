"""Kind dispatch: one YAML document's data -> a typed resource (or `kind: List` members).

Looks up (group, kind) in the joined Istio / Kubernetes / Gateway API table, checks apiVersion,
hands the data to the model (schema errors translated into located messages) and attaches every
message to its file, document and line. Kinds meshmirror does not model are skipped with one info
line each. Pure: no files, no YAML parsing; nothing here raises for bad input.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from meshmirror.config.base import Resource
from meshmirror.config.destinations import (
    DestinationRule,
    KubernetesService,
    ServiceEntry,
    WorkloadEntry,
)
from meshmirror.config.gateway_api import GATEWAY_API_KINDS
from meshmirror.config.istio_gateway import Gateway
from meshmirror.config.resources import DEFAULT_NAMESPACE, LoadedResource, LoadResult
from meshmirror.config.schema_errors import validate_model
from meshmirror.config.virtualservice import VirtualService
from meshmirror.diagnostics import Diagnostic, Path, Severity, Source

ISTIO_NETWORKING = "networking.istio.io"
ISTIO_VERSIONS = ("v1alpha3", "v1beta1", "v1")

_ISTIO_KINDS: dict[tuple[str, str], tuple[type[Resource], tuple[str, ...]]] = {
    (ISTIO_NETWORKING, "VirtualService"): (VirtualService, ISTIO_VERSIONS),
    (ISTIO_NETWORKING, "DestinationRule"): (DestinationRule, ISTIO_VERSIONS),
    (ISTIO_NETWORKING, "ServiceEntry"): (ServiceEntry, ISTIO_VERSIONS),
    (ISTIO_NETWORKING, "WorkloadEntry"): (WorkloadEntry, ISTIO_VERSIONS),
    (ISTIO_NETWORKING, "Gateway"): (Gateway, ISTIO_VERSIONS),
    ("", "Service"): (KubernetesService, ("v1",)),
}

#: (group, kind) -> (model, accepted versions), the core group being "": Istio and Kubernetes
#: kinds plus the Gateway API.
KINDS = {**_ISTIO_KINDS, **GATEWAY_API_KINDS}

#: Every kind of the API groups meshmirror reads, read or not: a kind outside these lists is a
#: typo the API server would refuse ("no matches for kind"), not a kind to skip.
GROUP_KINDS: dict[str, frozenset[str]] = {
    ISTIO_NETWORKING: frozenset(
        {
            "VirtualService",
            "DestinationRule",
            "ServiceEntry",
            "WorkloadEntry",
            "WorkloadGroup",
            "Gateway",
            "Sidecar",
            "EnvoyFilter",
            "ProxyConfig",
        }
    ),
    "gateway.networking.k8s.io": frozenset(
        {
            "Gateway",
            "GatewayClass",
            "HTTPRoute",
            "GRPCRoute",
            "TCPRoute",
            "TLSRoute",
            "UDPRoute",
            "ReferenceGrant",
            "BackendTLSPolicy",
            "ListenerSet",
        }
    ),
    "": frozenset(
        {
            "Service",
            "Endpoints",
            "Pod",
            "Namespace",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
            "PersistentVolume",
            "PersistentVolumeClaim",
            "Node",
            "Event",
            "LimitRange",
            "ResourceQuota",
            "ReplicationController",
            "PodTemplate",
            "Binding",
            "ComponentStatus",
            "List",
        }
    ),
}


def _kind_mistake(group: str, kind: str) -> str | None:
    """Why (group, kind) cannot be what the author meant, as kubectl would refuse it; None for
    a kind of a group meshmirror does not read, or one it knows but does not use."""
    known = GROUP_KINDS.get(group)
    if known is not None and kind not in known:
        where = group or "the core API group (apiVersion v1)"
        text = f"no kind {kind!r} in {where}"
        guess = _closest(kind, known)
        return text + (f"; did you mean {guess}?" if guess else "")
    if known is None:
        homes = sorted(g for (g, k) in KINDS if k == kind)
        if homes:
            versions = KINDS[(homes[0], kind)][1]
            api = f"{homes[0]}/{versions[-1]}" if homes[0] else versions[-1]
            return (
                f"{kind} is not a kind of {group or 'the core API group'}; "
                f"did you mean apiVersion {api}?"
            )
    return None


def _closest(kind: str, known: frozenset[str]) -> str | None:
    for k in sorted(known):
        if k.lower() == kind.lower():
            return k
    found = difflib.get_close_matches(kind, sorted(known), n=1, cutoff=0.75)
    return found[0] if found else None


def load_document(
    data: object,
    source: Source,
    positions: Mapping[Path, int],
    base: Path,
    result: LoadResult,
) -> None:
    """Add the resources and diagnostics of the document (or List item) at `base` to `result`."""

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
            load_document(item, source, positions, base + ("items", i), result)
        return
    group, _, version = api_version.rpartition("/")
    entry = KINDS.get((group, kind))
    if entry is None and (mistake := _kind_mistake(group, kind)) is not None:
        if group in GROUP_KINDS:
            err(("kind",), mistake, kind)
        else:
            err(("apiVersion",), mistake, api_version)
        return
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
    obj, schema_errors = validate_model(model, data)
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


def _line_at(positions: Mapping[Path, int], path: Path) -> int | None:
    for end in range(len(path), -1, -1):
        line = positions.get(path[:end])
        if line is not None:
            return line
    return None


def _type_name(value: object) -> str:
    names: dict[type, str] = {dict: "mapping", list: "sequence", str: "string"}
    return names.get(type(value), type(value).__name__)
