"""ServiceEntry and WorkloadEntry (Istio `ValidateServiceEntry`, `ValidateWorkloadEntry`)."""

from __future__ import annotations

from collections.abc import Sequence

from meshmirror.config.destinations import ServiceEntry, WorkloadEntry, WorkloadEntrySpec
from meshmirror.diagnostics import Path
from meshmirror.golang import go_quote
from meshmirror.hosts import is_ip
from meshmirror.protocols import SERVED, UNSUPPORTED, is_http, is_tcp, is_tls, istio_protocol
from meshmirror.validate.checker import Checker
from meshmirror.validate.names import (
    UNIX_PREFIX,
    endpoint_address_hint,
    is_dns1123_label,
    validate_fqdn,
    validate_ip_subnet,
    validate_unix_address,
    validate_wildcard_domain,
)


def _validate_workload_entry(
    c: Checker,
    p: Path,
    we: WorkloadEntrySpec,
    service_ports: set[str] | None,
    *,
    allow_fqdn: bool,
) -> None:
    """Istio `validateWorkloadEntry` (standalone, or as a STATIC ServiceEntry endpoint)."""
    addr = we.address or ""
    if not addr:
        if not we.network:
            c.err(p + ("address",), "address is required")
            return
        c.warn(p + ("address",), f"address is unset with network {go_quote(we.network)}")
    unix = addr.startswith(UNIX_PREFIX)
    if unix:
        c.opt(p + ("address",), validate_unix_address(addr[len(UNIX_PREFIX) :]), addr)
        if we.ports:
            c.err(p + ("ports",), f"unix endpoint {addr} must not include ports", addr)
    elif addr and not is_ip(addr):
        if not allow_fqdn:
            c.err(
                p + ("address",),
                f"endpoint address {go_quote(addr)} is not a valid IP address"
                + endpoint_address_hint(addr),
                addr,
            )
        elif validate_fqdn(addr):
            c.err(
                p + ("address",),
                f"endpoint address {go_quote(addr)} is not a valid FQDN or an IP address"
                + endpoint_address_hint(addr),
                addr,
            )
    _validate_endpoint_ports(c, p, we, service_ports)
    c.labels(p + ("labels",), we.labels)
    if unix and service_ports is not None and len(service_ports) != 1:
        c.err(p, "exactly 1 service port required for unix endpoints")


def _validate_endpoint_ports(
    c: Checker, p: Path, we: WorkloadEntrySpec, service_ports: set[str] | None
) -> None:
    for name, port in (we.ports or {}).items():
        pp = p + ("ports", name)
        if service_ports is not None and name not in service_ports:
            c.err(pp, f"endpoint port {port} is not defined by the service entry", name)
        if not is_dns1123_label(name):
            c.err(pp, f"invalid port name: {name}", name)
        c.port(pp, port)


#: Istio's `label.IoIstioUseWaypoint` and `label.NetworkingEnableAutoallocateIp`.
USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
AUTOALLOCATE_LABEL = "networking.istio.io/enable-autoallocate-ip"


