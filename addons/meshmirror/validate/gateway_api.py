"""Gateway API `Gateway` and `HTTPRoute`: the CRDs' OpenAPI bounds and CEL rules (GW-TYPES, GW-CEL).

What the API server would reject, with the CRD's own message text where the CRD has one (the CEL
`message:` strings; OpenAPI bounds as "should be greater than or equal to N"). Everything is
reported in one pass. Filters that convert to Istio fields meshmirror does not serve yet
(`NOT_YET_SERVED`) get the same "parsed but not yet served" warning a VirtualService gets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from meshmirror.config.gateway_api import (
    BackendObjectReference,
    Gateway,
    HTTPHeaderFilter,
    HTTPPathModifier,
    HTTPRoute,
    HTTPRouteFilter,
    HTTPRouteMatch,
    HTTPRouteRule,
)
from meshmirror.diagnostics import Path
from meshmirror.golang import parse_duration_ns
from meshmirror.validate.checker import Checker
from meshmirror.validate.matches import regex_error
from meshmirror.validate.virtualservice import NOT_YET_SERVED

# OpenAPI patterns of the CRDs (shared_types.go).
_HOSTNAME_RE = re.compile(
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
_DURATION_RE = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
_SECTION_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

MAX_PARENT_REFS = 32
MAX_HOSTNAMES = 16
MAX_RULES = 16
MAX_MATCHES = 64
MAX_FILTERS = 16
MAX_BACKEND_REFS = 16
MAX_HEADER_MATCHES = 16
MAX_HEADER_OPS = 16
MAX_LISTENERS = 64
MAX_WEIGHT = 1_000_000

#: filter type -> its member field (YAML spelling), for the "set iff type" rules.
FILTER_FIELDS: dict[str, str] = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "ExtensionRef": "extensionRef",
    "CORS": "cors",
}
_FIELD_ATTRS = {
    "requestHeaderModifier": "request_header_modifier",
    "responseHeaderModifier": "response_header_modifier",
    "requestMirror": "request_mirror",
    "requestRedirect": "request_redirect",
    "urlRewrite": "url_rewrite",
    "extensionRef": "extension_ref",
    "cors": "cors",
}
#: Filters the CRD forbids repeating within one filter list (RequestMirror may repeat).
NON_REPEATABLE = (
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestRedirect",
    "URLRewrite",
    "CORS",
)
#: filter type -> the Istio field it converts to (gatewayapi/rules.py), for not-yet-served warnings.
ISTIO_FIELD_OF_FILTER = {
    "RequestHeaderModifier": "headers",
    "ResponseHeaderModifier": "headers",
    "RequestRedirect": "redirect",
    "URLRewrite": "rewrite",
}
_REDIRECT_CODES = (301, 302, 303, 307, 308)


def _ge(minimum: int) -> str:
    return f"should be greater than or equal to {minimum}"


def _le(maximum: int) -> str:
    return f"should be less than or equal to {maximum}"


def _too_many(limit: int) -> str:
    return f"must have at most {limit} items"


# --- Gateway ------------------------------------------------------------------------------------


def validate_gateway_api_gateway(c: Checker, gw: Gateway) -> None:
    sp: Path = ("spec",)
    if not gw.spec.gateway_class_name:
        c.err(sp + ("gatewayClassName",), "Required value")
    listeners = gw.spec.listeners or []
    if not listeners:
        c.err(sp + ("listeners",), "should have at least 1 items")
    if len(listeners) > MAX_LISTENERS:
        c.err(sp + ("listeners",), _too_many(MAX_LISTENERS), len(listeners))
    names: set[str] = set()
    combos: set[tuple[int, str, str]] = set()
    for i, ln in enumerate(listeners):
        p = sp + ("listeners", i)
        if not ln.name:
            c.err(p + ("name",), "Required value")
        elif not _SECTION_NAME_RE.match(ln.name):
            c.err(p + ("name",), "must be a valid section name (lower-case DNS subdomain)", ln.name)
        elif ln.name in names:
            c.err(p + ("name",), "Listener name must be unique within the Gateway", ln.name)
        names.add(ln.name)
        if not 1 <= ln.port <= 65535:
            c.err(p + ("port",), "should be between 1 and 65535", ln.port)
        if not ln.protocol:
            c.err(p + ("protocol",), "Required value")
        if ln.hostname is not None:
            _hostname(c, p + ("hostname",), ln.hostname)
            if ln.protocol in ("TCP", "UDP"):
                c.err(
                    p + ("hostname",),
                    "hostname must not be specified for protocols ['TCP', 'UDP']",
                )
        if ln.tls is not None and ln.protocol in ("HTTP", "TCP", "UDP"):
            c.err(p + ("tls",), "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']")
        if ln.protocol == "HTTPS" and ln.tls is None:
            c.err(p + ("tls",), "tls mode must be set for protocol HTTPS")
        combo = (ln.port, ln.protocol, ln.hostname or "")
        if combo in combos:
            c.err(p, "Combination of port, protocol and hostname must be unique for each listener")
        combos.add(combo)
        if ln.protocol and ln.protocol not in ("HTTP", "HTTPS"):
            c.warn(p + ("protocol",), f"{ln.protocol} listeners are not served by meshmirror")


# --- HTTPRoute ----------------------------------------------------------------------------------


def validate_http_route(c: Checker, route: HTTPRoute) -> None:
    sp: Path = ("spec",)
    spec = route.spec
    parents = spec.parent_refs or []
    if len(parents) > MAX_PARENT_REFS:
        c.err(sp + ("parentRefs",), _too_many(MAX_PARENT_REFS), len(parents))
    for i, ref in enumerate(parents):
        p = sp + ("parentRefs", i)
        if not ref.name:
            c.err(p + ("name",), "Required value")
        if ref.port is not None and not 1 <= ref.port <= 65535:
            c.err(p + ("port",), "should be between 1 and 65535", ref.port)
        if ref.section_name is not None and not _SECTION_NAME_RE.match(ref.section_name):
            c.err(p + ("sectionName",), "must be a valid section name", ref.section_name)
    hostnames = spec.hostnames or []
    if len(hostnames) > MAX_HOSTNAMES:
        c.err(sp + ("hostnames",), _too_many(MAX_HOSTNAMES), len(hostnames))
    for i, h in enumerate(hostnames):
        _hostname(c, sp + ("hostnames", i), h)
    rules = spec.rules or []
    if len(rules) > MAX_RULES:
        c.err(sp + ("rules",), _too_many(MAX_RULES), len(rules))
    for i, rule in enumerate(rules):
        _rule(c, sp + ("rules", i), rule)


def _hostname(c: Checker, path: Path, host: str) -> None:
    if not host or len(host) > 253 or not _HOSTNAME_RE.match(host):
        c.err(
            path,
            "should match '^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*"
            "[a-z0-9])?)*$' (a lower-case hostname, optionally with a leading '*.')",
            host,
        )


def _rule(c: Checker, p: Path, rule: HTTPRouteRule) -> None:
    matches = rule.matches or []
    if len(matches) > MAX_MATCHES:
        c.err(p + ("matches",), _too_many(MAX_MATCHES), len(matches))
    for j, m in enumerate(matches):
        _match(c, p + ("matches", j), m)
    filters = rule.filters or []
    _filters(c, p + ("filters",), filters, matches)
    backends = rule.backend_refs or []
    if len(backends) > MAX_BACKEND_REFS:
        c.err(p + ("backendRefs",), _too_many(MAX_BACKEND_REFS), len(backends))
    if backends and any(f.request_redirect is not None for f in filters):
        c.err(p, "RequestRedirect filter must not be used together with backendRefs")
    for k, b in enumerate(backends):
        bp = p + ("backendRefs", k)
        _backend_ref(c, bp, b.object_ref())
        if b.weight is not None and not 0 <= b.weight <= MAX_WEIGHT:
            c.err(bp + ("weight",), f"should be between 0 and {MAX_WEIGHT}", b.weight)
        if b.filters:
            _filters(c, bp + ("filters",), b.filters, matches)
            for f, flt in enumerate(b.filters):
                if flt.type == "RequestMirror":
                    c.warn(
                        bp + ("filters", f),
                        "RequestMirror on a backendRef is not supported by Istio or meshmirror "
                        "(put it on the rule); ignored",
                    )
    if rule.timeouts is not None:
        _timeouts(c, p + ("timeouts",), rule.timeouts.request, rule.timeouts.backend_request)
    for name in ("retry", "session_persistence"):
        if getattr(rule, name) is not None:
            field = "sessionPersistence" if name == "session_persistence" else name
            c.warn(p + (field,), f"{field} is parsed but not served by meshmirror")
    if not backends and not any(f.type == "RequestRedirect" for f in filters):
        if "directResponse" in NOT_YET_SERVED:
            c.warn(
                p,
                "a rule without backendRefs answers 500 (Istio directResponse), which is "
                "parsed but not yet served by meshmirror",
            )


def _match(c: Checker, p: Path, m: HTTPRouteMatch) -> None:
    if m.path is not None:
        pp = p + ("path", "value")
        value = m.path.value
        if len(value) > 1024:
            c.err(pp, _too_many(1024) + " characters", len(value))
        if m.path.type in ("Exact", "PathPrefix"):
            for message in path_value_errors(value):
                c.err(pp, message, value)
        else:
            c.opt(pp, regex_error(value, "path"), value)
    headers = m.headers or []
    if len(headers) > MAX_HEADER_MATCHES:
        c.err(p + ("headers",), _too_many(MAX_HEADER_MATCHES), len(headers))
    _unique_names(c, p + ("headers",), [h.name for h in headers], fold=True)
    for k, h in enumerate(headers):
        hp = p + ("headers", k)
        _header_name(c, hp + ("name",), h.name)
        if h.type == "RegularExpression":
            c.opt(hp + ("value",), regex_error(h.value, "header"), h.value)
    params = m.query_params or []
    _unique_names(c, p + ("queryParams",), [q.name for q in params], fold=False)
    for k, q in enumerate(params):
        qp = p + ("queryParams", k)
        if not q.name:
            c.err(qp + ("name",), "should be at least 1 chars long")
        if q.type == "RegularExpression":
            c.opt(qp + ("value",), regex_error(q.value, "query parameter"), q.value)


def path_value_errors(value: str) -> list[str]:
    """The CEL rules on `HTTPPathMatch.value` for Exact and PathPrefix (httproute_types.go)."""
    out: list[str] = []
    if not value.startswith("/"):
        out.append(
            "value must be an absolute path and start with '/' when type one of "
            "['Exact', 'PathPrefix']"
        )
    if "//" in value:
        out.append("must not contain '//' when type one of ['Exact', 'PathPrefix']")
    if "/./" in value:
        out.append("must not contain '/./' when type one of ['Exact', 'PathPrefix']")
    if "/../" in value:
        out.append("must not contain '/../' when type one of ['Exact', 'PathPrefix']")
    if "%2f" in value:
        out.append("must not contain '%2f' when type one of ['Exact', 'PathPrefix']")
    if "%2F" in value:
        out.append("must not contain '%2F' when type one of ['Exact', 'PathPrefix']")
    if "#" in value:
        out.append("must not contain '#' when type one of ['Exact', 'PathPrefix']")
    if value.endswith("/.."):
        out.append("must not end with '/..' when type one of ['Exact', 'PathPrefix']")
    if value.endswith("/."):
        out.append("must not end with '/.' when type one of ['Exact', 'PathPrefix']")
    if not re.fullmatch(r"[A-Za-z0-9/\-._~%!$&'()*+,;=:@]*", value):
        out.append(
            "must only contain valid characters (matching "
            "^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$) for types "
            "['Exact', 'PathPrefix']"
        )
    return out


def _header_name(c: Checker, path: Path, name: str) -> None:
    if not name or len(name) > 256 or not _HEADER_NAME_RE.match(name):
        c.err(path, "should match '^[A-Za-z0-9!#$%&'*+\\-.^_`|~]+$' (an HTTP header name)", name)


def _unique_names(c: Checker, path: Path, names: Sequence[str], *, fold: bool) -> None:
    seen: set[str] = set()
    for k, name in enumerate(names):
        key = name.lower() if fold else name
        if key in seen:
            c.err(path + (k, "name"), f"Duplicate value: name {name!r}", name)
        seen.add(key)


def _filters(
    c: Checker, p: Path, filters: Sequence[HTTPRouteFilter], matches: Sequence[HTTPRouteMatch]
) -> None:
    if len(filters) > MAX_FILTERS:
        c.err(p, _too_many(MAX_FILTERS), len(filters))
    types: list[str] = [f.type for f in filters]
    for t in NON_REPEATABLE:
        if types.count(t) > 1:
            c.err(p, f"{t} filter cannot be repeated")
    if "RequestRedirect" in types and "URLRewrite" in types:
        c.err(
            p,
            "May specify either httpRouteFilterRequestRedirect or "
            "httpRouteFilterRequestRewrite, but not both",
        )
    for k, f in enumerate(filters):
        _filter(c, p + (k,), f, matches)


def _filter(c: Checker, p: Path, f: HTTPRouteFilter, matches: Sequence[HTTPRouteMatch]) -> None:
    for t, member in FILTER_FIELDS.items():
        present = getattr(f, _FIELD_ATTRS[member]) is not None
        if present and f.type != t:
            c.err(p + (member,), f"filter.{member} must be nil if the filter.type is not {t}")
        if not present and f.type == t:
            c.err(p, f"filter.{member} must be specified for {t} filter.type")
    istio_field = ISTIO_FIELD_OF_FILTER.get(f.type)
    if istio_field is not None and istio_field in NOT_YET_SERVED:
        c.warn(
            p,
            f"{f.type} is parsed but not yet served by meshmirror (it becomes Istio {istio_field})",
        )
    if f.type in ("ExtensionRef", "CORS"):
        c.warn(p, f"{f.type} filters are not supported by meshmirror; ignored")
    if f.request_header_modifier is not None:
        _header_filter(c, p + ("requestHeaderModifier",), f.request_header_modifier)
    if f.response_header_modifier is not None:
        _header_filter(c, p + ("responseHeaderModifier",), f.response_header_modifier)
    if f.request_mirror is not None:
        rm = f.request_mirror
        mp = p + ("requestMirror",)
        _backend_ref(c, mp + ("backendRef",), rm.backend_ref)
        if rm.percent is not None and rm.fraction is not None:
            c.err(mp, "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter")
        if rm.percent is not None:
            if rm.percent < 0:
                c.err(mp + ("percent",), _ge(0), rm.percent)
            elif rm.percent > 100:
                c.err(mp + ("percent",), _le(100), rm.percent)
        if rm.fraction is not None:
            fr = rm.fraction
            fp = mp + ("fraction",)
            if fr.numerator < 0:
                c.err(fp + ("numerator",), _ge(0), fr.numerator)
            if fr.denominator < 1:
                c.err(fp + ("denominator",), _ge(1), fr.denominator)
            if fr.numerator > fr.denominator:
                c.err(fp, "numerator must be less than or equal to denominator")
    if f.request_redirect is not None:
        rd = f.request_redirect
        rp = p + ("requestRedirect",)
        if rd.hostname is not None:
            _hostname(c, rp + ("hostname",), rd.hostname)
        if rd.port is not None and not 1 <= rd.port <= 65535:
            c.err(rp + ("port",), "should be between 1 and 65535", rd.port)
        if rd.status_code is not None and rd.status_code not in _REDIRECT_CODES:
            c.err(
                rp + ("statusCode",),
                'Unsupported value: supported values: "301", "302", "303", "307", "308"',
                rd.status_code,
            )
        if rd.path is not None:
            _path_modifier(c, rp + ("path",), rd.path, matches, "RequestRedirect")
    if f.url_rewrite is not None:
        rw = f.url_rewrite
        wp = p + ("urlRewrite",)
        if rw.hostname is not None:
            _hostname(c, wp + ("hostname",), rw.hostname)
        if rw.path is not None:
            _path_modifier(c, wp + ("path",), rw.path, matches, "URLRewrite")


def _header_filter(c: Checker, p: Path, hf: HTTPHeaderFilter) -> None:
    for op in ("set", "add"):
        items = getattr(hf, op) or []
        if len(items) > MAX_HEADER_OPS:
            c.err(p + (op,), _too_many(MAX_HEADER_OPS), len(items))
        _unique_names(c, p + (op,), [h.name for h in items], fold=True)
        for k, h in enumerate(items):
            _header_name(c, p + (op, k, "name"), h.name)
            if len(h.value) > 4096:
                c.err(p + (op, k, "value"), "may not be longer than 4096", len(h.value))
    removes = hf.remove or []
    if len(removes) > MAX_HEADER_OPS:
        c.err(p + ("remove",), _too_many(MAX_HEADER_OPS), len(removes))
    seen: set[str] = set()
    for k, name in enumerate(removes):
        _header_name(c, p + ("remove", k), name)
        if name.lower() in seen:
            c.err(p + ("remove", k), f"Duplicate value: {name!r}", name)
        seen.add(name.lower())


def _path_modifier(
    c: Checker, p: Path, pm: HTTPPathModifier, matches: Sequence[HTTPRouteMatch], where: str
) -> None:
    if pm.type == "ReplaceFullPath":
        if pm.replace_full_path is None:
            c.err(p, "replaceFullPath must be specified when type is set to 'ReplaceFullPath'")
        if pm.replace_prefix_match is not None:
            c.err(p, "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set")
    else:
        if pm.replace_prefix_match is None:
            c.err(
                p, "replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'"
            )
        if pm.replace_full_path is not None:
            c.err(p, "type must be 'ReplaceFullPath' when replaceFullPath is set")
        prefix_matches = [m for m in matches if m.path is None or m.path.type == "PathPrefix"]
        if len(matches) != 1 or len(prefix_matches) != 1:
            c.err(
                p,
                f"When using {where} filter with path.replacePrefixMatch, exactly one PathPrefix "
                "match must be specified",
            )
    for field, value in (
        ("replaceFullPath", pm.replace_full_path),
        ("replacePrefixMatch", pm.replace_prefix_match),
    ):
        if value is not None and value and not value.startswith("/"):
            c.err(p + (field,), "must be an absolute path and start with '/'", value)


def _backend_ref(c: Checker, p: Path, ref: BackendObjectReference) -> None:
    if not ref.name:
        c.err(p + ("name",), "Required value")
    if not ref.group and (ref.kind or "Service") == "Service" and ref.port is None:
        c.err(p, "Must have port for Service reference")
    if ref.port is not None and not 1 <= ref.port <= 65535:
        c.err(p + ("port",), "should be between 1 and 65535", ref.port)


def _timeouts(c: Checker, p: Path, request: str | None, backend: str | None) -> None:
    parsed: dict[str, int] = {}
    for field, value in (("request", request), ("backendRequest", backend)):
        if value is None:
            continue
        if not _DURATION_RE.match(value):
            c.err(p + (field,), "should match '^([0-9]{1,5}(h|m|s|ms)){1,4}$'", value)
            continue
        parsed[field] = parse_duration_ns(value)
    req, back = parsed.get("request"), parsed.get("backendRequest")
    if req is not None and back is not None and req != 0 and (back == 0 or back > req):
        c.err(p, "backendRequest timeout cannot be longer than request timeout")
    if request is not None and "timeout" in NOT_YET_SERVED:
        c.warn(p, "timeouts is parsed but not yet served by meshmirror (it becomes Istio timeout)")
