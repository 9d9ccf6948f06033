"""Istio's per-resource validation rules and messages, plus `istioctl analyze`-style warnings.

A port of istiod's webhook checks (`pkg/config/validation`: `ValidateVirtualService`,
`validateHTTPRoute`, `validateDestination`, `ValidateDestinationRule`, `ValidateServiceEntry`,
`ValidateWorkloadEntry`, `ValidateGateway`, `agent.ValidateWildcardDomain`, ...), so a config that
`kubectl apply` would reject is rejected here with the same words, and every message names the
YAML path in CRD spelling and the offending value. Everything is collected in one pass; nothing
here raises for any input the loader produced.

Rules that need more than one resource (hosts without endpoints, undefined subsets, ports) live in
analyze.py. The only cross-resource rule here is "the same object defined twice in one config set",
because it is about the files, not about the mesh.

Where Istio's Go code stops at the first error of a function (validateHTTPRedirect,
validateGatewayNames) this module reports every error, because the user should fix all at once.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import re2
from pydantic.alias_generators import to_snake

from meshmirror.diagnostics import Diagnostic, Path, Severity
from meshmirror.durations import check_istio_duration, parse_duration, parse_duration_ns
from meshmirror.loader import LoadedResource
from meshmirror.model import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    CorsPolicy,
    Destination,
    DestinationRule,
    Gateway,
    HeaderOperations,
    Headers,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPMirrorPolicy,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    HTTPRoute,
    HTTPRouteDestination,
    KubernetesService,
    Percent,
    RouteDestination,
    Server,
    ServerTLSSettings,
    ServiceEntry,
    StringMatch,
    TCPRoute,
    TLSRoute,
    TrafficPolicy,
    VirtualService,
    WorkloadEntry,
    WorkloadEntrySpec,
)

__all__ = [
    "NOT_YET_SERVED",
    "parse_duration",
    "validate_fqdn",
    "validate_resources",
    "validate_wildcard_domain",
]

#: HTTPRoute fields (CRD spelling) that are parsed and validated but that meshmirror does not act on
#: yet; each present one gets a warning. Shrink this as features land.
NOT_YET_SERVED: tuple[str, ...] = (
    "corsPolicy",
    "fault",
    "retries",
    "timeout",
    "rewrite",
    "redirect",
    "directResponse",
    "delegate",
    "headers",
)

IST_UNREACHABLE_RULE = "IST0130"  # VirtualServiceUnreachableRule
IST_INEFFECTIVE_MATCH = "IST0131"  # VirtualServiceIneffectiveMatch

MESH_GATEWAY = "mesh"
UNIX_PREFIX = "unix://"
MAX_REGEX_LEN = 1024
_KB = 1024
_MB = 1024 * _KB

_NO_VALUE: Any = ...  # LoadedResource.diag's "no value" marker

# --- Go-compatible formatting ---------------------------------------------------------------------


def _q(text: str) -> str:
    """Go's %q: a double-quoted string with backslash escapes (JSON is the nearest spelling)."""
    return json.dumps(text, ensure_ascii=False)


def _gof(x: float) -> str:
    """Go's %f (6 decimals; +Inf/-Inf/NaN spelled the Go way)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return f"{x:f}"


def _gov(x: float) -> str:
    """Go's %v for a float64: shortest representation, `150` not `150.0`, `1e-05`."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x.is_integer() and abs(x) < 1e21:
        return str(int(x))
    # Python's repr is also the shortest round-trip form and writes exponents like Go (1e-05).
    return repr(x)


def _go_list(items: Sequence[str]) -> str:
    """Go's %v for a []string: `[a b]`."""
    return "[" + " ".join(items) + "]"


# --- names, hosts, addresses (ports of istio pkg/config/labels, agent, host) --------------------

_DNS1123_LABEL = r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_DNS1123_LABEL_RE = re.compile(rf"^{_DNS1123_LABEL}\Z")
_WILDCARD_LABEL_RE = re.compile(rf"^(?:\*|(?:\*|\*-)?{_DNS1123_LABEL})\Z")
_QUALIFIED_NAME = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_TAG_KEY_RE = re.compile(rf"^({_DNS1123_LABEL}(?:\.{_DNS1123_LABEL})*/)?({_QUALIFIED_NAME})\Z")
_LABEL_VALUE_RE = re.compile(rf"^(?:{_QUALIFIED_NAME})?\Z")
_GO_ATOI_RE = re.compile(r"^[+-]?[0-9]+\Z")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~A-Za-z0-9]+\Z")
_HEADER_VALUE_BAD_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})
_JWT_CLAIM_PREFIX = "@request.auth.claims"
DNS1123_LABEL_MAX = 63


def is_dns1123_label(value: str) -> bool:
    return len(value) <= DNS1123_LABEL_MAX and _DNS1123_LABEL_RE.match(value) is not None


def _is_wildcard_label(value: str) -> bool:
    return len(value) <= DNS1123_LABEL_MAX and _WILDCARD_LABEL_RE.match(value) is not None


def _go_atoi_ok(text: str) -> bool:
    return _GO_ATOI_RE.match(text) is not None and -(2**63) <= int(text) < 2**63


def _dns1123_preconditions(name: str) -> str | None:
    if len(name) > 255:
        return f"domain name {_q(name)} too long (max 255)"
    if not name:
        return "empty domain name not allowed"
    return None


def _validate_dns1123_labels(domain: str, shown: str | None = None) -> str | None:
    # Istio names only the part after a wildcard label here ("ba!r" for "*.ba!r"); the spec and
    # users want the whole name, so `shown` is what the message quotes.
    shown = domain if shown is None else shown
    parts = domain.split(".")
    tld = parts[-1]
    if _go_atoi_ok(tld):
        return (
            f"domain name {_q(domain)} invalid (top level domain {_q(tld)} cannot be all-numeric)"
        )
    for i, label in enumerate(parts):
        # A trailing dot (`istio.io.`) is allowed: the last label may be empty.
        if i == len(parts) - 1 and label == "":
            return None
        if not is_dns1123_label(label):
            return f"domain name {_q(shown)} invalid (label {_q(label)} invalid)"
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
        return f"domain name {_q(domain)} invalid (label {_q(first)} invalid)"
    return _validate_dns1123_labels(rest, domain) if dot else None


def _validate_wildcard_domain_for_gateway_vs(sni: bool, domain: str) -> str | None:
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
                f"domain name {_q(domain)} invalid (label {_q(port)} invalid). "
                f"should follow {fmt} format"
            )
        if not re.search(r"[a-zA-Z]", hostname):
            return (
                f"domain name {_q(domain)} invalid (label {_q(hostname)} invalid). "
                f"should follow {fmt} format"
            )
        return None
    return validate_wildcard_domain(domain)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _validate_ip_subnet(subnet: str) -> str | None:
    if subnet.count("/") == 1:
        try:
            ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            return f"{subnet} is not a valid CIDR block"
        return None
    return None if _is_ip(subnet) else f"{subnet} is not a valid IP"


def _validate_unix_address(addr: str) -> str | None:
    if not addr:
        return "unix address must not be empty"
    if addr.startswith("@"):  # abstract socket
        return None
    if not posixpath.isabs(addr) or addr.endswith("/"):
        return f"{addr} is not an absolute path to a file"
    return None


def _port_error(port: int) -> str | None:
    return None if 1 <= port <= 65535 else f"port number {port} must be in the range 1..65535"


