"""RequestView: what route matching sees of one request, built once per request (pure).

Kept apart from the matchers so that everything which builds a request for matching (the addon,
the CLI, benchmarks) depends only on this small type, not on the compiled conditions. Derived
views (path without query, lower-case forms, decoded query) are cached on first use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import unquote

from meshmirror.hosts import strip_port
from meshmirror.routing.paths import normalize_path


@dataclass(frozen=True)
class RequestView:
    """What route matching sees of a request; built once per request by the addon or the CLI.

    `authority` is the Host/:authority value as sent (may carry `:port`); `path` the raw request
    target (path and query); `headers` has lower-case names with repeated values joined by ",";
    `port` is the listener port tested by `match[].port`.
    """

    method: str
    scheme: str
    authority: str
    path: str
    headers: Mapping[str, str]
    port: int

    @classmethod
    def build(
        cls,
        method: str,
        scheme: str,
        authority: str,
        path: str,
        header_items: Iterable[tuple[str, str]],
        port: int,
    ) -> RequestView:
        headers: dict[str, str] = {}
        for name, value in header_items:
            key = name.lower()
            prev = headers.get(key)
            # Envoy: "Multiple headers are concatenated with ','" before matching.
            headers[key] = value if prev is None else f"{prev},{value}"
        return cls.of(method, scheme, authority, path, headers, port)

    @classmethod
    def of(
        cls,
        method: str,
        scheme: str,
        authority: str,
        path: str,
        headers: Mapping[str, str],
        port: int,
    ) -> RequestView:
        """As `build`, from headers already keyed by lower-case name and joined with ","."""
        # Envoy matches the normalised path (Istio's default BASE normalisation, paths.py).
        return cls(method, scheme, authority, normalize_path(path), headers, port)

    # Derived views are computed on first use only: most requests never need the query parsed.

    @cached_property
    def path_only(self) -> str:
        """The path without query string and fragment (what `exact` and `regex` see)."""
        path = self.path
        for sep in ("?", "#"):
            i = path.find(sep)
            if i != -1:
                path = path[:i]
        return path

    @cached_property
    def path_lower(self) -> str:
        return self.path.lower()

    @cached_property
    def path_only_lower(self) -> str:
        return self.path_only.lower()

    @cached_property
    def host(self) -> str:
        """Host without port, lower-case: what virtual-host selection compares (Istio sets
        `ignore_port_in_host_matching`)."""
        return strip_port(self.authority).lower()

    @cached_property
    def query(self) -> Mapping[str, str]:
        """Decoded query parameters; the first value of a repeated key wins (Envoy's
        `getFirstValue`). `?key` yields "" for key."""
        out: dict[str, str] = {}
        i = self.path.find("?")
        if i == -1:
            return out
        query = self.path[i + 1 :]
        j = query.find("#")
        if j != -1:
            query = query[:j]
        for part in query.split("&"):
            if not part:
                continue
            name, _, value = part.partition("=")
            # Envoy's percent decoding does not turn "+" into a space; unquote does not either.
            key = unquote(name)
            if key not in out:
                out[key] = unquote(value)
        return out

    def header(self, name: str) -> str | None:
        """A header by lower-case name; the pseudo-headers `:authority`, `:method`, `:scheme` and
        `:path` come from the request line, as Envoy represents HTTP/1 requests."""
        if name.startswith(":"):
            if name == ":authority":
                return self.authority
            if name == ":method":
                return self.method
            if name == ":scheme":
                return self.scheme
            if name == ":path":
                return self.path
        return self.headers.get(name)
