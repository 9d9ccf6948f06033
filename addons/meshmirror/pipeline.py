"""The whole configuration pipeline in one call: load -> validate -> convert -> compile -> analyse.

The one place that knows the stage order. Shared by the CLI and the addon, so both report exactly
the same messages for the same files. The registry (hosts -> clusters and endpoints) is built
once per load and handed to every stage that needs it: converted Gateway API routes add
VirtualServices only, never services or DestinationRules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from meshmirror.config.loader import load_paths
from meshmirror.config.resources import LoadedResource
from meshmirror.diagnostics import Diagnostic, Severity
from meshmirror.gatewayapi.convert import convert_gateway_api
from meshmirror.mesh.registry import build_registry
from meshmirror.routing.analysis import analyze
from meshmirror.routing.compile import compile_route_table
from meshmirror.routing.table import RouteTable
from meshmirror.validate.resources import validate_resources


@dataclass
class ConfigSet:
    paths: list[str]
    resources: list[LoadedResource] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    table: RouteTable | None = None
    files: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.WARNING]

    @property
    def infos(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.INFO]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.resources:
            out[r.kind] = out.get(r.kind, 0) + 1
        return out


def load_config_set(
    paths: Sequence[str], *, gateway: str | None = None, listener_port: int = 80
) -> ConfigSet:
    """Load and check `paths` as one config set. Raises `config.loader.PathError` for unreadable
    paths.

    The table is compiled only when loading and validation found no error, so a user sees every
    mistake in the files first; compile errors (e.g. an unknown gateway) come after.
    """
    cs = ConfigSet(paths=list(paths))
    loaded = load_paths(paths)
    cs.files = loaded.files
    cs.resources = loaded.resources
    cs.diagnostics.extend(loaded.diagnostics)
    cs.diagnostics.extend(validate_resources(loaded.resources))
    if cs.errors:
        return cs
    # Gateway API HTTPRoutes become VirtualServices (diagnostics still name the HTTPRoute) and
    # compile with the Istio ones; cs.resources keeps what the files hold.
    registry = build_registry(loaded.resources)
    converted, convert_diags = convert_gateway_api(loaded.resources, registry)
    cs.diagnostics.extend(convert_diags)
    compiled = [*loaded.resources, *converted]
    table, compile_diags = compile_route_table(
        compiled, gateway=gateway, listener_port=listener_port, registry=registry
    )
    cs.diagnostics.extend(compile_diags)
    if cs.errors:
        return cs
    cs.table = table
    cs.diagnostics.extend(analyze(compiled, table))
    return cs