def _labels_errors(labels: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """`labels.Instance.Validate`: (key, message) pairs."""
    out: list[tuple[str, str]] = []
    for key, value in (labels or {}).items():
        m = _TAG_KEY_RE.match(key)
        if m is None:
            out.append((key, f"invalid tag key: {_q(key)}"))
        elif m.group(1) and len(m.group(1)) - 1 > 253:
            out.append((key, f"invalid tag key: {_q(key)} (DNS prefix is too long)"))
        elif len(m.group(2)) > DNS1123_LABEL_MAX:
            out.append((key, f"invalid tag key: {_q(key)} (name is too long)"))
        if _LABEL_VALUE_RE.match(value) is None:
            out.append((key, f"invalid tag value: {_q(value)}"))
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


def _host_subset_of(a: str, b: str) -> bool:
    """Istio `host.Name.SubsetOf`: every name matched by `a` is matched by `b`."""
    if a.startswith("*"):
        return b.startswith("*") and a[1:].endswith(b[1:])
    if b.startswith("*"):
        return a.endswith(b[1:])
    return a == b


def _validate_header_value_syntax(value: str) -> str | None:
    """Port of Envoy's header formatter parser (istio `validateHeaderValue`): `%` must be paired."""
    pos, state = 0, "literal"
    n = len(value)
    while pos < n:
        ch = value[pos]
        has_next = pos + 1 < n
        if state == "literal":
            if ch == "%":
                if not has_next:
                    return "invalid header configuration. Un-escaped %"
                if value[pos + 1] == "%":
                    pos += 1
                else:
                    state = "var"
        elif state == "var":
            if ch == "%":
                state = "literal"
            elif ch == "(":
                state = "expect_array"
        elif state == "expect_array":
            if ch == "[":
                state = "expect_string"
            elif ch != " ":
                state = "string"
        elif state == "delim_or_end":
            if ch == ",":
                state = "expect_string"
            elif ch == "]":
                state = "args_end"
            elif ch != " ":
                return "invalid header configuration. Expecting ',', ']', or whitespace"
        elif state == "expect_string":
            if ch == '"':
                state = "string"
            elif ch != " ":
                return "invalid header configuration. Expecting '\"'"
        elif state == "string":
            if ch == "\\":
                if not has_next:
                    return "invalid header configuration. Un-terminated backslash in JSON string"
                pos += 1
            elif ch == ")":
                state = "var_end"
            elif ch == '"':
                state = "delim_or_end"
        elif state == "args_end":
            if ch == ")":
                state = "var_end"
            elif ch != " ":
                return (
                    "invalid header configuration. Expecting ')' or whitespace after '{}', "
                    "but found '{}'"
                )
        elif state == "var_end":
            if ch == "%":
                state = "literal"
            elif ch != " ":
                return "invalid header configuration. Expecting '%' or whitespace after"
        pos += 1
    if state != "literal":
        return f"invalid header configuration. Un-terminated variable expression '{value}'"
    return None


def _re2_error(pattern: str) -> str | None:
    options = re2.Options()
    options.log_errors = False  # the C++ library would otherwise print to stderr
    try:
        re2.compile(pattern, options=options)
    except re2.error as e:
        raw = e.args[0] if e.args else e
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return f"error parsing regexp: {text}"
    except Exception as e:  # any failure of the binding means "not valid RE2"
        return f"error parsing regexp: {e}"
    return None


# --- protocols (istio pkg/config/protocol) --------------------------------------------------------

_PROTOCOLS = {
    "tcp": "TCP",
    "udp": "UDP",
    "grpc": "GRPC",
    "grpc-web": "GRPC-Web",
    "http": "HTTP",
    "http_proxy": "HTTP_PROXY",
    "http2": "HTTP2",
    "https": "HTTPS",
    "tls": "TLS",
    "mongo": "Mongo",
    "redis": "Redis",
    "mysql": "MySQL",
}


def _protocol(name: str | None) -> str:
    return _PROTOCOLS.get((name or "").lower(), "UnsupportedProtocol")


def _is_http(p: str) -> bool:
    return p in ("HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-Web")


def _is_tls(p: str) -> bool:
    return p in ("HTTPS", "TLS")


def _is_tcp(p: str) -> bool:
    return p in ("TCP", "HTTPS", "TLS", "Mongo", "Redis", "MySQL")


# Go's http.StatusText keys: retryOn accepts any status code Go knows by name.
_GO_STATUS_CODES = frozenset(
    [100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226]
    + [300, 301, 302, 303, 304, 305, 307, 308]
    + list(range(400, 419))
    + [421, 422, 423, 424, 425, 426, 428, 429, 431, 451]
    + [500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511]
)
_RETRY_ON = frozenset(
    "5xx gateway-error reset reset-before-request connect-failure retriable-4xx "
    "refused-stream retriable-status-codes retriable-headers envoy-ratelimited "
    "http3-post-connect-failure cancelled deadline-exceeded internal "
    "resource-exhausted unavailable".split()
)
_CORS_METHODS = frozenset("GET HEAD POST PUT PATCH DELETE CONNECT OPTIONS TRACE *".split())
_GRPC_STATUSES = frozenset(
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS "
    "PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE "
    "UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED".split()
)


# --- the checker ----------------------------------------------------------------------------------


class _Checker:
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
        for key, message in _labels_errors(labels):
            self.err(path + (key,), message, key)

    def port(self, path: Path, number: int) -> None:
        self.opt(path, _port_error(number), number)

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
                        f"using legacy gatewayName format {_q(name)}; prefer the "
                        f"<namespace>/<name> format: {_q(parts[1] + '/' + parts[0])}",
                        name,
                    )
                self.opt(p, validate_fqdn(name), name)
                continue
            if not ns or not gw:
                self.err(p, "config namespace and gateway name cannot be empty", name)
            if not is_dns1123_label(ns):
                self.err(p, f"invalid value for namespace: {_q(ns)}", name)
            if not is_dns1123_label(gw):
                self.err(p, f"invalid value for gateway name: {_q(gw)}", name)

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
                    self.opt(p, _header_name_with_authority_error(name), name)
                else:
                    self.opt(p, _header_operation_name_error(name), name)
                self.opt(p, _header_value_error(value), value)
        for i, name in enumerate(ops.remove or []):
            self.opt(path + ("remove", i), _header_operation_name_error(name), name)


def _header_name_with_authority_error(name: str) -> str | None:
    """`ValidateHTTPHeaderWithAuthorityOperationName` (request add/set)."""
    if not name:
        return "header name cannot be empty"
    if _is_internal_header(name) and not _is_authority_header(name):
        return f'invalid header {_q(name)}: header cannot have ":" prefix'
    return None


def _header_operation_name_error(name: str) -> str | None:
    """`ValidateHTTPHeaderOperationName` (request remove, all response operations)."""
    if not name:
        return "header name cannot be empty"
    if name.lower() == "host":
        return f"invalid header {_q(name)}: cannot set Host header"
    if _is_internal_header(name):
        return f'invalid header {_q(name)}: header cannot have ":" prefix'
    return None


def _header_value_error(value: str) -> str | None:
    if _HEADER_VALUE_BAD_RE.search(value):
        return f"header value configuration {value} is invalid"
    syntax = _validate_header_value_syntax(value)
    return f"header value configuration: {syntax}" if syntax else None


