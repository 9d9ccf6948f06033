"""Istio host names: the cluster domain, short-name resolution and wildcard host matching (pure).

Kept apart from the registry because Gateway, Gateway API and delegate handling need the same
host rules without the registry's services and endpoints.
"""

from __future__ import annotations

from meshmirror.validate.names import is_ip

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
