"""Host names as Istio and Envoy read them (pure): the cluster domain, short-name resolution,
wildcard host matching, IP literals and the port of an authority.

Every stage needs these rules (validation, the registry, Gateway and delegate handling, request
matching, local replies), so they sit below all of them.
"""

from __future__ import annotations

import ipaddress

DOMAIN_SUFFIX = "cluster.local"


def resolve_short_name(host: str, namespace: str) -> str:
    """Istio `ResolveShortnameToFQDN`: `httpbin` in ns `default` ->
    `httpbin.default.svc.cluster.local`; `*`, IPs and names containing a dot are unchanged."""
    if not host or host == "*" or "." in host or is_ip(host):
        return host
    return f"{host}.{namespace}.svc.{DOMAIN_SUFFIX}"


def host_matches(pattern: str, host: str) -> bool:
    """Does `pattern` (possibly `*.x` or `*`) cover the concrete or wildcard `host`?
    Istio `host.Name.SubsetOf`: `*.foo.com` covers `a.b.foo.com`, not `foo.com`."""
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]
        if host.startswith("*"):
            return host[1:].endswith(suffix)
        return host.endswith(suffix) and len(host) > len(suffix)
    return pattern == host


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def strip_port(authority: str) -> str:
    """`host:8000` -> `host`; `[::1]:80` -> `[::1]`; a bare IPv6 literal is left alone."""
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] if end != -1 else authority
    name, colon, port = authority.rpartition(":")
    if colon and ":" not in name and (port.isdigit() or port == ""):
        return name
    return authority


def split_host_port(text: str) -> tuple[str, int] | None:
    """`HOST:PORT` -> (HOST without IPv6 brackets, PORT): `[::1]:9464` -> ("::1", 9464); the host
    may be empty (`:8000`). None when `text` does not end in a port of 0-65535."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        return None
    return host.strip("[]"), int(port)