def _is_internal_header(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def _is_authority_header(name: str) -> bool:
    return name.lower() in (":authority", "host")


def _is_jwt_claim(name: str) -> bool:
    rest = name[len(_JWT_CLAIM_PREFIX) :]
    return name.startswith(_JWT_CLAIM_PREFIX) and len(rest) > 1 and rest[0] in ".["


def _header_match_name_error(name: str) -> str | None:
    """`ValidateHTTPHeaderNameOrJwtClaimRoute`."""
    if not name:
        return "header name cannot be empty"
    if _is_jwt_claim(name) or name in _PSEUDO_HEADERS:
        return None
    if _HEADER_NAME_RE.match(name) is None:
        return f"header name {name} is not a valid header name"
    return None


def _set_fields(sm: StringMatch) -> list[str]:
    return [f for f in ("exact", "prefix", "regex") if getattr(sm, f) is not None]


# --- VirtualService -------------------------------------------------------------------------------


def _validate_virtual_service(c: _Checker, vs: VirtualService) -> None:
    spec = vs.spec
    sp: Path = ("spec",)
    hosts = spec.hosts or []
    gateways = spec.gateways or []
    http = spec.http or []
    is_delegate = not hosts
    if is_delegate:
        if gateways:
            c.err(sp + ("gateways",), "delegate virtual service must have no gateways specified")
        if spec.tls:
            c.err(sp + ("tls",), "delegate virtual service must have no tls route specified")
        if spec.tcp:
            c.err(sp + ("tcp",), "delegate virtual service must have no tcp route specified")

    applies_to_gateway = False
    applies_to_mesh = True
    if gateways:
        c.gateway_names(sp + ("gateways",), gateways)
        applies_to_gateway = MESH_GATEWAY not in gateways
        applies_to_mesh = not applies_to_gateway

    if not applies_to_gateway:
        for i, rule in enumerate(http):
            for j, match in enumerate((rule.match or []) if rule else []):
                if match is None:
                    continue
                for field, hdrs in (
                    ("headers", match.headers),
                    ("withoutHeaders", match.without_headers),
                ):
                    for key in hdrs or {}:
                        if _is_jwt_claim(key):
                            c.err(
                                sp + ("http", i, "match", j, field, key),
                                f"JWT claim based routing (key: {key}) is only supported for "
                                f"gateway, found no gateways: {_go_list(gateways)}",
                            )

    sni = any(m.sni_hosts for t in spec.tls or [] for m in t.match or [])
    all_hosts_valid = True
    for i, host in enumerate(hosts):
        if applies_to_gateway:
            error = _validate_wildcard_domain_for_gateway_vs(sni, host)
        else:
            error = validate_wildcard_domain(host)
        if error:
            if not _is_ip(host):
                c.err(sp + ("hosts", i), error, host)
                all_hosts_valid = False
        elif applies_to_mesh and host == "*":
            c.err(
                sp + ("hosts", i),
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                host,
            )
            all_hosts_valid = False
    if all_hosts_valid:
        for i, a in enumerate(hosts):
            for b in hosts[i + 1 :]:
                if hosts_match(a, b):
                    c.err(sp + ("hosts", i), f"duplicate hosts in virtual service: {a} & {b}")

    if not http and not spec.tcp and not spec.tls:
        c.err(sp, "http, tcp or tls must be provided in virtual service")
    for i, rule in enumerate(http):
        p = sp + ("http", i)
        if rule is None:
            c.err(p, "http route may not be null")
            continue
        _validate_http_route(c, p, rule, delegate=is_delegate)
        _warn_not_served(c, p, rule)
    for i, tls in enumerate(spec.tls or []):
        _validate_tls_route(c, sp + ("tls", i), tls, hosts, gateways)
    for i, tcp in enumerate(spec.tcp or []):
        _validate_tcp_route(c, sp + ("tcp", i), tcp)
    for field in ("tcp", "tls"):
        if getattr(spec, field):
            c.warn(
                sp + (field,), f"{field} routes are parsed but not served by meshmirror (HTTP only)"
            )
    c.export_to(sp + ("exportTo",), spec.export_to)
    _analyze_unreachable_http_rules(c, sp + ("http",), http)


def _warn_not_served(c: _Checker, path: Path, rule: HTTPRoute) -> None:
    for field in NOT_YET_SERVED:
        if getattr(rule, to_snake(field), None) is not None:
            c.warn(path + (field,), f"{field} is parsed but not yet served by meshmirror")
    if "headers" in NOT_YET_SERVED:
        for j, dest in enumerate(rule.route or []):
            if dest is not None and dest.headers is not None:
                c.warn(
                    path + ("route", j, "headers"),
                    "headers is parsed but not yet served by meshmirror",
                )


def _validate_http_route(c: _Checker, p: Path, h: HTTPRoute, *, delegate: bool) -> None:
    """Istio `validateHTTPRoute`."""
    root = not delegate and h.delegate is not None
    _validate_http_route_conflict(c, p, h, delegate=delegate, root=root)
    _validate_http_match_requests(c, p, h)
    c.header_operations(p + ("headers",), h.headers)
    if h.cors_policy is not None:
        _validate_cors(c, p + ("corsPolicy",), h.cors_policy)
    if h.fault is not None:
        _validate_fault(c, p + ("fault",), h.fault)
    if h.mirror_percent is not None:
        mp = p + ("mirrorPercent",)
        if h.mirror_percent > 100:
            c.err(
                mp,
                f"mirror_percent must have a max value of 100 (it has {h.mirror_percent})",
                h.mirror_percent,
            )
        elif h.mirror_percent < 0:
            # Not reachable in Istio (uint32 in the proto); the CRD schema rejects it.
            c.err(mp, "mirrorPercent should be greater than or equal to 0", h.mirror_percent)
        c.warn(mp, 'using deprecated setting "mirrorPercent", use "mirrorPercentage" instead')
    if h.mirror_percentage is not None:
        _check_percent(c, p + ("mirrorPercentage",), h.mirror_percentage, "mirror_percentage")
    if h.mirror is not None:
        _validate_destination(c, p + ("mirror",), h.mirror)
    for i, m in enumerate(h.mirrors or []):
        _validate_mirror_policy(c, p + ("mirrors", i), m)
    if h.redirect is not None:
        _validate_redirect(c, p + ("redirect",), h.redirect)
    if h.direct_response is not None:
        _validate_direct_response(c, p + ("directResponse",), h.direct_response)
    if h.retries is not None:
        _validate_retries(c, p + ("retries",), h.retries)
    if h.rewrite is not None:
        _validate_rewrite(c, p + ("rewrite",), h.rewrite)
    _validate_authority_rewrite(c, p, h.rewrite, h.headers)
    _validate_http_route_destinations(c, p + ("route",), h.route or [])
    c.duration(p + ("timeout",), h.timeout)


def _validate_http_route_conflict(
    c: _Checker, p: Path, h: HTTPRoute, *, delegate: bool, root: bool
) -> None:
    """Istio `validateHTTPRouteConflict`."""
    if root:
        # A root rule that delegates may only carry the delegate (and matches).
        if h.redirect is not None:
            c.err(p + ("redirect",), f"root HTTP route {h.name or ''} must not specify redirect")
        if h.route:
            c.err(p + ("route",), f"root HTTP route {h.name or ''} must not specify route")
        return
    if delegate and h.delegate is not None:
        c.err(p + ("delegate",), "delegate HTTP route cannot contain delegate")
    if h.redirect is not None:
        if h.route:
            c.err(p, "HTTP route cannot contain both route and redirect")
        if h.fault is not None:
            c.err(p, "HTTP route cannot contain both fault and redirect")
        if h.rewrite is not None:
            c.err(p, "HTTP route rule cannot contain both rewrite and redirect")
        if h.direct_response is not None:
            c.err(p, "HTTP route rule cannot contain both direct_response and redirect")
    elif h.direct_response is not None:
        if h.route:
            c.err(p, "HTTP route cannot contain both route and direct_response")
        if h.fault is not None:
            c.err(p, "HTTP route cannot contain both fault and direct_response")
        if h.rewrite is not None:
            c.err(p, "HTTP route rule cannot contain both rewrite and direct_response")
    elif not h.route:
        c.err(p, "HTTP route, redirect or direct_response is required")
    if h.mirror is not None and h.mirrors:
        c.err(p, "HTTP route cannot contain both mirror and mirrors")


def _validate_string_match(
    c: _Checker, path: Path, sm: StringMatch | None, where: str, *, allow_empty_prefix: bool = False
) -> None:
    """Istio `validateStringMatch` (and `validateStringMatchRegexp` for `uri`), plus the oneof."""
    if sm is None:
        return
    fields = _set_fields(sm)
    if len(fields) > 1:
        c.err(
            path,
            f"{_q(where)}: only one of exact, prefix or regex may be set "
            f"(found {' and '.join(fields)})",
        )
    if sm.prefix is not None and sm.prefix == "" and not allow_empty_prefix:
        c.err(path + ("prefix",), f"{_q(where)}: prefix string match should not be empty", "")
    if sm.regex is not None:
        _check_regex(c, path + ("regex",), sm.regex, where)


def _check_regex(c: _Checker, path: Path, regex: str, where: str) -> None:
    if regex == "":
        c.err(path, f"{_q(where)}: regex string match should not be empty", regex)
        return
    c.opt(path, _regex_error(regex, where), regex)


def _regex_error(regex: str, where: str) -> str | None:
    """Istio `validateStringRegexp`: length cap and RE2 syntax."""
    if len(regex) > MAX_REGEX_LEN:
        return f"{_q(where)}: regex is too large, max length allowed is {MAX_REGEX_LEN}"
    error = _re2_error(regex)
    if error is None:
        return None
    return (
        f"{_q(where)}: {error}; Istio uses RE2 style regex-based match "
        "(https://github.com/google/re2/wiki/Syntax)"
    )


def _validate_http_match_requests(c: _Checker, p: Path, h: HTTPRoute) -> None:
    """Istio `validateHTTPRouteMatchRequest`."""
    for j, match in enumerate(h.match or []):
        if match is None:
            continue
        mp = p + ("match", j)
        for name, header in (match.headers or {}).items():
            hp = mp + ("headers", name)
            if header is None:
                c.err(hp, f"header match {name} cannot be null")
            c.opt(hp, _header_match_name_error(name), name)
            # `regex: "*"` is a present-match, not a regex (Istio exempts it only for
            # withoutHeaders in validation but converts it the same way for all three).
            if header is not None and header.regex != "*":
                _validate_string_match(c, hp, header, "headers")
        for name, header in (match.without_headers or {}).items():
            hp = mp + ("withoutHeaders", name)
            c.opt(hp, _header_match_name_error(name), name)
            if header is None:
                # Istio skips this; meshmirror rejects it rather than guess its meaning.
                c.err(hp, f"withoutHeaders match {name} cannot be null")
            elif header.regex != "*":  # `*` means "present", it is not compiled
                _validate_string_match(c, hp, header, "withoutHeaders")
        # uri allows an empty prefix (Envoy does); scheme/method/authority do not.
        if match.uri is not None:
            _validate_string_match(c, mp + ("uri",), match.uri, "uri", allow_empty_prefix=True)
        for field in ("scheme", "method", "authority"):
            _validate_string_match(c, mp + (field,), getattr(match, field), field)
        for name, qp in (match.query_params or {}).items():
            qpath = mp + ("queryParams", name)
            if qp is None:
                c.err(qpath, f"query param match {name} cannot be null")
            elif qp.regex != "*":
                _validate_string_match(c, qpath, qp, "queryParams")
        if match.port is not None and match.port != 0:
            c.port(mp + ("port",), match.port)
        c.labels(mp + ("sourceLabels",), match.source_labels)
        c.gateway_names(mp + ("gateways",), match.gateways)
        if match.source_namespace and not is_dns1123_label(match.source_namespace):
            c.err(
                mp + ("sourceNamespace",),
                f"sourceNamespace match {match.source_namespace} is invalid",
                match.source_namespace,
            )


def _check_percent(c: _Checker, path: Path, pct: Percent, what: str) -> None:
    """The mirror percentage rule: 0..100, no lower bound like fault injection's 0.0001."""
    value = pct.value
    vp = path + ("value",)
    if math.isnan(value):
        c.err(vp, f"{what} must be a number (it has NaN)", value)
    elif value > 100:
        c.err(vp, f"{what} must have a max value of 100 (it has {_gof(value)})", value)
    elif value < 0:
        c.err(vp, f"{what} must have a min value of 0 (it has {_gof(value)})", value)


def _validate_destination(c: _Checker, path: Path, d: Destination) -> None:
    """Istio `validateDestination`."""
    if d.host == "*":
        c.err(path + ("host",), "invalid destination host *", d.host)
    else:
        c.opt(path + ("host",), validate_wildcard_domain(d.host), d.host)
    if d.subset:
        c.opt(path + ("subset",), _subset_name_error(d.subset), d.subset)
    if d.port is not None:
        number = d.port.number if d.port.number is not None else 0
        c.port(path + ("port", "number"), number)


def _subset_name_error(name: str) -> str | None:
    if not name:
        return "subset name cannot be empty"
    if not is_dns1123_label(name):
        return f"subset name is invalid: {name}"
    return None


def _validate_mirror_policy(c: _Checker, path: Path, m: HTTPMirrorPolicy | None) -> None:
    """Istio `validateHTTPMirrors`, one entry."""
    if m is None:
        c.err(path, "mirror cannot be null")
        return
    if m.destination is None:
        c.err(path, "destination is required for mirrors")
        return
    _validate_destination(c, path + ("destination",), m.destination)
    if m.percentage is not None:
        _check_percent(c, path + ("percentage",), m.percentage, "mirror percentage")


def _validate_http_route_destinations(
    c: _Checker, path: Path, dests: Sequence[HTTPRouteDestination | RouteDestination | None]
) -> None:
    """Istio `validateHTTPRouteDestinations` / `validateRouteDestinations`."""
    total = 0
    for i, d in enumerate(dests):
        p = path + (i,)
        if d is None:
            c.err(p, "weight may not be nil")
            continue
        if d.destination is None:
            c.err(p, "destination is required")
        else:
            _validate_destination(c, p + ("destination",), d.destination)
        if isinstance(d, HTTPRouteDestination):
            c.header_operations(p + ("headers",), d.headers)
        weight = d.weight or 0
        if weight < 0:
            c.err(p + ("weight",), f"weight {weight} < 0", weight)
        total += weight
    if len(dests) > 1 and total == 0:
        c.err(path, "total destination weight = 0")


def _validate_cors(c: _Checker, p: Path, cors: CorsPolicy) -> None:
    for i, origin in enumerate(cors.allow_origins or []):
        op = p + ("allowOrigins", i)
        fields = _set_fields(origin)
        match = next((getattr(origin, f) for f in fields), "") or ""
        if match == "":
            c.err(op, f"'{match}' is not a valid match type for CORS allow origins")
        else:
            _validate_string_match(c, op, origin, "corsPolicy.allowOrigins")
    for i, method in enumerate(cors.allow_methods or []):
        if method not in _CORS_METHODS:
            c.err(p + ("allowMethods", i), f"{_q(method)} is not a supported HTTP method", method)
    for field in ("allowHeaders", "exposeHeaders"):
        for i, name in enumerate(getattr(cors, to_snake(field)) or []):
            if not name:
                c.err(p + (field, i), "header name cannot be empty")
            elif name != "*" and _HEADER_NAME_RE.match(name) is None:
                c.err(p + (field, i), f"header name {name} is not a valid header name", name)
    ns = c.duration(p + ("maxAge",), cors.max_age)
    if ns is not None and ns % 1_000_000_000:
        c.err(
            p + ("maxAge",), "max_age duration is accurate only to seconds precision", cors.max_age
        )


def _fault_percentage(c: _Checker, path: Path, pct: Percent | None) -> None:
    """Istio `validatePercentage` (fault injection): 0, or 0.0001..100."""
    if pct is None:
        return
    v = pct.value
    if math.isnan(v) or v < 0.0 or v > 100.0 or (0.0 < v < 0.0001):
        c.err(
            path + ("value",),
            f"percentage {_gov(v)} is neither 0.0, nor in range [0.0001, 100.0]",
            v,
        )


def _http_status_error(status: int) -> str | None:
    # Istio's code tests `> 600` but says 200-599; Envoy rejects 600, so 600 is rejected here too.
    if status < 200 or status > 599:
        return f"HTTP status {status} is not in range 200-599"
    return None


def _validate_fault(c: _Checker, p: Path, f: HTTPFaultInjection) -> None:
    if f.abort is None and f.delay is None:
        c.err(p, "HTTP fault injection must have an abort and/or a delay")
    if f.abort is not None:
        a, ap = f.abort, p + ("abort",)
        _fault_percentage(c, ap + ("percentage",), a.percentage)
        kinds = [
            k
            for k, v in (
                ("httpStatus", a.http_status),
                ("grpcStatus", a.grpc_status),
                ("http2Error", a.http2_error),
            )
            if v is not None
        ]
        if len(kinds) > 1:
            c.err(
                ap,
                f"only one of httpStatus, grpcStatus or http2Error may be set (found "
                f"{' and '.join(kinds)})",
            )
        if a.grpc_status is not None and a.grpc_status not in _GRPC_STATUSES:
            c.err(
                ap + ("grpcStatus",),
                f"gRPC status {_q(a.grpc_status)} is not supported. See "
                "https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of "
                "supported codes, for example 'NOT_FOUND'",
                a.grpc_status,
            )
        if a.http2_error is not None:
            c.err(ap + ("http2Error",), "HTTP/2 abort fault injection not supported yet")
        if a.http_status is not None:
            c.opt(ap + ("httpStatus",), _http_status_error(a.http_status), a.http_status)
        if not kinds:
            c.warn(ap, "abort configured, but error type not set")
    if f.delay is not None:
        d, dp = f.delay, p + ("delay",)
        _fault_percentage(c, dp + ("percentage",), d.percentage)
        if d.percent is not None and not 0 <= d.percent <= 100:
            c.err(dp + ("percent",), f"percentage {d.percent} is not in range 0..100", d.percent)
        if d.fixed_delay is not None and d.exponential_delay is not None:
            c.err(dp, "only one of fixedDelay or exponentialDelay may be set")
        c.duration(dp + ("fixedDelay",), d.fixed_delay)
        if d.exponential_delay is not None:
            c.duration(dp + ("exponentialDelay",), d.exponential_delay)
            c.err(dp + ("exponentialDelay",), "exponentialDelay not supported yet")


def _validate_redirect(c: _Checker, p: Path, r: HTTPRedirect) -> None:
    """Istio `validateHTTPRedirect`, reporting every problem instead of the first."""
    if not r.uri and not r.authority and r.port is None and r.derive_port is None and not r.scheme:
        c.err(p, "redirect must specify URI, authority, scheme, or port")
    if r.port is not None and r.derive_port is not None:
        c.err(p, "only one of port or derivePort may be set")
    if r.redirect_code is not None and r.redirect_code != 0 and not 300 <= r.redirect_code <= 399:
        c.err(
            p + ("redirectCode",),
            f"{r.redirect_code} is not a valid redirect code, must be 3xx",
            r.redirect_code,
        )
    if r.scheme and r.scheme not in ("http", "https"):
        c.err(p + ("scheme",), 'invalid redirect scheme, must be "http" or "https"', r.scheme)
    if r.port is not None and r.port != 0:
        c.port(p + ("port",), r.port)


def _validate_direct_response(c: _Checker, p: Path, d: HTTPDirectResponse) -> None:
    if d.body is not None:
        bp = p + ("body",)
        if d.body.string is not None and d.body.bytes is not None:
            c.err(bp, "only one of string or bytes may be set")
        size = len(d.body.string.encode("utf-8")) if d.body.string is not None else 0
        if d.body.bytes is not None:
            try:
                size = max(size, len(base64.b64decode(d.body.bytes, validate=True)))
            except (binascii.Error, ValueError):
                c.err(bp + ("bytes",), "bytes must be base64-encoded")
        if size > _MB:
            c.err(
                bp,
                "large direct_responses may impact control plane performance, must be less "
                "than 1MB",
                size,
            )
        elif size > 100 * _KB:
            c.warn(bp, "large direct_responses may impact control plane performance", size)
    c.opt(p + ("status",), _http_status_error(d.status), d.status)


def _validate_retries(c: _Checker, p: Path, r: HTTPRetry) -> None:
    attempts = r.attempts or 0
    if attempts < 0:
        c.err(p + ("attempts",), "attempts cannot be negative", attempts)
    if attempts == 0 and (
        r.per_try_timeout is not None or r.retry_on or r.retry_remote_localities is not None
    ):
        c.err(p, "http retry policy configured when attempts are set to 0 (disabled)")
    c.duration(p + ("perTryTimeout",), r.per_try_timeout)
    if r.retry_on:
        # Split on "," only, as Istio does: " reset" (with a space) is not a policy.
        for token in r.retry_on.split(","):
            code = int(token) if _go_atoi_ok(token) else 0
            if code not in _GO_STATUS_CODES and token not in _RETRY_ON:
                c.err(p + ("retryOn",), f"{_q(token)} is not a valid retryOn policy", r.retry_on)
    c.duration(p + ("backoff",), r.backoff)


def _validate_rewrite(c: _Checker, p: Path, r: HTTPRewrite) -> None:
    if r.uri and r.uri_regex_rewrite is not None:
        c.err(p, "rewrite may only contain one of URI or UriRegexRewrite")
    if not r.uri and r.uri_regex_rewrite is None and not r.authority:
        c.err(
            p,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of "
            "URI or UriRegexRewrite may be specified",
        )
    rr = r.uri_regex_rewrite
    if rr is not None:
        rp = p + ("uriRegexRewrite",)
        if not rr.match or not rr.rewrite:
            c.err(
                rp,
                "UriRegexRewrite has errors: UriRegexRewrite requires both Rewrite and Match "
                "fields to be specified",
            )
        else:
            error = _regex_error(rr.match, "HTTPRewrite.UriRegexRewrite.Match")
            if error:
                c.err(rp + ("match",), f"UriRegexRewrite has errors: {error}", rr.match)


def _validate_authority_rewrite(
    c: _Checker, p: Path, rewrite: HTTPRewrite | None, headers: Headers | None
) -> None:
    current = rewrite.authority if rewrite is not None and rewrite.authority else ""
    request = headers.request if headers is not None else None
    if request is None:
        return
    for op in ("set", "add"):
        for name, value in (getattr(request, op) or {}).items():
            if not _is_authority_header(name):
                continue
            if current:
                c.err(
                    p + ("headers", "request", op, name),
                    f"authority header cannot be set multiple times: have {_q(current)}, "
                    f"attempting to set {_q(value)}",
                )
                return
            current = value


def _validate_tls_route(
    c: _Checker, p: Path, tls: TLSRoute, hosts: Sequence[str], gateways: Sequence[str]
) -> None:
    if not tls.match:
        c.err(p, "TLS route must have at least one match condition")
    for j, m in enumerate(tls.match or []):
        mp = p + ("match", j)
        if not m.sni_hosts:
            c.err(mp, "TLS match must have at least one SNI host")
        for k, sni in enumerate(m.sni_hosts or []):
            sp = mp + ("sniHosts", k)
            gateway_bound = bool(gateways) and MESH_GATEWAY not in gateways
            error = (
                _validate_wildcard_domain_for_gateway_vs(True, sni)
                if gateway_bound
                else validate_wildcard_domain(sni)
            )
            if error:
                if _is_ip(sni):
                    c.warn(
                        sp,
                        f"using an IP address ({_q(sni)}) goes against SNI spec and most "
                        "clients do not support this",
                        sni,
                    )
                else:
                    c.err(sp, error, sni)
            elif not any(_host_subset_of(sni, h) for h in hosts):
                c.err(
                    sp,
                    f"SNI host {_q(sni)} is not a compatible subset of any of the virtual service "
                    f"hosts: [{', '.join(hosts)}]",
                    sni,
                )
        _validate_l4_match(c, mp, m.destination_subnets, m.port, m.source_labels, m.gateways)
    if not tls.route:
        c.err(p, "TLS route is required")
    _validate_http_route_destinations(c, p + ("route",), tls.route or [])


def _validate_tcp_route(c: _Checker, p: Path, tcp: TCPRoute) -> None:
    for j, m in enumerate(tcp.match or []):
        _validate_l4_match(
            c, p + ("match", j), m.destination_subnets, m.port, m.source_labels, m.gateways
        )
    if not tcp.route:
        c.err(p, "TCP route is required")
    _validate_http_route_destinations(c, p + ("route",), tcp.route or [])


def _validate_l4_match(
    c: _Checker,
    p: Path,
    subnets: Sequence[str] | None,
    port: int | None,
    source_labels: Mapping[str, str] | None,
    gateways: Sequence[str] | None,
) -> None:
    for i, subnet in enumerate(subnets or []):
        c.opt(p + ("destinationSubnets", i), _validate_ip_subnet(subnet), subnet)
    if port:
        c.port(p + ("port",), port)
    c.labels(p + ("sourceLabels",), source_labels)
    c.gateway_names(p + ("gateways",), gateways)


# --- unreachable rules (IST0130 / IST0131) --------------------------------------------------------


def _route_name(rule: HTTPRoute, n: int) -> str:
    return _q(rule.name) if rule.name else f"#{n}"


def _match_name(match: HTTPMatchRequest | None, n: int) -> str:
    return _q(match.name) if match is not None and match.name else f"#{n}"


def _match_key(match: HTTPMatchRequest | None) -> str:
    """A canonical serialisation of a match without its name, to find duplicates (Istio asJSON)."""
    if match is None:
        return "null"
    data = match.model_dump(by_alias=True, exclude_none=True, exclude={"name"})
    return json.dumps(data, sort_keys=True)


def _exact_or_prefix(sm: StringMatch | None) -> str:
    if sm is None:
        return ""
    if sm.exact:
        return "exact:" + sm.exact
    if sm.prefix:
        return "prefix:" + sm.prefix
    return ""


class _PrefixMatch:
    """Istio `OverlappingMatchValidationForHTTPRoute`: a prefix match reduced for comparison."""

    def __init__(self, rule_n: int, rule_str: str, match_n: int, match: HTTPMatchRequest) -> None:
        assert match.uri is not None and match.uri.prefix
        self.rule_n, self.match_n = rule_n, match_n
        self.route_str = rule_str
        self.match_str = _match_name(match, match_n)
        self.prefix = match.uri.prefix
        self.port = match.port or 0
        self.method = _exact_or_prefix(match.method) or "exact:GET"
        self.authority = _exact_or_prefix(match.authority)
        self.headers = {k: _exact_or_prefix(v) for k, v in (match.headers or {}).items()}
        self.query = {k: _exact_or_prefix(v) for k, v in (match.query_params or {}).items()}
        self.without = {k: _exact_or_prefix(v) for k, v in (match.without_headers or {}).items()}


def _covers(a: _PrefixMatch, b: _PrefixMatch) -> bool:
    """Istio `coveredValidation`: does earlier match `a` catch everything later match `b` does."""
    if not b.prefix.startswith(a.prefix) or a.port != b.port:
        return False
    if a.method != b.method and not a.method.startswith(b.method):
        return False
    if a.authority != b.authority and not a.authority.startswith(b.authority):
        return False
    for am, bm in ((a.headers, b.headers), (a.query, b.query), (a.without, b.without)):
        if len(am) != len(bm):
            return False
        for k, v in am.items():
            if k not in bm or (v != bm[k] and not v.startswith(bm[k])):
                return False
    return True


def _analyze_unreachable_http_rules(
    c: _Checker, path: Path, rules: Sequence[HTTPRoute | None]
) -> None:
    """Istio `analyzeUnreachableHTTPRules`: warnings, like `istioctl analyze`."""

    def unused(n: int, rule: HTTPRoute, reason: str) -> None:
        c.warn(
            path + (n,),
            f"virtualService rule {_route_name(rule, n)} not used ({reason})",
            code=IST_UNREACHABLE_RULE,
        )

    def ineffective(p: Path, rule_s: str, match_s: str, dup_s: str) -> None:
        c.warn(
            p,
            f"virtualService rule {rule_s} match {match_s} is not used "
            f"(duplicate/overlapping match in rule {dup_s})",
            code=IST_INEFFECTIVE_MATCH,
        )

    seen: dict[str, int] = {}
    empty_match_at = -1
    prefixes: list[_PrefixMatch] = []
    for n, rule in enumerate(rules):
        if rule is None:
            continue
        if not rule.match:
            if empty_match_at >= 0:
                unused(n, rule, "only the last rule can have no matches")
            empty_match_at = n
            continue
        if empty_match_at >= 0:
            # Istio repeats this once per match; once per rule says the same.
            unused(n, rule, "route without matches defined before")
            continue
        duplicates = 0
        for m, match in enumerate(rule.match):
            key = _match_key(match)
            if key in seen:
                dup_n = seen[key]
                dup_rule = rules[dup_n]
                assert dup_rule is not None
                ineffective(
                    path + (n, "match", m),
                    _route_name(rule, n),
                    _match_name(match, m),
                    _route_name(dup_rule, dup_n),
                )
                duplicates += 1
                continue
            seen[key] = n
            if match is not None and match.uri is not None and match.uri.prefix:
                prefixes.append(_PrefixMatch(n, _route_name(rule, n), m, match))
        if duplicates == len(rule.match):
            unused(n, rule, "all matches used by prior rules")
    for i, a in enumerate(prefixes):
        for b in prefixes[i + 1 :]:
            if b.prefix == a.prefix:
                continue  # identical prefixes were handled as duplicates above
            if _covers(a, b):
                ineffective(
                    path + (b.rule_n, "match", b.match_n),
                    b.route_str,
                    f"{b.match_str} of prefix {b.prefix}",
                    f"{a.match_str} of prefix {a.prefix} on {a.route_str}",
                )


# --- DestinationRule ------------------------------------------------------------------------------


def _validate_destination_rule(c: _Checker, dr: DestinationRule) -> None:
    spec, sp = dr.spec, ("spec",)
    c.opt(sp + ("host",), validate_wildcard_domain(spec.host), spec.host)
    if spec.traffic_policy is not None:
        _validate_traffic_policy(c, sp + ("trafficPolicy",), spec.traffic_policy)
    names: set[str] = set()
    for i, subset in enumerate(spec.subsets or []):
        p = sp + ("subsets", i)
        if subset is None:
            c.err(p, "subset may not be null")
            continue
        if subset.name in names:
            c.err(p + ("name",), f"duplicate subset names: {subset.name}", subset.name)
        names.add(subset.name)
        c.opt(p + ("name",), _subset_name_error(subset.name), subset.name)
        c.labels(p + ("labels",), subset.labels)
        if subset.traffic_policy is not None:
            _validate_traffic_policy(c, p + ("trafficPolicy",), subset.traffic_policy)
    selector = spec.workload_selector
    c.export_to(sp + ("exportTo",), spec.export_to, dr_with_selector=selector is not None)
    if selector is not None:
        _validate_selector_labels(
            c, sp + ("workloadSelector", "matchLabels"), selector.match_labels
        )
        if not selector.match_labels:
            c.warn(sp + ("workloadSelector",), "workload selector specified without labels")


def _validate_selector_labels(c: _Checker, path: Path, labels: Mapping[str, str] | None) -> None:
    for k, v in (labels or {}).items():
        if k == "":
            c.err(path, f"empty key is not supported in selector: {_q(f'{k}={v}')}")
        if "*" in k or "*" in v:
            c.err(path + (k,), f"wildcard is not supported in selector: {_q(f'{k}={v}')}")


def _validate_traffic_policy(c: _Checker, p: Path, tp: TrafficPolicy) -> None:
    if all(
        getattr(tp, f) is None
        for f in (
            "outlier_detection",
            "connection_pool",
            "load_balancer",
            "tls",
            "port_level_settings",
            "tunnel",
            "proxy_protocol",
        )
    ):
        c.err(p, "traffic policy must have at least one field")
        return
    if tp.tunnel is not None and tp.proxy_protocol is not None:
        c.err(p, "tunnel and proxyProtocol must not be set together")
        return
    _validate_outlier_detection(c, p + ("outlierDetection",), tp.outlier_detection)
    if tp.connection_pool is not None:
        _validate_connection_pool(c, p + ("connectionPool",), tp.connection_pool)
    if tp.tls is not None:
        _validate_client_tls(c, p + ("tls",), tp.tls)
    for i, pl in enumerate(tp.port_level_settings or []):
        pp = p + ("portLevelSettings", i)
        if pl.port is None:
            c.err(pp, "portTrafficPolicy must have valid port")
        if all(
            getattr(pl, f) is None
            for f in ("outlier_detection", "connection_pool", "load_balancer", "tls")
        ):
            c.err(pp, "port traffic policy must have at least one field")
            continue
        _validate_outlier_detection(c, pp + ("outlierDetection",), pl.outlier_detection)
        if pl.connection_pool is not None:
            _validate_connection_pool(c, pp + ("connectionPool",), pl.connection_pool)
        if pl.tls is not None:
            _validate_client_tls(c, pp + ("tls",), pl.tls)


def _validate_outlier_detection(c: _Checker, p: Path, od: Mapping[str, Any] | None) -> None:
    # The model keeps outlierDetection as a mapping: read only the typed parts Istio checks.
    if od is None:
        return
    for field in ("baseEjectionTime", "interval"):
        value = od.get(field)
        if isinstance(value, str):
            c.duration(p + (field,), value)
    if od.get("consecutiveErrors"):
        c.warn(
            p + ("consecutiveErrors",),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or "
            "consecutive5xxErrors instead",
        )
    if not od.get("splitExternalLocalOriginErrors") and _positive(
        od.get("consecutiveLocalOriginFailures")
    ):
        c.err(
            p,
            "outlier detection consecutive local origin failures is specified, but split external "
            "local origin errors is set to false",
        )
    for field in ("maxEjectionPercent", "minHealthPercent"):
        value = od.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= 100:
            c.err(p + (field,), f"percentage {value} is not in range 0..100", value)


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _validate_connection_pool(c: _Checker, p: Path, cp: ConnectionPoolSettings) -> None:
    if cp.http is None and cp.tcp is None:
        c.err(p, "connection pool must have at least one field")
        return
    if cp.http is not None:
        h, hp = cp.http, p + ("http",)
        for field, attr, text in (
            ("http1MaxPendingRequests", "http1_max_pending_requests", "http1 max pending requests"),
            ("http2MaxRequests", "http2_max_requests", "http2 max requests"),
            (
                "maxRequestsPerConnection",
                "max_requests_per_connection",
                "max requests per connection",
            ),
            ("maxRetries", "max_retries", "max retries"),
            ("maxConcurrentStreams", "max_concurrent_streams", "max concurrent streams"),
        ):
            value = getattr(h, attr)
            if value is not None and value < 0:
                c.err(hp + (field,), f"{text} must be non-negative", value)
        c.duration(hp + ("idleTimeout",), h.idle_timeout)
        if h.h2_upgrade_policy == "UPGRADE" and h.use_client_protocol:
            c.err(hp, "use client protocol must not be true when H2UpgradePolicy is UPGRADE")
    if cp.tcp is not None:
        t, tp = cp.tcp, p + ("tcp",)
        if t.max_connections is not None and t.max_connections < 0:
            c.err(
                tp + ("maxConnections",), "max connections must be non-negative", t.max_connections
            )
        c.duration(tp + ("connectTimeout",), t.connect_timeout)
        c.duration(tp + ("maxConnectionDuration",), t.max_connection_duration)
        # 0s disables the idle timeout, so Istio skips the check for it.
        c.duration(tp + ("idleTimeout",), t.idle_timeout, allow_zero=True)
        for field in ("time", "interval"):
            value = (t.tcp_keepalive or {}).get(field)
            if isinstance(value, str):
                c.duration(tp + ("tcpKeepalive", field), value)


def _validate_client_tls(c: _Checker, p: Path, tls: ClientTLSSettings) -> None:
    """Istio `agent.ValidateTLS`."""
    if tls.insecure_skip_verify:
        if tls.mode == "SIMPLE" and (
            tls.ca_certificates or tls.credential_name or tls.subject_alt_names is not None
        ):
            c.err(
                p,
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when "
                "InsecureSkipVerify is set true",
            )
        if tls.mode == "MUTUAL" and (tls.ca_certificates or tls.subject_alt_names is not None):
            c.err(
                p,
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is "
                "set true",
            )
    if tls.mode in ("SIMPLE", "MUTUAL") and tls.credential_name:
        if tls.client_certificate or tls.ca_certificates or tls.private_key or tls.ca_crl:
            c.err(
                p,
                "cannot specify client certificates or CA certificate or CA CRL If "
                "credentialName is set",
            )
        return
    if tls.mode == "MUTUAL":
        if not tls.client_certificate:
            c.err(p, "client certificate required for mutual tls")
        if not tls.private_key:
            c.err(p, "private key required for mutual tls")


# --- ServiceEntry / WorkloadEntry -----------------------------------------------------------------


def _validate_workload_entry(
    c: _Checker,
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
        c.warn(p + ("address",), f"address is unset with network {_q(we.network)}")
    unix = addr.startswith(UNIX_PREFIX)
    if unix:
        c.opt(p + ("address",), _validate_unix_address(addr[len(UNIX_PREFIX) :]), addr)
        if we.ports:
            c.err(p + ("ports",), f"unix endpoint {addr} must not include ports", addr)
    elif addr and not _is_ip(addr):
        if not allow_fqdn:
            c.err(p + ("address",), f"endpoint address {_q(addr)} is not a valid IP address", addr)
        elif validate_fqdn(addr):
            c.err(
                p + ("address",),
                f"endpoint address {_q(addr)} is not a valid FQDN or an IP address",
                addr,
            )
    _validate_endpoint_ports(c, p, we, service_ports)
    c.labels(p + ("labels",), we.labels)
    if unix and service_ports is not None and len(service_ports) != 1:
        c.err(p, "exactly 1 service port required for unix endpoints")


def _validate_endpoint_ports(
    c: _Checker, p: Path, we: WorkloadEntrySpec, service_ports: set[str] | None
) -> None:
    for name, port in (we.ports or {}).items():
        pp = p + ("ports", name)
        if service_ports is not None and name not in service_ports:
            c.err(pp, f"endpoint port {port} is not defined by the service entry", name)
        if not is_dns1123_label(name):
            c.err(pp, f"invalid port name: {name}", name)
        c.port(pp, port)


def _validate_service_entry(c: _Checker, se: ServiceEntry) -> None:
    spec, sp = se.spec, ("spec",)
    hosts = spec.hosts or []
    resolution = spec.resolution or "NONE"
    selector = spec.workload_selector
    if selector is not None:
        _validate_selector_labels(c, sp + ("workloadSelector", "labels"), selector.labels)
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
            c.warn(hp, f"partial wildcard {_q(host)} not allowed", host)
    cidr = False
    for i, address in enumerate(spec.addresses or []):
        cidr = cidr or "/" in address
        c.opt(sp + ("addresses", i), _validate_ip_subnet(address), address)
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
                f"service entry port name {_q(port.name)} already defined",
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
        if port.protocol and _protocol(port.protocol) == "UnsupportedProtocol":
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
            if not _is_ip(addr) and validate_fqdn(addr):
                c.err(
                    ap + ("address",),
                    f"endpoint address {_q(addr)} is not a valid FQDN or an IP address",
                    addr,
                )
            c.labels(ap + ("labels",), ep.labels)
            _validate_endpoint_ports(c, ap, ep, port_names)
        if spec.addresses and len(hosts) > 1:
            if any(_is_tcp(_protocol(port.protocol)) for port in spec.ports or []):
                c.warn(
                    sp + ("hosts",),
                    "service entry can not have more than one host specified "
                    "simultaneously with address and tcp port",
                )
    elif resolution == "DYNAMIC_DNS":
        # meshmirror's reading of Istio's DYNAMIC_DNS rules (spec 2.6); texts are ours.
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
            if _protocol(port.protocol) not in ("HTTP", "TLS", "GRPC", "HTTP2"):
                c.err(
                    sp + ("ports", i, "protocol"),
                    "only HTTP, TLS, GRPC and HTTP2 ports are allowed for resolution mode "
                    "DYNAMIC_DNS",
                    port.protocol,
                )
    if resolution != "NONE" and len(hosts) > 1:
        for i, port in enumerate(spec.ports or []):
            proto = _protocol(port.protocol)
            if not _is_http(proto) and not _is_tls(proto):
                c.err(sp + ("ports", i), "multiple hosts provided with non-HTTP, non-TLS ports")
                break
    c.export_to(sp + ("exportTo",), spec.export_to, service_entry=True)


# --- Gateway --------------------------------------------------------------------------------------


def _validate_gateway(c: _Checker, gw: Gateway) -> None:
    sp: Path = ("spec",)
    if not is_dns1123_label(gw.metadata.name):
        c.err(
            ("metadata", "name"), f"invalid gateway name: {_q(gw.metadata.name)}", gw.metadata.name
        )
    servers = gw.spec.servers or []
    if not servers:
        c.err(sp + ("servers",), "gateway must have at least one server")
    port_names: set[str] = set()
    for i, server in enumerate(servers):
        p = sp + ("servers", i)
        if server is None:
            c.err(p, "cannot have nil server")
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
            if not _is_http(_protocol(server.port.protocol)) and https_redirect:
                c.warn(
                    p + ("tls", "httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                )


def _validate_server(c: _Checker, p: Path, server: Server) -> None:
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
        if _protocol(port.protocol) == "UnsupportedProtocol":
            c.err(
                pp + ("protocol",),
                f"invalid protocol {_q(port.protocol)}, supported protocols are HTTP, HTTP2, "
                "GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
                port.protocol,
            )
            port_ok = False
        if port.number > 0 or not bind.startswith(UNIX_PREFIX):
            error = _port_error(port.number)
            if error:
                c.err(pp + ("number",), error, port.number)
                port_ok = False
        if port.target_port:
            c.err(pp + ("targetPort",), "targetPort has no impact on Gateways", port.target_port)
            port_ok = False
        if not port.name:
            c.err(
                pp + ("name",),
                f"port name must be set: number:{port.number} protocol:{_q(port.protocol)}",
            )
            port_ok = False
    if bind.startswith(UNIX_PREFIX):
        c.opt(p + ("bind",), _validate_unix_address(bind[len(UNIX_PREFIX) :]), bind)
        if port is not None and port.number:
            c.err(p + ("bind",), "port number must be 0 for unix domain socket")
    elif bind:
        if not _is_ip(bind):
            c.err(p + ("bind",), f"{bind} is not a valid IP", bind)
    if server.tls is not None:
        _validate_server_tls(c, p + ("tls",), server.tls)
    if port_ok and port is not None:
        proto = _protocol(port.protocol)
        if _is_tls(proto) and server.tls is None:
            c.err(p, "server must have TLS settings for HTTPS/TLS protocols")
        elif not _is_tls(proto) and server.tls is not None:
            t = server.tls
            if _is_http(proto):
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
            out.append(f"invalid namespace value {_q(ns)} in gateway")
    else:
        name = host
    if name != "*" and "." not in name:
        out.append("short names (non FQDN) are not allowed")
    error = validate_wildcard_domain(name)
    if error and not _is_ip(name):
        out.append(error)
    if "*" in name and len(name) != 1 and not name.startswith("*."):
        out.append(f"partial wildcard {_q(name)} not allowed")
    return out


def _validate_server_tls(c: _Checker, p: Path, tls: ServerTLSSettings) -> None:
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


# --- Kubernetes Service ---------------------------------------------------------------------------

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


def _validate_kubernetes_service(c: _Checker, svc: KubernetesService) -> None:
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
                c.err(p + ("name",), f"Duplicate value: {_q(name)}", name)
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
                f'Unsupported value: {_q(protocol)}: supported values: "SCTP", "TCP", "UDP"',
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


def _validate_standalone_workload_entry(c: _Checker, we: WorkloadEntry) -> None:
    # Port names of a standalone WorkloadEntry cannot be checked against a ServiceEntry here.
    _validate_workload_entry(c, ("spec",), we.spec, None, allow_fqdn=True)


# --- entry point ----------------------------------------------------------------------------------

_VALIDATORS: dict[type, Callable[[_Checker, Any], None]] = {
    VirtualService: _validate_virtual_service,
    DestinationRule: _validate_destination_rule,
    ServiceEntry: _validate_service_entry,
    WorkloadEntry: _validate_standalone_workload_entry,
    Gateway: _validate_gateway,
    KubernetesService: _validate_kubernetes_service,
}


def validate_resources(resources: Sequence[LoadedResource]) -> list[Diagnostic]:
    """Every per-resource rule for every resource, plus duplicate definitions; never raises."""
    out: list[Diagnostic] = []
    out.extend(_duplicates(resources))
    for res in resources:
        checker = _Checker(res)
        validator = _VALIDATORS.get(type(res.obj))
        if validator is not None:
            try:
                validator(checker, res.obj)
            except Exception as e:  # a validator bug must not hide the user's errors
                checker.err((), f"internal error while validating: {type(e).__name__}: {e}")
        out.extend(checker.out)
    return out


def _duplicates(resources: Iterable[LoadedResource]) -> list[Diagnostic]:
    """The same kind/namespace/name twice in one config set: `kubectl apply` would keep only one."""
    first: dict[tuple[str, str, str], LoadedResource] = {}
    out: list[Diagnostic] = []
    for res in resources:
        key = (res.kind, res.namespace, res.name)
        earlier = first.get(key)
        if earlier is None:
            first[key] = res
            continue
        where = f"{earlier.source.file}:{earlier.source.line} (doc {earlier.source.doc})"
        out.append(
            res.diag(
                Severity.ERROR,
                ("metadata", "name"),
                f"duplicate {res.kind} {res.ref}: already defined at {where}",
                res.name,
            )
        )
    return out
