"""backendRef -> Istio Destination: resolving Gateway API backend references against the config.

A `Service` backendRef becomes the Service's cluster host (it must be defined in the config); a
`networking.istio.io` `Hostname` is used as is; a `ServiceEntry` stands for its first host. Other
kinds cannot be resolved, and the caller decides what an unresolved reference means (a route
answers 500, a mirror is dropped). Cross-namespace references are allowed with one warning per
reference, since meshmirror does not model ReferenceGrant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from meshmirror.config.destinations import ServiceEntry
from meshmirror.config.gateway_api import BackendObjectReference
from meshmirror.config.resources import LoadedResource
from meshmirror.diagnostics import Diagnostic, Path, Severity
from meshmirror.hosts import DOMAIN_SUFFIX
from meshmirror.mesh.registry import Registry

ISTIO_GROUP = "networking.istio.io"


@dataclass
class BackendResolver:
    registry: Registry
    resources: Sequence[LoadedResource]
    diags: list[Diagnostic]
    _warned_cross_ns: set[tuple[str, Path]] = field(default_factory=set)

    def destination(
        self, res: LoadedResource, path: Path, ref: BackendObjectReference
    ) -> tuple[dict[str, Any] | None, str | None]:
        """(Istio Destination, None) or (None, why it cannot be resolved)."""
        group = ref.group or ""
        kind = ref.kind or "Service"
        ns = ref.namespace or res.namespace
        if ns != res.namespace and (res.ref, path) not in self._warned_cross_ns:
            self._warned_cross_ns.add((res.ref, path))
            self.diags.append(
                res.diag(
                    Severity.WARNING,
                    path,
                    f"cross-namespace backendRef to {ns}/{ref.name}: Kubernetes requires a "
                    "ReferenceGrant, which meshmirror does not model; the reference is allowed",
                )
            )
        host: str
        if group in ("", "core") and kind == "Service":
            host = f"{ref.name}.{ns}.svc.{DOMAIN_SUFFIX}"
            if self.registry.service(host) is None:
                return None, f"Service {ns}/{ref.name} is not defined in the config"
        elif group == ISTIO_GROUP and kind == "Hostname":
            host = ref.name
        elif group == ISTIO_GROUP and kind == "ServiceEntry":
            found = next(
                (
                    r
                    for r in self.resources
                    if isinstance(r.obj, ServiceEntry)
                    and r.namespace == ns
                    and r.name == ref.name
                    and r.obj.spec.hosts
                ),
                None,
            )
            if found is None:
                return None, f"ServiceEntry {ns}/{ref.name} is not defined in the config"
            assert isinstance(found.obj, ServiceEntry)
            host = (found.obj.spec.hosts or [""])[0]
        else:
            return None, (
                f"backendRef kind {group or 'core'}/{kind} is not supported (Service, or "
                f"{ISTIO_GROUP} Hostname / ServiceEntry)"
            )
        dest: dict[str, Any] = {"host": host}
        if ref.port is not None:
            dest["port"] = {"number": ref.port}
        return dest, None