def validate_service_entry(c: Checker, se: ServiceEntry) -> None:
    """Istio `ValidateServiceEntry`, with its messages and its order."""
    spec, sp = se.spec, ("spec",)
    hosts = spec.hosts or []
    resolution = spec.resolution or "NONE"
    selector = spec.workload_selector
    if selector is not None:
        before = len(c.out)
        c.selector_labels(sp + ("workloadSelector", "labels"), selector.labels)
        if len(c.out) > before:
            return  # Istio returns a bad selector's errors alone, without checking the rest
        if not selector.labels:
            c.warn(
                sp + ("workloadSelector",),
                "service entry: workload selector specified without labels, will be applied to all "
                "services in namespace",
            )
        if spec.endpoints:
            c.err(sp, "only one of WorkloadSelector or Endpoints is allowed in Service Entry")
    _validate_hosts(c, sp, hosts, resolution)
    cidr = False
    for i, address in enumerate(spec.addresses or []):
        cidr = cidr or "/" in address
        c.opt(sp + ("addresses", i), validate_ip_subnet(address), address)
    if cidr and resolution not in ("NONE", "STATIC"):
        c.err(
            sp + ("addresses",), "CIDR addresses are allowed only for NONE/STATIC resolution types"
        )
    port_names = _validate_ports(c, se, resolution)
    ports = spec.ports or []
    endpoints = spec.endpoints or []
    ep_path = sp + ("endpoints",)
    if resolution == "NONE":
        if endpoints:
            c.err(ep_path, "no endpoints should be provided for resolution type none")
        if selector is not None:
            c.warn(
                sp + ("workloadSelector",),
                "workloadSelector should not be set when resolution mode is NONE",
            )
    elif resolution == "STATIC":
        for i, ep in enumerate(endpoints):
            if ep is None:
                c.err(ep_path + (i,), "endpoint cannot be nil")
                continue
            _validate_workload_entry(c, ep_path + (i,), ep, port_names, allow_fqdn=False)
    elif resolution in ("DNS", "DNS_ROUND_ROBIN"):
        _validate_dns(c, se, resolution, port_names)
    else:
        _validate_dynamic_dns(c, se)
    if resolution != "NONE" and len(hosts) > 1:
        # Plain TCP cannot tell several hosts apart (no Host header, no SNI).
        for i, port in enumerate(ports):
            if port is None:
                c.err(sp + ("ports", i), "ports cannot be nil")
                continue
            proto = istio_protocol(port.protocol)
            if not is_http(proto) and not is_tls(proto):
                c.err(sp + ("ports", i), "multiple hosts provided with non-HTTP, non-TLS ports")
                break
    c.export_to(sp + ("exportTo",), spec.export_to, service_entry=True)


def _validate_hosts(c: Checker, sp: Path, hosts: Sequence[str], resolution: str) -> None:
    if not hosts:
        c.err(sp + ("hosts",), "service entry must have at least one host")
    for i, host in enumerate(hosts):
        hp = sp + ("hosts", i)
        if host == "*":
            c.err(hp, f"invalid host {host}", host)
            continue
        c.opt(hp, validate_wildcard_domain(host), host)
        # DYNAMIC_DNS resolves the request's own name, so a partial wildcard is meaningful there.
        if resolution != "DYNAMIC_DNS" and "*" in host and not host.startswith("*."):
            c.warn(hp, f"partial wildcard {go_quote(host)} not allowed", host)


def _autoallocates(se: ServiceEntry, resolution: str) -> bool:
    """Istio `ShouldV2AutoAllocateIPFromConfig` with `PILOT_ENABLE_IP_AUTOALLOCATE` at its
    default (on): a ServiceEntry without addresses gets one, unless its resolution is NONE or
    it opts out with the label."""
    labels = se.metadata.labels or {}
    if resolution == "NONE" or labels.get(AUTOALLOCATE_LABEL, "").lower() == "false":
        return False
    return not se.spec.addresses


def _validate_ports(c: Checker, se: ServiceEntry, resolution: str) -> set[str]:
    """The ports loop; returns the names of the ports declared (for the endpoints' `ports`)."""
    spec, sp = se.spec, ("spec",)
    autoallocation = _autoallocates(se, resolution)
    names: set[str] = set()
    numbers: set[int] = set()
    for i, port in enumerate(spec.ports or []):
        pp = sp + ("ports", i)
        if port is None:
            c.err(pp, "service entry port may not be null")
            continue
        if port.name in names:
            c.err(
                pp + ("name",),
                f"service entry port name {go_quote(port.name)} already defined",
                port.name,
            )
        names.add(port.name)
        if port.number in numbers:
            c.err(
                pp + ("number",), f"service entry port {port.number} already defined", port.number
            )
        numbers.add(port.number)
        if port.target_port:
            c.port(pp + ("targetPort",), port.target_port)
        if not spec.addresses and not autoallocation and (port.protocol or "TCP") == "TCP":
            c.warn(
                pp,
                "addresses are required for ports serving TCP (or unset) protocol when IP "
                "Autoallocation is not enabled",
            )
        if not is_dns1123_label(port.name):
            c.err(pp + ("name",), f"invalid port name: {port.name}", port.name)
        protocol = istio_protocol(port.protocol)
        if port.protocol and protocol == UNSUPPORTED:
            c.err(pp + ("protocol",), f"unsupported protocol: {port.protocol}", port.protocol)
        elif port.protocol and protocol not in SERVED:
            c.info(
                pp + ("protocol",),
                f"{protocol} ports are parsed but not served by meshmirror, which proxies HTTP "
                f"only (ports of protocol {', '.join(SERVED)})",
            )
        c.port(pp + ("number",), port.number)
    return names


