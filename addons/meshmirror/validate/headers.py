"""HTTP header names and values: Istio's header-operation and header-match name rules."""

from __future__ import annotations

import re

from meshmirror.golang import go_quote

HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~A-Za-z0-9]+\Z")
_HEADER_VALUE_BAD_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})
_JWT_CLAIM_PREFIX = "@request.auth.claims"


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


def header_name_with_authority_error(name: str) -> str | None:
    """`ValidateHTTPHeaderWithAuthorityOperationName` (request add/set)."""
    if not name:
        return "header name cannot be empty"
    if _is_internal_header(name) and not is_authority_header(name):
        return f'invalid header {go_quote(name)}: header cannot have ":" prefix'
    return None


def header_operation_name_error(name: str) -> str | None:
    """`ValidateHTTPHeaderOperationName` (request remove, all response operations)."""
    if not name:
        return "header name cannot be empty"
    if name.lower() == "host":
        return f"invalid header {go_quote(name)}: cannot set Host header"
    if _is_internal_header(name):
        return f'invalid header {go_quote(name)}: header cannot have ":" prefix'
    return None


def header_value_error(value: str) -> str | None:
    if _HEADER_VALUE_BAD_RE.search(value):
        return f"header value configuration {value} is invalid"
    syntax = _validate_header_value_syntax(value)
    return f"header value configuration: {syntax}" if syntax else None


def _is_internal_header(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def is_authority_header(name: str) -> bool:
    return name.lower() in (":authority", "host")


def is_jwt_claim(name: str) -> bool:
    rest = name[len(_JWT_CLAIM_PREFIX) :]
    return name.startswith(_JWT_CLAIM_PREFIX) and len(rest) > 1 and rest[0] in ".["


def header_match_name_error(name: str) -> str | None:
    """`ValidateHTTPHeaderNameOrJwtClaimRoute`."""
    if not name:
        return "header name cannot be empty"
    if is_jwt_claim(name) or name in _PSEUDO_HEADERS:
        return None
    if HEADER_NAME_RE.match(name) is None:
        return f"header name {name} is not a valid header name"
    return None
