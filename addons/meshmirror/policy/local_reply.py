"""The route actions that answer locally instead of forwarding: redirect and directResponse.

Compiled once at configure time into frozen policies; the mitm glue (mitm/primary.py) turns
them into the response (the redirect's Location is computed per request from the request's
scheme, Host and path).
Kept apart from rewrites.py because these replace the upstream rather than change the request.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from meshmirror.config.virtualservice import HTTPDirectResponse, HTTPRedirect
from meshmirror.hosts import strip_port
from meshmirror.policy.rewrites import split_query

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class RedirectPolicy:
    """Envoy RedirectAction as Istio's `ApplyRedirect` builds it."""

    status: int = 301
    path: str | None = None
    authority: str | None = None
    scheme: str | None = None
    port: int | None = None  # port_redirect (explicit, or the listener port for FROM_REQUEST_PORT)

    def location(self, scheme: str, authority: str, path: str) -> str:
        """The Location header for a request (scheme, Host, path with query)."""
        new_scheme = self.scheme or scheme
        host = self.authority or authority
        if self.port:
            host = f"{strip_port(host)}:{self.port}"
        elif new_scheme != scheme:
            # Envoy drops the original scheme's default port when the scheme changes.
            name, _, port = host.rpartition(":")
            if name and ":" not in name and port == str(_DEFAULT_PORTS.get(scheme)):
                host = name
        new_path = path
        if self.path is not None:
            # A query in the redirect path replaces the request's; otherwise the query is kept.
            new_path = self.path if "?" in self.path else self.path + split_query(path)[1]
        return f"{new_scheme}://{host}{new_path}"


def compile_redirect(rd: HTTPRedirect, listener_port: int) -> RedirectPolicy:
    port = rd.port or None
    if port is None and rd.derive_port == "FROM_REQUEST_PORT":
        port = listener_port
    return RedirectPolicy(
        status=rd.redirect_code or 301,
        path=rd.uri or None,
        authority=rd.authority or None,
        scheme=rd.scheme or None,
        port=port,
    )


@dataclass(frozen=True, slots=True)
class DirectResponsePolicy:
    status: int
    body: bytes = b""


def compile_direct_response(dr: HTTPDirectResponse) -> DirectResponsePolicy:
    body = b""
    if dr.body is not None:
        if dr.body.string is not None:
            body = dr.body.string.encode("utf-8")
        elif dr.body.bytes is not None:
            try:
                body = base64.b64decode(dr.body.bytes, validate=True)
            except (binascii.Error, ValueError):
                body = b""  # validation reports it as an error first
    return DirectResponsePolicy(dr.status, body)