def _validate_dns(c: Checker, se: ServiceEntry, resolution: str, port_names: set[str]) -> None:
    spec, sp = se.spec, ("spec",)
    hosts = spec.hosts or []
    endpoints = spec.endpoints or []
    ep_path = sp + ("endpoints",)
    if not endpoints:
        # Without endpoints the host itself is resolved: a wildcard has no name to resolve.
        for i, host in enumerate(hosts):
            error = validate_fqdn(host)
            if error:
                c.err(
                    sp + ("hosts", i),
                    "hosts must be FQDN or contain only prefix wildcards if no endpoints are "
                    f"provided for resolution mode {resolution}, {error}",
                    host,
                )
                break
    if resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
        c.err(ep_path, f"there must only be 0 or 1 endpoint for resolution mode {resolution}")
    for i, ep in enumerate(endpoints):
        ap = ep_path + (i,)
        if ep is None:
            c.err(ap, "endpoint cannot be nil")
            continue
        addr = ep.address or ""
        if not is_ip(addr) and validate_fqdn(addr):
            c.err(
                ap + ("address",),
                f"endpoint address {go_quote(addr)} is not a valid FQDN or an IP address"
                + endpoint_address_hint(addr),
                addr,
            )
        c.labels(ap + ("labels",), ep.labels)
        _validate_endpoint_ports(c, ap, ep, port_names)
    if spec.addresses:
        for i, port in enumerate(spec.ports or []):
            if port is None:
                c.err(sp + ("ports", i), "ports cannot be nil")
                continue
            if is_tcp(istio_protocol(port.protocol)):
                if len(hosts) > 1:
                    c.warn(
                        sp + ("hosts",),
                        "service entry can not have more than one host specified "
                        "simultaneously with address and tcp port",
                    )
                break


def _validate_dynamic_dns(c: Checker, se: ServiceEntry) -> None:
    """The DYNAMIC_DNS case (Envoy's dynamic forward proxy resolves each request's own host)."""
    spec, sp = se.spec, ("spec",)
    mode = "DYNAMIC_DNS"
    hosts = spec.hosts or []
    if not hosts:
        c.err(
            sp + ("hosts",),
            f"at least one wildcard host must be provided for resolution type {mode}",
        )
    for i, host in enumerate(hosts):
        if not host.startswith("*"):
            c.err(sp + ("hosts", i), f"host must be wildcarded for resolution mode {mode}", host)
    # Istio's messages join two literals without a space ("generatedfrom", "hostsfield").
    if spec.addresses:
        c.err(
            sp + ("addresses",),
            f"addresses cannot be set for resolution type {mode}. HTTP route domains will only "
            "be generatedfrom the hosts field values",
        )
    if spec.endpoints:
        c.err(
            sp + ("endpoints",),
            f"endpoints cannot be set for resolution type {mode}. Destination IP address "
            "determined from hostsfield values",
        )
    for i, port in enumerate(spec.ports or []):
        pp = sp + ("ports", i)
        if port is None:
            c.err(pp, "port cannot be nil")
            continue
        if istio_protocol(port.protocol) not in ("HTTP", "TLS", "GRPC", "HTTP2"):
            c.err(
                pp + ("protocol",),
                f"only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type "
                f"{mode}",
                port.protocol,
            )
    if spec.location == "MESH_INTERNAL" and _uses_waypoint(se):
        c.err(
            sp + ("location",),
            f"location MESH_INTERNAL with resolution type {mode} is not supported when using "
            "waypoints",
            spec.location,
        )


def _uses_waypoint(se: ServiceEntry) -> bool:
    """Istio `usesWaypoint`: the label names a waypoint (anything but empty or "none")."""
    value = (se.metadata.labels or {}).get(USE_WAYPOINT_LABEL, "")
    return value != "" and value.lower() != "none"


def validate_standalone_workload_entry(c: Checker, we: WorkloadEntry) -> None:
    # Port names of a standalone WorkloadEntry cannot be checked against a ServiceEntry here.
    _validate_workload_entry(c, ("spec",), we.spec, None, allow_fqdn=True)
