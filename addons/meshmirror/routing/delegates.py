"""Delegate VirtualServices: root rules naming a `delegate` replaced by the delegate's rules merged
into them (Istio pilot/pkg/model/virtualservice.go)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meshmirror.config.base import Destination, StringMatch
from meshmirror.config.resources import LoadedResource
from meshmirror.config.virtualservice import HTTPMatchRequest, HTTPRoute, VirtualService
from meshmirror.diagnostics import Diagnostic, Severity
from meshmirror.hosts import resolve_short_name

# Root fields a delegate rule inherits when it leaves them unset (`mergeHTTPRoute`).
_INHERITED = (
    "rewrite",
    "direct_response",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirror_percent",
    "mirror_percentage",
    "cors_policy",
    "mirrors",
    "headers",
)


def expand_delegates(
    r: LoadedResource,
    vs: VirtualService,
    resources: Sequence[LoadedResource],
    diags: list[Diagnostic],
) -> list[tuple[int, HTTPRoute, str]]:
    """(rule index, rule, VirtualService ref) per rule, with each root rule naming a `delegate`
    replaced by the delegate's rules merged into it (`mergeHTTPRoutes`): match = root AND
    delegate; unset fields inherited from the root. A delegate rule whose match conflicts with
    the root's is dropped, and so is a root rule whose delegate is not in the config (Istio)."""
    out: list[tuple[int, HTTPRoute, str]] = []
    for i, rule in enumerate(vs.spec.http or ()):
        if rule is None:
            continue
        if rule.delegate is None:
            out.append((i, rule, r.ref))
            continue
        ref = f"{rule.delegate.namespace or r.namespace}/{rule.delegate.name or ''}"
        found = next(
            (
                d
                for d in resources
                if isinstance(d.obj, VirtualService) and d.ref == ref and not d.obj.spec.hosts
            ),
            None,
        )
        if found is None or not isinstance(found.obj, VirtualService):
            diags.append(
                r.diag(
                    Severity.WARNING,
                    ("spec", "http", i, "delegate"),
                    f"delegate VirtualService {ref} is not in the config (or has hosts, so it is "
                    "not a delegate); this rule gets no routes",
                )
            )
            continue
        root = _qualify(rule, r.namespace)
        for k, sub in enumerate(found.obj.spec.http or ()):
            if sub is None:
                continue
            merged = merge_http_route(root, _qualify(sub, found.namespace))
            if merged is None:
                diags.append(
                    found.diag(
                        Severity.WARNING,
                        ("spec", "http", k, "match"),
                        f"delegate rule conflicts with the match of its root {r.ref} "
                        f"(spec.http[{i}]); it is ignored, as Istio ignores it",
                    )
                )
                continue
            out.append((k, merged, found.ref))
    return out


def _qualify(rule: HTTPRoute, namespace: str) -> HTTPRoute:
    """Destination hosts resolved in the rule's own namespace before merging (Istio resolves
    short names per VirtualService before it merges delegates)."""

    def q(d: Destination | None) -> Destination | None:
        if d is None or not d.host:
            return d
        return d.model_copy(update={"host": resolve_short_name(d.host, namespace)})

    update: dict[str, Any] = {}
    if rule.route:
        update["route"] = [
            None if d is None else d.model_copy(update={"destination": q(d.destination)})
            for d in rule.route
        ]
    if rule.mirror is not None:
        update["mirror"] = q(rule.mirror)
    if rule.mirrors:
        update["mirrors"] = [
            None if m is None else m.model_copy(update={"destination": q(m.destination)})
            for m in rule.mirrors
        ]
    return rule.model_copy(update=update) if update else rule


def _joined_name(root: str | None, leaf: str | None) -> str | None:
    if not leaf:
        return root
    return f"{root}-{leaf}" if root else leaf


def merge_http_route(root: HTTPRoute, delegate: HTTPRoute) -> HTTPRoute | None:
    """Istio `mergeHTTPRoute`; None when the delegate's match conflicts with the root's."""
    matches, conflict = merge_match_requests(
        [m for m in root.match or () if m is not None],
        [m for m in delegate.match or () if m is not None],
    )
    if conflict:
        return None
    update: dict[str, Any] = {
        "match": list(matches) or None,
        "name": _joined_name(root.name, delegate.name),
    }
    for f in _INHERITED:
        value = getattr(delegate, f)
        if value is None or (f == "mirrors" and not value):
            update[f] = getattr(root, f)
    return delegate.model_copy(update=update)


def merge_match_requests(
    root: Sequence[HTTPMatchRequest], delegate: Sequence[HTTPMatchRequest]
) -> tuple[list[HTTPMatchRequest], bool]:
    """Istio `mergeHTTPMatchRequests`: every delegate match must fit inside some root match;
    each fitting (root, delegate) pair becomes one merged match. (merged, conflict)."""
    if not root:
        return list(delegate), False
    if not delegate:
        return list(root), False
    out: list[HTTPMatchRequest] = []
    for sub in delegate:
        found = False
        for rm in root:
            if _match_conflict(rm, sub):
                continue
            out.append(_merge_match(rm, sub))
            found = True
        if not found:
            return [], True
    return out, not out


def _merge_match(root: HTTPMatchRequest, leaf: HTTPMatchRequest) -> HTTPMatchRequest:
    update: dict[str, Any] = {"name": _joined_name(root.name, leaf.name)}
    for f in ("uri", "scheme", "method", "authority", "source_namespace", "stat_prefix"):
        if not getattr(leaf, f):
            update[f] = getattr(root, f)
    for f in ("headers", "without_headers", "query_params", "source_labels"):
        merged = {**(getattr(root, f) or {}), **(getattr(leaf, f) or {})}
        update[f] = merged or None
    if not leaf.port:
        update["port"] = root.port
    if not leaf.gateways:
        update["gateways"] = root.gateways
    return leaf.model_copy(update=update)


def _match_conflict(root: HTTPMatchRequest, leaf: HTTPMatchRequest) -> bool:
    """Istio `hasConflict`."""
    for f in ("uri", "scheme", "method", "authority"):
        if _string_match_conflict(getattr(root, f), getattr(leaf, f)):
            return True
    for f in ("headers", "without_headers", "query_params"):
        rmap = getattr(root, f) or {}
        for key, value in (getattr(leaf, f) or {}).items():
            if _string_match_conflict(rmap.get(key), value):
                return True
    if bool(root.ignore_uri_case) != bool(leaf.ignore_uri_case):
        return True
    if root.port and leaf.port and root.port != leaf.port:
        return True
    if root.source_namespace and leaf.source_namespace != root.source_namespace:
        return True
    for key, value in (leaf.source_labels or {}).items():
        if key in (root.source_labels or {}) and (root.source_labels or {})[key] != value:
            return True
    if root.gateways and leaf.gateways:
        if len(root.gateways) < len(leaf.gateways) or not set(leaf.gateways) <= set(root.gateways):
            return True
    return False


def _string_match_conflict(root: StringMatch | None, leaf: StringMatch | None) -> bool:
    """Istio `stringMatchConflict`: the leaf must be a narrower match of the same kind."""
    if root is None or leaf is None:
        return False
    if root.regex and (leaf.regex or leaf.prefix or leaf.exact):
        return True
    if leaf.regex and (root.regex or root.prefix or root.exact):
        return True
    if root.exact:
        return bool(leaf.prefix) or leaf.exact != root.exact
    if root.prefix:
        if leaf.prefix:
            return not leaf.prefix.startswith(root.prefix)
        if leaf.exact:
            return not leaf.exact.startswith(root.prefix)
    return True
