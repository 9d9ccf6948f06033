"""Names, hosts and addresses: ports of istio `pkg/config/labels`, `agent` and `host`."""

from __future__ import annotations

import ipaddress
import posixpath
import re
import unicodedata
from collections.abc import Mapping
from urllib.parse import urlsplit

from meshmirror.golang import go_atoi_ok, go_quote
from meshmirror.hosts import is_ip, split_host_port

UNIX_PREFIX = "unix://"

_DNS1123_LABEL = r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_DNS1123_LABEL_RE = re.compile(rf"^{_DNS1123_LABEL}\Z")
_WILDCARD_LABEL_RE = re.compile(rf"^(?:\*|(?:\*|\*-)?{_DNS1123_LABEL})\Z")
_QUALIFIED_NAME = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_TAG_KEY_RE = re.compile(rf"^({_DNS1123_LABEL}(?:\.{_DNS1123_LABEL})*/)?({_QUALIFIED_NAME})\Z")
_LABEL_VALUE_RE = re.compile(rf"^(?:{_QUALIFIED_NAME})?\Z")

DNS1123_LABEL_MAX = 63


def is_dns1123_label(value: str) -> bool:
    return len(value) <= DNS1123_LABEL_MAX and _DNS1123_LABEL_RE.match(value) is not None


def _is_wildcard_label(value: str) -> bool:
    return len(value) <= DNS1123_LABEL_MAX and _WILDCARD_LABEL_RE.match(value) is not None


def _dns1123_preconditions(name: str) -> str | None:
    if len(name) > 255:
        return f"domain name {go_quote(name)} too long (max 255)"
    if not name:
        return "empty domain name not allowed"
    return None


def _validate_dns1123_labels(domain: str, shown: str | None = None) -> str | None:
    # Istio names only the part after a wildcard label here ("ba!r" for "*.ba!r"); the spec and
    # users want the whole name, so `shown` is what the message quotes.
    shown = domain if shown is None else shown
    parts = domain.split(".")
    tld = parts[-1]
    if go_atoi_ok(tld):
        return (
            f"domain name {go_quote(domain)} invalid "
            f"(top level domain {go_quote(tld)} cannot be all-numeric)"
        )
    for i, label in enumerate(parts):
        # A trailing dot (`istio.io.`) is allowed: the last label may be empty.
        if i == len(parts) - 1 and label == "":
            return None
        if not is_dns1123_label(label):
            return f"domain name {go_quote(shown)} invalid (label {go_quote(label)} invalid)"
    return None


def validate_fqdn(fqdn: str) -> str | None:
    """Istio `agent.ValidateFQDN`: the error message, or None when valid."""
    return _dns1123_preconditions(fqdn) or _validate_dns1123_labels(fqdn)


def validate_wildcard_domain(domain: str) -> str | None:
    """Istio `agent.ValidateWildcardDomain`: FQDN with an optional wildcard first label."""
    pre = _dns1123_preconditions(domain)
    if pre:
        return pre
    first, dot, rest = domain.partition(".")
    if not _is_wildcard_label(first):
        return f"domain name {go_quote(domain)} invalid (label {go_quote(first)} invalid)"
    return _validate_dns1123_labels(rest, domain) if dot else None


def validate_wildcard_domain_for_gateway_vs(sni: bool, domain: str) -> str | None:
    """Istio `ValidateWildcardDomainForVirtualServiceBoundToGateway` (SNI `outbound_...` names)."""
    pre = _dns1123_preconditions(domain)
    if pre:
        return pre
    if sni and domain.startswith("outbound_"):
        fmt = "outbound_.<PORT>_._.<HOSTNAME>"
        parts = domain.split("_")
        if len(parts) < 4:
            return f"domain name {domain} invalid, should follow '{fmt}' format"
        port, hostname = parts[1].strip("."), parts[3].strip(".")
        if not re.search(r"[0-9]", port):
            return (
                f"domain name {go_quote(domain)} invalid (label {go_quote(port)} invalid). "
                f"should follow {fmt} format"
            )
        if not re.search(r"[a-zA-Z]", hostname):
            return (
                f"domain name {go_quote(domain)} invalid (label {go_quote(hostname)} invalid). "
                f"should follow {fmt} format"
            )
        return None
    return validate_wildcard_domain(domain)


def validate_ip_subnet(subnet: str) -> str | None:
    if subnet.count("/") == 1:
        try:
            ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            return f"{subnet} is not a valid CIDR block"
        return None
    return None if is_ip(subnet) else f"{subnet} is not a valid IP"


