"""The per-resource collector of diagnostics and the rules every resource kind shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshmirror.config.base import HeaderOperations, Headers
from meshmirror.config.resources import LoadedResource
from meshmirror.diagnostics import Diagnostic, Path, Severity
from meshmirror.golang import check_istio_duration, go_quote, parse_duration_ns
from meshmirror.validate.headers import (
    header_name_with_authority_error,
    header_operation_name_error,
    header_value_error,
)
from meshmirror.validate.names import is_dns1123_label, labels_errors, port_error, validate_fqdn

_NO_VALUE: Any = ...  # LoadedResource.diag's "no value" marker


class Checker:
    """Collects the diagnostics of one resource; `err`/`warn` take the path relative to it."""

    def __init__(self, res: LoadedResource) -> None:
        self.res = res
        self.out: list[Diagnostic] = []

    def err(self, path: Path, message: str, value: Any = _NO_VALUE) -> None:
        self.out.append(self.res.diag(Severity.ERROR, path, message, value))

    def warn(
        self, path: Path, message: str, value: Any = _NO_VALUE, code: str | None = None
    ) -> None:
        self.out.append(self.res.diag(Severity.WARNING, path, message, value, code=code))

    def info(self, path: Path, message: str, value: Any = _NO_VALUE) -> None:
        self.out.append(self.res.diag(Severity.INFO, path, message, value))

    def opt(self, path: Path, message: str | None, value: Any = _NO_VALUE) -> None:
        if message:
            self.err(path, message, value)

    # -- shared pieces --

    def duration(self, path: Path, text: str | None, *, allow_zero: bool = False) -> int | None:
        """A Go duration under Istio's ValidateDuration; returns nanoseconds when parsable."""
        if text is None:
            return None
        try:
            ns = parse_duration_ns(text)
        except ValueError as e:
            self.err(path, f"bad Duration: {e}", text)
            return None
        if allow_zero and ns == 0:
            return ns
        self.opt(path, check_istio_duration(ns), text)
        return ns

    def labels(self, path: Path, labels: Mapping[str, str] | None) -> None:
        for key, message in labels_errors(labels):
            self.err(path + (key,), message, key)

    def selector_labels(self, path: Path, labels: Mapping[str, str] | None) -> None:
        for k, v in (labels or {}).items():
            if k == "":
                self.err(path, f"empty key is not supported in selector: {go_quote(f'{k}={v}')}")
            if "*" in k or "*" in v:
                self.err(
                    path + (k,), f"wildcard is not supported in selector: {go_quote(f'{k}={v}')}"
                )

    def port(self, path: Path, number: int) -> None:
        self.opt(path, port_error(number), number)

    def export_to(
        self,
        path: Path,
        export_to: Sequence[str] | None,
        *,
        service_entry: bool = False,
        dr_with_selector: bool = False,
    ) -> None:
        """Istio `validateExportTo`."""
        if not export_to:
            return
        namespace = self.res.namespace
        seen: set[str] = set()
        for i, entry in enumerate(export_to):
            p = path + (i,)
            key = namespace if entry == "." else entry
            if key in seen:
                if key != entry:
                    self.err(
                        p, f"duplicate entries in exportTo: . and current namespace {namespace}"
                    )
                else:
                    self.err(p, f"duplicate entries in exportTo for entry {entry}", entry)
            elif service_entry and entry == "~":
                seen.add(key)
            elif key == "~":
                self.err(
                    p, "exportTo ~ (none) is not allowed for Istio configuration objects", entry
                )
            elif key != "*" and not is_dns1123_label(key):
                self.err(
                    p, "only ., *, or a valid DNS 1123 label is allowed as exportTo entry", entry
                )
            else:
                seen.add(key)
        if dr_with_selector and seen:
            if namespace in seen:
                if len(seen) > 1:
                    self.err(
                        path,
                        "destination rule with workload selector cannot have multiple entries in "
                        "exportTo",
                    )
            else:
                self.err(
                    path,
                    "destination rule with workload selector cannot have exportTo beyond current "
                    "namespace",
                )
        if "*" in seen and len(export_to) > 1:
            self.err(
                path, "cannot have both public (*) and non-public exportTo values for a resource"
            )
        if "~" in seen and len(export_to) > 1:
            self.err(path, "cannot export service entry to no one (~) and someone")

    def gateway_names(self, path: Path, names: Sequence[str] | None) -> None:
        """Istio `validateGatewayNames` (every name, not only up to the first legacy one)."""
        for i, name in enumerate(names or []):
            p = path + (i,)
            ns, slash, gw = name.partition("/")
            if not slash:
                if "." in name:
                    parts = name.split(".")
                    self.warn(
                        p,
                        f"using legacy gatewayName format {go_quote(name)}; prefer the "
                        f"<namespace>/<name> format: {go_quote(parts[1] + '/' + parts[0])}",
                        name,
                    )
                self.opt(p, validate_fqdn(name), name)
                continue
            if not ns or not gw:
                self.err(p, "config namespace and gateway name cannot be empty", name)
            if not is_dns1123_label(ns):
                self.err(p, f"invalid value for namespace: {go_quote(ns)}", name)
            if not is_dns1123_label(gw):
                self.err(p, f"invalid value for gateway name: {go_quote(gw)}", name)

    def header_operations(
        self, path: Path, headers: Headers | None, *, with_authority: bool = True
    ) -> None:
        if headers is None:
            return
        if headers.request is not None:
            self._header_ops(path + ("request",), headers.request, request=with_authority)
        if headers.response is not None:
            self._header_ops(path + ("response",), headers.response, request=False)

    def _header_ops(self, path: Path, ops: HeaderOperations, *, request: bool) -> None:
        for op in ("add", "set"):
            for name, value in (getattr(ops, op) or {}).items():
                p = path + (op, name)
                if request:
                    self.opt(p, header_name_with_authority_error(name), name)
                else:
                    self.opt(p, header_operation_name_error(name), name)
                self.opt(p, header_value_error(value), value)
        for i, name in enumerate(ops.remove or []):
            self.opt(path + ("remove", i), header_operation_name_error(name), name)
