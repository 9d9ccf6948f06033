"""The route actions that answer locally instead of forwarding: redirect and directResponse,
and the one rule every local reply follows for a gRPC request.

Compiled once at configure time into frozen policies; the mitm glue (mitm/primary.py) turns
them into the response (the redirect's Location is computed per request from the request's
scheme, Host and path).
Kept apart from rewrites.py because these replace the upstream rather than change the request.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from meshmirror import grpc
from meshmirror.config.virtualservice import HTTPDirectResponse, HTTPRedirect
from meshmirror.hosts import strip_port
from meshmirror.policy.rewrites import PathRewrite, split_query

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class RedirectPolicy:
    """Envoy RedirectAction as Istio's `ApplyRedirect` builds it."""

    status: int = 301
    path: str | None = None
    authority: str | None = None
    scheme: str | None = None
    port: int | None = None  # port_redirect (explicit, or the listener port for FROM_REQUEST_PORT)
    # prefix_rewrite: the route's matched prefix swapped for the value (the query kept).
    prefix_rewrite: PathRewrite | None = None

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
        if self.prefix_rewrite is not None:
            new_path = self.prefix_rewrite.apply(path)
        elif self.path is not None:
            # A query in the redirect path replaces the request's; otherwise the query is kept.
            new_path = self.path if "?" in self.path else self.path + split_query(path)[1]
        return f"{new_scheme}://{host}{new_path}"

    def describe(self) -> str:
        """`301 to https://new.example:8443, prefix /foo -> /bar` (the route table's words)."""
        target = f"{self.scheme or '(scheme)'}://{self.authority or '(host)'}"
        if self.port:
            target += f":{self.port}"
        parts = [f"{self.status} to {target}"]
        if self.prefix_rewrite is not None:
            matched = self.prefix_rewrite.matched_prefix
            parts.append(
                f"prefix {matched if matched is not None else '(path)'} -> "
                f"{self.prefix_rewrite.replacement}"
            )
        elif self.path is not None:
            parts.append(f"path {self.path}")
        return ", ".join(parts)


def compile_redirect(
    rd: HTTPRedirect, listener_port: int, path_kind: str = "prefix", path_value: str = "/"
) -> RedirectPolicy:
    """Istio `ApplyRedirect` for one match block, whose path matcher is `path_kind` /
    `path_value` (the prefix a `prefixRewrite` swaps: Envoy swaps the path-separated prefix
    too, and the whole path of an exact match)."""
    port = rd.port or None
    if port is None and rd.derive_port == "FROM_REQUEST_PORT":
        port = listener_port
    prefix_rewrite = None
    if rd.prefix_rewrite:
        matched = path_value if path_kind in ("prefix", "path_separated_prefix") else None
        prefix_rewrite = PathRewrite("prefix", rd.prefix_rewrite, matched_prefix=matched)
    return RedirectPolicy(
        status=rd.redirect_code or 301,
        path=None if prefix_rewrite is not None else rd.uri or None,
        authority=rd.authority or None,
        scheme=rd.scheme or None,
        port=port,
        prefix_rewrite=prefix_rewrite,
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


# --- gRPC ---


def grpc_status_for_http(status: int) -> int:
    """Envoy `Grpc::Utility::httpToGrpcStatus` (gRPC's HTTP-to-gRPC status mapping)."""
    return _HTTP_TO_GRPC.get(status, 2)  # UNKNOWN


_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}


def grpc_local_reply(
    status: int, body: bytes, grpc_status: int | None = None
) -> list[tuple[bytes, bytes]]:
    """Envoy's local reply to a gRPC request (`prepareLocalReply`): a trailers-only response,
    HTTP status 200 with `grpc-status` (the given one, else mapped from `status`) and the body
    as `grpc-message`, percent-encoded as gRPC requires; no body. The header fields only: the
    status is always 200."""
    code = grpc_status if grpc_status is not None else grpc_status_for_http(status)
    fields = [(b"content-type", grpc.CONTENT_TYPE.encode()), (b"grpc-status", str(code).encode())]
    if body:
        fields.append((b"grpc-message", grpc.percent_encode(body)))
    return fields
