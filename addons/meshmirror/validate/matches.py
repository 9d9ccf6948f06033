"""StringMatch, RE2 regexes and `HTTPMatchRequest` (Istio `validateHTTPRouteMatchRequest`)."""

from __future__ import annotations

import re2

from meshmirror.config.base import StringMatch
from meshmirror.config.virtualservice import HTTPRoute
from meshmirror.diagnostics import Path
from meshmirror.golang import go_quote
from meshmirror.regex import compile_regex
from meshmirror.validate.checker import Checker
from meshmirror.validate.headers import header_match_name_error
from meshmirror.validate.names import is_dns1123_label

MAX_REGEX_LEN = 1024


def _re2_error(pattern: str) -> str | None:
    try:
        compile_regex(pattern)
    except re2.error as e:
        raw = e.args[0] if e.args else e
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return f"error parsing regexp: {text}"
    except Exception as e:  # any failure of the binding means "not valid RE2"
        return f"error parsing regexp: {e}"
    return None


def set_fields(sm: StringMatch) -> list[str]:
    return [f for f in ("exact", "prefix", "regex") if getattr(sm, f) is not None]


def validate_string_match(
    c: Checker, path: Path, sm: StringMatch | None, where: str, *, allow_empty_prefix: bool = False
) -> None:
    """Istio `validateStringMatch` (and `validateStringMatchRegexp` for `uri`), plus the oneof."""
    if sm is None:
        return
    fields = set_fields(sm)
    if len(fields) > 1:
        c.err(
            path,
            f"{go_quote(where)}: only one of exact, prefix or regex may be set "
            f"(found {' and '.join(fields)})",
        )
    if sm.prefix is not None and sm.prefix == "" and not allow_empty_prefix:
        c.err(path + ("prefix",), f"{go_quote(where)}: prefix string match should not be empty", "")
    if sm.regex is not None:
        _check_regex(c, path + ("regex",), sm.regex, where)


def _check_regex(c: Checker, path: Path, regex: str, where: str) -> None:
    if regex == "":
        c.err(path, f"{go_quote(where)}: regex string match should not be empty", regex)
        return
    c.opt(path, regex_error(regex, where), regex)


def regex_error(regex: str, where: str) -> str | None:
    """Istio `validateStringRegexp`: length cap and RE2 syntax."""
    if len(regex) > MAX_REGEX_LEN:
        return f"{go_quote(where)}: regex is too large, max length allowed is {MAX_REGEX_LEN}"
    error = _re2_error(regex)
    if error is None:
        return None
    return (
        f"{go_quote(where)}: {error}; Istio uses RE2 style regex-based match "
        "(https://github.com/google/re2/wiki/Syntax)"
    )


def validate_http_match_requests(c: Checker, p: Path, h: HTTPRoute) -> None:
    """Istio `validateHTTPRouteMatchRequest`."""
    for j, match in enumerate(h.match or []):
        if match is None:
            continue
        mp = p + ("match", j)
        for name, header in (match.headers or {}).items():
            hp = mp + ("headers", name)
            if header is None:
                c.err(hp, f"header match {name} cannot be null")
            c.opt(hp, header_match_name_error(name), name)
            # `regex: "*"` is a present-match, not a regex (Istio exempts it only for
            # withoutHeaders in validation but converts it the same way for all three).
            if header is not None and header.regex != "*":
                validate_string_match(c, hp, header, "headers")
        for name, header in (match.without_headers or {}).items():
            hp = mp + ("withoutHeaders", name)
            c.opt(hp, header_match_name_error(name), name)
            if header is None:
                # Istio skips this; meshmirror rejects it rather than guess its meaning.
                c.err(hp, f"withoutHeaders match {name} cannot be null")
            elif header.regex != "*":  # `*` means "present", it is not compiled
                validate_string_match(c, hp, header, "withoutHeaders")
        # uri allows an empty prefix (Envoy does); scheme/method/authority do not.
        if match.uri is not None:
            validate_string_match(c, mp + ("uri",), match.uri, "uri", allow_empty_prefix=True)
        for field in ("scheme", "method", "authority"):
            validate_string_match(c, mp + (field,), getattr(match, field), field)
        for name, qp in (match.query_params or {}).items():
            qpath = mp + ("queryParams", name)
            if qp is None:
                c.err(qpath, f"query param match {name} cannot be null")
            elif qp.regex != "*":
                validate_string_match(c, qpath, qp, "queryParams")
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
