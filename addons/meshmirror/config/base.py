"""The base every Istio and Kubernetes model builds on, and the small types several kinds share.

`Spec` fixes the conventions of every object below `spec` (camelCase YAML through the alias
generator, strict numbers, unknown fields rejected, `field: null` read as absent); `Resource` and
`ObjectMeta` are the envelope of a whole document. The shared value types (`Percent`,
`PortSelector`, `StringMatch`, `Destination`, `Headers`) live here rather than with one kind, so
the per-kind modules (virtualservice.py, destinations.py, istio_gateway.py, gateway_api.py)
import only this module and never each other.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class Spec(BaseModel):
    """Base of every API object below `spec`: camelCase, strict, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=False,
        strict=True,
        frozen=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        # Kubernetes treats `field: null` as an absent field.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


# --- shared -------------------------------------------------------------------------------------


class Percent(Spec):
    value: float = 0.0


class PortSelector(Spec):
    number: int | None = None


class StringMatch(Spec):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class Destination(Spec):
    host: str = ""
    subset: str | None = None
    port: PortSelector | None = None


class HeaderOperations(Spec):
    set: dict[str, str] | None = None
    add: dict[str, str] | None = None
    remove: list[str] | None = None


class Headers(Spec):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


# --- resources ----------------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    # Metadata carries many server-set fields (uid, resourceVersion, managedFields...): allow them.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    name: str = ""
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Resource(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)

    kind_name: ClassVar[str] = ""
    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    # `kubectl get -o yaml` output carries a status; it is ignored.
    status: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data