def validate_unix_address(addr: str) -> str | None:
    if not addr:
        return "unix address must not be empty"
    if addr.startswith("@"):  # abstract socket
        return None
    if not posixpath.isabs(addr) or addr.endswith("/"):
        return f"{addr} is not an absolute path to a file"
    return None


def port_error(port: int) -> str | None:
    return None if 1 <= port <= 65535 else f"port number {port} must be in the range 1..65535"


def labels_errors(labels: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """`labels.Instance.Validate`: (key, message) pairs."""
    out: list[tuple[str, str]] = []
    for key, value in (labels or {}).items():
        m = _TAG_KEY_RE.match(key)
        if m is None:
            out.append((key, f"invalid tag key: {go_quote(key)}"))
        elif m.group(1) and len(m.group(1)) - 1 > 253:
            out.append((key, f"invalid tag key: {go_quote(key)} (DNS prefix is too long)"))
        elif len(m.group(2)) > DNS1123_LABEL_MAX:
            out.append((key, f"invalid tag key: {go_quote(key)} (name is too long)"))
        if _LABEL_VALUE_RE.match(value) is None:
            out.append((key, f"invalid tag value: {go_quote(value)}"))
    return out


def hosts_match(a: str, b: str) -> bool:
    """Istio `host.Name.Matches`: the two host patterns overlap."""
    aw, bw = a.startswith("*"), b.startswith("*")
    if aw and bw:
        return b[1:].endswith(a[1:]) if len(a) < len(b) else a[1:].endswith(b[1:])
    if aw:
        return b.endswith(a[1:])
    if bw:
        return a.endswith(b[1:])
    return a == b


def host_subset_of(a: str, b: str) -> bool:
    """Istio `host.Name.SubsetOf`: every name matched by `a` is matched by `b`."""
    if a.startswith("*"):
        return b.startswith("*") and a[1:].endswith(b[1:])
    if b.startswith("*"):
        return a.endswith(b[1:])
    return a == b


def address_hints(text: str) -> tuple[str | None, str | None]:
    """(address, port) when `text` is an IP address with a port (`127.0.0.1:18081`,
    `[::1]:8080`), else (the IP itself or None, None): what the hints below are made of."""
    address = split_host_port(text)
    if address is not None and is_ip(address[0]):
        return address[0], str(address[1])
    return (text, None) if is_ip(text.strip("[]")) else (None, None)


def endpoint_address_hint(address: str) -> str:
    """meshmirror's hint after Istio's message for an endpoint `address` with a port."""
    ip, port = address_hints(address)
    if ip is None or port is None:
        return ""
    return (
        f"; the port goes in the endpoint's ports map, by port name: "
        f"`address: {ip}` with `ports: {{http: {port}}}`"
    )


def destination_host_hint(host: str) -> str:
    """meshmirror's hint after Istio's message for a destination host written as an address
    or as a URL (what `meshmirror run --mirror URL` takes)."""
    if "://" in host:
        return _url_hint(host)
    ip, _ = address_hints(host)
    if ip is None:
        return ""
    return (
        "; a destination host is a service name, not an address: declare it in a ServiceEntry "
        f"(`hosts: [shadow.local]`, `endpoints: [{{address: {ip}}}]`) and use that name here"
    )


def _url_hint(url: str) -> str:
    """The ServiceEntry that sends a name to `url`'s host and port, spelled out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return ""
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return ""
    resolution = "STATIC" if is_ip(parts.hostname) else "DNS"
    return (
        f"; a destination host is a service name, not a URL: declare {url} in a ServiceEntry "
        f"(`hosts: [shadow.local]`, `ports: [{{number: 80, name: {scheme}, protocol: "
        f"{scheme.upper()}}}]`, `resolution: {resolution}`, `endpoints: [{{address: "
        f"{parts.hostname}, ports: {{{scheme}: {port}}}}}]`) and use its host here"
    )


def control_characters(value: str) -> str | None:
    """meshmirror's warning for a name with control, format or separator characters (none of
    which a Kubernetes or Istio name has): the characters, as escapes; None when it has none."""
    found = sorted(
        {c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")}, key=ord
    )
    if not found:
        return None
    shown = ", ".join(repr(c)[1:-1] for c in found)
    return (
        f"name has control characters ({shown}): meshmirror prints them escaped, "
        "and other tools may not"
    )
