"""The entry point: dispatch each resource to its validator, and duplicate definitions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from meshmirror.config.destinations import (
    DestinationRule,
    KubernetesService,
    ServiceEntry,
    WorkloadEntry,
)
from meshmirror.config.gateway_api import Gateway as GatewayAPIGateway
from meshmirror.config.gateway_api import HTTPRoute as GatewayAPIHTTPRoute
from meshmirror.config.istio_gateway import Gateway
from meshmirror.config.resources import LoadedResource
from meshmirror.config.virtualservice import VirtualService
from meshmirror.diagnostics import Diagnostic, Severity
from meshmirror.validate.checker import Checker
from meshmirror.validate.destinationrule import validate_destination_rule
from meshmirror.validate.gateway_api import validate_gateway_api_gateway, validate_http_route
from meshmirror.validate.istio_gateway import validate_gateway
from meshmirror.validate.kubernetes import validate_kubernetes_service
from meshmirror.validate.names import control_characters
from meshmirror.validate.serviceentry import (
    validate_service_entry,
    validate_standalone_workload_entry,
)
from meshmirror.validate.virtualservice import validate_virtual_service

_VALIDATORS: dict[type, Callable[[Checker, Any], None]] = {
    VirtualService: validate_virtual_service,
    DestinationRule: validate_destination_rule,
    ServiceEntry: validate_service_entry,
    WorkloadEntry: validate_standalone_workload_entry,
    Gateway: validate_gateway,
    KubernetesService: validate_kubernetes_service,
    GatewayAPIGateway: validate_gateway_api_gateway,
    GatewayAPIHTTPRoute: validate_http_route,
}


def validate_resources(resources: Sequence[LoadedResource]) -> list[Diagnostic]:
    """Every per-resource rule for every resource, plus duplicate definitions; never raises."""
    out: list[Diagnostic] = []
    out.extend(_duplicates(resources))
    for res in resources:
        checker = Checker(res)
        validator = _VALIDATORS.get(type(res.obj))
        if validator is not None:
            try:
                validator(checker, res.obj)
            except Exception as e:  # a validator bug must not hide the user's errors
                checker.err((), f"internal error while validating: {type(e).__name__}: {e}")
        _names(checker, res)
        out.extend(checker.out)
    return out


def _names(checker: Checker, res: LoadedResource) -> None:
    """Names that end up in route labels, log lines and reports, with control characters in
    them: warned about (meshmirror's own warning; printed, they are escaped)."""
    named: list[tuple[tuple[str | int, ...], str | None]] = [
        (("metadata", "name"), res.name),
        (("metadata", "namespace"), res.obj.metadata.namespace),
    ]
    if isinstance(res.obj, VirtualService):
        for i, rule in enumerate(res.obj.spec.http or ()):
            if rule is None:
                continue
            named.append((("spec", "http", i, "name"), rule.name))
            for j, match in enumerate(rule.match or ()):
                if match is not None:
                    named.append((("spec", "http", i, "match", j, "name"), match.name))
    for path, value in named:
        message = control_characters(value) if value else None
        if message:
            checker.warn(path, message, value)


def _duplicates(resources: Iterable[LoadedResource]) -> list[Diagnostic]:
    """The same kind/namespace/name twice in one config set: `kubectl apply` would keep only one."""
    first: dict[tuple[str, str, str, str], LoadedResource] = {}
    out: list[Diagnostic] = []
    for res in resources:
        # Keyed by API group too: Istio's Gateway and the Gateway API's are different kinds.
        key = (res.obj.api_version.rpartition("/")[0], res.kind, res.namespace, res.name)
        earlier = first.get(key)
        if earlier is None:
            first[key] = res
            continue
        where = f"{earlier.source.file}:{earlier.source.line} (doc {earlier.source.doc})"
        out.append(
            res.diag(
                Severity.ERROR,
                ("metadata", "name"),
                f"duplicate {res.kind} {res.ref}: already defined at {where}",
                res.name,
            )
        )
    return out
