"""ServiceEntry and WorkloadEntry (Istio `ValidateServiceEntry`, `ValidateWorkloadEntry`)."""

from __future__ import annotations

from meshmirror.config.destinations import ServiceEntry, WorkloadEntry, WorkloadEntrySpec
from meshmirror.diagnostics import Path
from meshmirror.golang import go_quote
from meshmirror.hosts import is_ip
from meshmirror.validate.checker import Checker
from meshmirror.validate.names import (
    UNIX_PREFIX,
    is_dns1123_label,
    validate_fqdn,
    validate_ip_subnet,
    validate_unix_address,
    validate_wildcard_domain,
)
from meshmirror.validate.protocols import is_http, is_tcp, is_tls, istio_protocol


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
                f"endpoint address {go_quote(addr)} is not a valid IP address",
                addr,
            )
        elif validate_fqdn(addr):
            c.err(
                p + ("address",),
                f"endpoint address {go_quote(addr)} is not a valid FQDN or an IP address",
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


def validate_service_entry(c: Checker, se: ServiceEntry) -> None:
    spec, sp = se.spec, ("spec",)
    hosts = spec.hosts or []
    resolution = spec.resolution or "NONE"
    selector = spec.workload_selector
    if selector is not None:
        c.selector_labels(sp + ("workloadSelector", "labels"), selector.labels)
        if not selector.labels:
            c.warn(
                sp + ("workloadSelector",),
                "service entry: workload selector specified without labels, will be applied to all "
                "services in namespace",
            )
        if spec.endpoints:
            c.err(sp, "only one of WorkloadSelector or Endpoints is allowed in Service Entry")
    if not hosts:
        c.err(sp + ("hosts",), "service entry must have at least one host")
    for i, host in enumerate(hosts):
        hp = sp + ("hosts", i)
        if host == "*":
            c.err(hp, f"invalid host {host}", host)
            continue
        c.opt(hp, validate_wildcard_domain(host), host)
        if "*" in host and len(host) != 1 and not host.startswith("*."):
            c.warn(hp, f"partial wildcard {go_quote(host)} not allowed", host)
    cidr = False
    for i, address in enumerate(spec.addresses or []):
        cidr = cidr or "/" in address
        c.opt(sp + ("addresses", i), validate_ip_subnet(address), address)
    if cidr and resolution not in ("NONE", "STATIC"):
        c.err(
            sp + ("addresses",), "CIDR addresses are allowed only for NONE/STATIC resolution types"
        )

    port_names: set[str] = set()
    port_numbers: set[int] = set()
    for i, port in enumerate(spec.ports or []):
        pp = sp + ("ports", i)
        if port.name in port_names:
            c.err(
                pp + ("name",),
                f"service entry port name {go_quote(port.name)} already defined",
                port.name,
            )
        port_names.add(port.name)
        if port.number in port_numbers:
            c.err(
                pp + ("number",), f"service entry port {port.number} already defined", port.number
            )
        port_numbers.add(port.number)
        if port.target_port:
            c.port(pp + ("targetPort",), port.target_port)
        if not spec.addresses and (port.protocol or "TCP") == "TCP":
            c.warn(
                pp,
                "addresses are required for ports serving TCP (or unset) protocol when IP "
                "Autoallocation is not enabled",
            )
        if not is_dns1123_label(port.name):
            c.err(pp + ("name",), f"invalid port name: {port.name}", port.name)
        if port.protocol and istio_protocol(port.protocol) == "UnsupportedProtocol":
            c.err(pp + ("protocol",), f"unsupported protocol: {port.protocol}", port.protocol)
        c.port(pp + ("number",), port.number)

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
            _validate_workload_entry(c, ep_path + (i,), ep, port_names, allow_fqdn=False)
    elif resolution in ("DNS", "DNS_ROUND_ROBIN"):
        if not endpoints:
            for i, host in enumerate(hosts):
                error = validate_fqdn(host)
                if error and not (host.startswith("*.") and not validate_fqdn(host[2:])):
                    c.err(
                        sp + ("hosts", i),
                        "hosts must be FQDN or contain only prefix wildcards if no endpoints are "
                        f"provided for resolution mode {resolution}, {error}",
                        host,
                    )
        if resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
            c.err(ep_path, f"there must only be 0 or 1 endpoint for resolution mode {resolution}")
        for i, ep in enumerate(endpoints):
            ap = ep_path + (i,)
            addr = ep.address or ""
            if not is_ip(addr) and validate_fqdn(addr):
                c.err(
                    ap + ("address",),
                    f"endpoint address {go_quote(addr)} is not a valid FQDN or an IP address",
                    addr,
                )
            c.labels(ap + ("labels",), ep.labels)
            _validate_endpoint_ports(c, ap, ep, port_names)
        if spec.addresses and len(hosts) > 1:
            if any(is_tcp(istio_protocol(port.protocol)) for port in spec.ports or []):
                c.warn(
                    sp + ("hosts",),
                    "service entry can not have more than one host specified "
                    "simultaneously with address and tcp port",
                )
    elif resolution == "DYNAMIC_DNS":
        # meshmirror's reading of Istio's DYNAMIC_DNS rules; texts are ours.
        for i, host in enumerate(hosts):
            if not host.startswith("*."):
                c.err(
                    sp + ("hosts", i),
                    "hosts must be wildcards for resolution mode DYNAMIC_DNS",
                    host,
                )
        if spec.addresses:
            c.err(sp + ("addresses",), "addresses are not allowed for resolution mode DYNAMIC_DNS")
        if endpoints:
            c.err(ep_path, "endpoints are not allowed for resolution mode DYNAMIC_DNS")
        for i, port in enumerate(spec.ports or []):
            if istio_protocol(port.protocol) not in ("HTTP", "TLS", "GRPC", "HTTP2"):
                c.err(
                    sp + ("ports", i, "protocol"),
                    "only HTTP, TLS, GRPC and HTTP2 ports are allowed for resolution mode "
                    "DYNAMIC_DNS",
                    port.protocol,
                )
    if resolution != "NONE" and len(hosts) > 1:
        for i, port in enumerate(spec.ports or []):
            proto = istio_protocol(port.protocol)
            if not is_http(proto) and not is_tls(proto):
                c.err(sp + ("ports", i), "multiple hosts provided with non-HTTP, non-TLS ports")
                break
    c.export_to(sp + ("exportTo",), spec.export_to, service_entry=True)


def validate_standalone_workload_entry(c: Checker, we: WorkloadEntry) -> None:
    # Port names of a standalone WorkloadEntry cannot be checked against a ServiceEntry here.
    _validate_workload_entry(c, ("spec",), we.spec, None, allow_fqdn=True)
