"""Gateway servers, hosts and TLS settings (Istio `ValidateGateway`)."""

from __future__ import annotations

from typing import Any

from meshmirror.config.istio_gateway import Gateway, Server, ServerTLSSettings
from meshmirror.diagnostics import Path
from meshmirror.golang import go_quote
from meshmirror.hosts import is_ip
from meshmirror.protocols import is_http, is_tls, istio_protocol
from meshmirror.validate.checker import Checker
from meshmirror.validate.names import (
    UNIX_PREFIX,
    is_dns1123_label,
    port_error,
    validate_unix_address,
    validate_wildcard_domain,
)


def validate_gateway(c: Checker, gw: Gateway) -> None:
    sp: Path = ("spec",)
    if not is_dns1123_label(gw.metadata.name):
        c.err(
            ("metadata", "name"),
            f"invalid gateway name: {go_quote(gw.metadata.name)}",
            gw.metadata.name,
        )
    servers = gw.spec.servers or []
    if not servers:
        c.err(sp + ("servers",), "gateway must have at least one server")
    port_names: set[str] = set()
    for i, server in enumerate(servers):
        p = sp + ("servers", i)
        if server is None:
            # Istio's two passes over the servers (validateServer, then the port names) each
            # report it.
            c.err(p, "cannot have nil server")
            c.err(p, "server may not be nil")
            continue
        _validate_server(c, p, server)
        if server.port is not None:
            if server.port.name in port_names:
                c.err(
                    p + ("port", "name"),
                    f"port names in servers must be unique: duplicate name {server.port.name}",
                    server.port.name,
                )
            port_names.add(server.port.name)
            https_redirect = server.tls is not None and server.tls.https_redirect
            if not is_http(istio_protocol(server.port.protocol)) and https_redirect:
                c.warn(
                    p + ("tls", "httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                )


def _validate_server(c: Checker, p: Path, server: Server) -> None:
    if not server.hosts:
        c.err(p + ("hosts",), "server config must contain at least one host")
    for i, host in enumerate(server.hosts or []):
        for message in _gateway_host_errors(host):
            c.err(p + ("hosts", i), message, host)
    bind = server.bind or ""
    port_ok = True
    port = server.port
    if port is None:
        c.err(p + ("port",), "port is required")
        port_ok = False
    else:
        pp = p + ("port",)
        if istio_protocol(port.protocol) == "UnsupportedProtocol":
            c.err(
                pp + ("protocol",),
                f"invalid protocol {go_quote(port.protocol)}, supported protocols are HTTP, HTTP2, "
                "GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
                port.protocol,
            )
            port_ok = False
        if port.number > 0 or not bind.startswith(UNIX_PREFIX):
            error = port_error(port.number)
            if error:
                c.err(pp + ("number",), error, port.number)
                port_ok = False
        if port.target_port:
            c.err(pp + ("targetPort",), "targetPort has no impact on Gateways", port.target_port)
            port_ok = False
        if not port.name:
            c.err(
                pp + ("name",),
                f"port name must be set: number:{port.number} protocol:{go_quote(port.protocol)}",
            )
            port_ok = False
    if bind.startswith(UNIX_PREFIX):
        c.opt(p + ("bind",), validate_unix_address(bind[len(UNIX_PREFIX) :]), bind)
        if port is not None and port.number:
            c.err(p + ("bind",), "port number must be 0 for unix domain socket")
    elif bind:
        if not is_ip(bind):
            c.err(p + ("bind",), f"{bind} is not a valid IP", bind)
    if server.tls is not None:
        _validate_server_tls(c, p + ("tls",), server.tls)
    if port_ok and port is not None:
        proto = istio_protocol(port.protocol)
        if is_tls(proto) and server.tls is None:
            c.err(p, "server must have TLS settings for HTTPS/TLS protocols")
        elif not is_tls(proto) and server.tls is not None:
            t = server.tls
            if is_http(proto):
                passthrough = (t.mode or "PASSTHROUGH") in ("PASSTHROUGH", "AUTO_PASSTHROUGH")
                if not passthrough or t.ca_certificates or t.private_key or t.server_certificate:
                    c.err(p + ("tls",), "server cannot have TLS settings for plain text HTTP ports")
            else:
                c.err(p + ("tls",), "server cannot have TLS settings for non HTTPS/TLS ports")


def _gateway_host_errors(host: str) -> list[str]:
    """Istio `ValidateNamespaceSlashWildcardHostname(host, isGateway=true)`."""
    out: list[str] = []
    ns, slash, name = host.partition("/")
    if slash:
        if not ns or not name:
            out.append("config namespace and dnsName in host entry cannot be empty")
        if ns not in ("*", ".") and not is_dns1123_label(ns):
            out.append(f"invalid namespace value {go_quote(ns)} in gateway")
    else:
        name = host
    if name != "*" and "." not in name:
        out.append("short names (non FQDN) are not allowed")
    error = validate_wildcard_domain(name)
    if error and not is_ip(name):
        out.append(error)
    if "*" in name and len(name) != 1 and not name.startswith("*."):
        out.append(f"partial wildcard {go_quote(name)} not allowed")
    return out


def _validate_server_tls(c: Checker, p: Path, tls: ServerTLSSettings) -> None:
    """The certificate rules of Istio `validateTLSOptions`."""
    mode = tls.mode or "PASSTHROUGH"
    if mode == "ISTIO_MUTUAL":
        for field, what in (
            ("server_certificate", "server certificate"),
            ("private_key", "private key"),
            ("ca_certificates", "CA bundle"),
            ("tls_certificates", "tlsCertificates"),
            ("credential_name", "credentialName"),
            ("credential_names", "credentialNames"),
        ):
            if getattr(tls, field):
                c.err(p, f"ISTIO_MUTUAL TLS cannot have associated {what}")
        return
    if mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH") and (
        tls.ca_crl
        or tls.server_certificate
        or tls.private_key
        or tls.ca_certificates
        or tls.tls_certificates
        or tls.credential_name
        or tls.credential_names
    ):
        c.warn(p, f"{mode} mode does not use certificates, they will be ignored")
    sources = sum(
        bool(x)
        for x in (
            tls.server_certificate and tls.private_key,
            tls.credential_name,
            tls.credential_names,
            tls.tls_certificates,
        )
    )
    if sources > 1:
        c.err(
            p,
            "only one of credential_name, credential_names, server_certificate/private_key, "
            "tls_certificates should be specified",
        )
    mutual = mode in ("MUTUAL", "OPTIONAL_MUTUAL")
    if mode == "SIMPLE" or mutual:
        if tls.credential_name or tls.credential_names:
            return
        prefix = "MUTUAL TLS" if mutual else "SIMPLE TLS"
        if mutual and not tls.ca_certificates:
            c.err(p, f"{prefix} requires a client CA bundle")
        certs: list[dict[str, Any]] = list(tls.tls_certificates or []) or [
            {"serverCertificate": tls.server_certificate, "privateKey": tls.private_key}
        ]
        if len(tls.tls_certificates or []) > 2:
            c.warn(p, f"{prefix} can support up to 2 server certificates")
        for cert in certs:
            if not cert.get("serverCertificate"):
                c.err(p, f"{prefix} requires a server certificate")
            if not cert.get("privateKey"):
                c.err(p, f"{prefix} requires a private key")
    if tls.ca_crl:
        if tls.credential_name:
            c.err(
                p,
                "CRL is not supported with credentialName. CRL has to be specified in the "
                "credential",
            )
        if mode == "SIMPLE":
            c.err(p, "CRL is not supported with SIMPLE TLS")
