"""Kubernetes Service ports, with the API server's own rules and message texts."""

from __future__ import annotations

import re

from meshmirror.config.destinations import KubernetesService
from meshmirror.golang import go_quote
from meshmirror.validate.checker import Checker
from meshmirror.validate.names import is_dns1123_label

_IANA_SVC_NAME_CHARS = re.compile(r"^[-a-z0-9]+\Z")
_K8S_PROTOCOLS = ("SCTP", "TCP", "UDP")


def _iana_svc_name_errors(name: str) -> list[str]:
    """Kubernetes `validation.IsValidPortName` (IANA_SVC_NAME)."""
    out: list[str] = []
    if not 1 <= len(name) <= 15:
        out.append("must be no more than 15 characters")
    if _IANA_SVC_NAME_CHARS.match(name) is None:
        out.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in name:
        out.append("must not contain consecutive hyphens")
    if not re.search(r"[a-z]", name):
        out.append("must contain at least one letter (a-z)")
    if name.startswith("-") or name.endswith("-"):
        out.append("must not begin or end with a hyphen")
    return out


def validate_kubernetes_service(c: Checker, svc: KubernetesService) -> None:
    """The Service port rules Kubernetes' API server applies (its own message texts)."""
    spec, sp = svc.spec, ("spec",)
    ports = spec.ports or []
    if not ports and spec.type != "ExternalName" and spec.cluster_ip != "None":
        c.err(sp + ("ports",), "Required value")
    names: set[str] = set()
    keys: set[tuple[int, str]] = set()
    for i, port in enumerate(ports):
        p = sp + ("ports", i)
        name = port.name or ""
        if len(ports) > 1 and not name:
            c.err(p + ("name",), "Required value")
        elif name:
            if name in names:
                c.err(p + ("name",), f"Duplicate value: {go_quote(name)}", name)
            if not (is_dns1123_label(name) and name == name.lower()):
                c.err(
                    p + ("name",),
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', and must start and end with an alphanumeric character",
                    name,
                )
        names.add(name)
        if not 1 <= port.port <= 65535:
            c.err(p + ("port",), "must be between 1 and 65535, inclusive", port.port)
        protocol = port.protocol or "TCP"
        if protocol not in _K8S_PROTOCOLS:
            c.err(
                p + ("protocol",),
                f'Unsupported value: {go_quote(protocol)}: supported values: "SCTP", "TCP", "UDP"',
                protocol,
            )
        if (port.port, protocol) in keys:
            c.err(p, f"Duplicate value: port {port.port}/{protocol}")
        keys.add((port.port, protocol))
        target = port.target_port
        if isinstance(target, int):
            if not 1 <= target <= 65535:
                c.err(p + ("targetPort",), "must be between 1 and 65535, inclusive", target)
        elif isinstance(target, str):
            for message in _iana_svc_name_errors(target):
                c.err(p + ("targetPort",), message, target)
        if port.node_port is not None and not 0 <= port.node_port <= 65535:
            c.err(p + ("nodePort",), "must be between 1 and 65535, inclusive", port.node_port)
