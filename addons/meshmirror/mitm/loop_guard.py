"""The config-time loop guard: mirror endpoints equal to the proxy's own listen address.

A copy sent to the proxy itself would come back as a new request and, without the marker header
that the copy carries, be mirrored again. `find_self_mirrors` finds such endpoints in a compiled
table, names included: an endpoint name (`resolution: DNS`) is resolved, every name at once in
threads within `RESOLVE_BUDGET` seconds, and counts as ours when any of its addresses is (a
name still unresolved by then is left to the run-time check, which skips a copy whose connection
reached our own listen address). `self_mirror_diagnostics` turns the hits into located errors,
which stop a load like any config error.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from meshmirror.diagnostics import Diagnostic, Severity
from meshmirror.hosts import is_ip
from meshmirror.mesh.clusters import Endpoint
from meshmirror.pipeline import ConfigSet
from meshmirror.routing.table import MirrorPolicy, Route, RouteTable

_ANY_HOSTS = frozenset({"", "0.0.0.0", "::", "*"})
RESOLVE_BUDGET = 2.0  # seconds for resolving every endpoint name of a config
# A load checks the table twice (validation, then the install); the second check reuses the
# first one's answers rather than asking the resolver again.
_CACHE_TTL = 10.0
_cache: dict[tuple[str, int], tuple[float, frozenset[str]]] = {}


def _is_ip(host: str) -> bool:
    return is_ip(host.strip("[]"))


def _addresses(name: str, port: int) -> frozenset[str]:
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)


def resolve_names(names: Iterable[tuple[str, int]], budget: float) -> dict[str, frozenset[str]]:
    """The addresses each (name, port) resolves to, as far as known within `budget` seconds (a
    name that fails, or is not done in time, maps to nothing). Names are looked up in parallel:
    one slow DNS answer costs the budget once, not once per name."""
    now = time.monotonic()
    out: dict[str, frozenset[str]] = {}
    todo = []
    for key in sorted(set(names)):
        cached = _cache.get(key)
        if cached is not None and cached[0] > now:
            out[key[0]] = out.get(key[0], frozenset()) | cached[1]
        else:
            todo.append(key)
    if not todo:
        return out
    if len(_cache) > 4096:
        _cache.clear()
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=min(8, len(todo)), thread_name_prefix="meshmirror-resolve"
    )
    try:
        futures = {pool.submit(_addresses, name, port): (name, port) for name, port in todo}
        done, _ = concurrent.futures.wait(futures, timeout=budget)
        for future in done:
            key = futures[future]
            addrs = future.result()
            _cache[key] = (now + _CACHE_TTL, addrs)
            out[key[0]] = out.get(key[0], frozenset()) | addrs
        return out
    finally:
        # Lookups still running finish in their threads; nobody waits for them.
        pool.shutdown(wait=False, cancel_futures=True)


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def same_address(endpoint_host: str, listen_host: str) -> bool:
    """Would a connection to `endpoint_host` reach a socket listening on `listen_host`?
    Loopback names are one machine; a wildcard listener accepts any local address we can tell."""
    e = endpoint_host.strip("[]").lower()
    h = listen_host.strip("[]").lower()
    if h in _ANY_HOSTS:
        return _is_loopback(e) or e in _ANY_HOSTS
    if e == h:
        return True
    return _is_loopback(e) and _is_loopback(h)


@dataclass(frozen=True, slots=True)
class SelfMirror:
    route: Route
    policy: MirrorPolicy
    endpoint: Endpoint
    listen: tuple[str, int]


def find_self_mirrors(
    table: RouteTable,
    listen: Iterable[tuple[str, int]],
    resolved: Mapping[str, frozenset[str]] | None = None,
) -> list[SelfMirror]:
    """Every (route, mirror policy, endpoint) whose endpoint is one of our listen addresses,
    by address or by what its name resolves to (`resolved`; None: resolve the endpoint names
    on a listen port now, within RESOLVE_BUDGET)."""
    addrs = [(h, p) for h, p in listen if p]
    found: list[SelfMirror] = []
    if not addrs:
        return found
    hits = [
        (route, policy, ep)
        for vh in table.virtual_hosts
        for route in vh.routes
        for policy in route.mirrors
        for ep in policy.cluster.endpoints
    ]
    if resolved is None:
        ports = {p for _, p in addrs}
        resolved = resolve_names(
            (
                (ep.address, ep.port)
                for _, _, ep in hits
                if ep.port in ports and not _is_ip(ep.address)
            ),
            RESOLVE_BUDGET,
        )
    for route, policy, ep in hits:
        candidates = (ep.address, *sorted(resolved.get(ep.address, ())))
        for host, port in addrs:
            if ep.port == port and any(same_address(c, host) for c in candidates):
                found.append(SelfMirror(route, policy, ep, (host, port)))
                break
    return found


def self_mirror_diagnostics(cs: ConfigSet, found: Sequence[SelfMirror]) -> list[Diagnostic]:
    """Located errors (file, line, VirtualService, YAML path) for `find_self_mirrors` hits."""
    out: list[Diagnostic] = []
    seen: set[tuple[str, str, str, int]] = set()
    for hit in found:
        route, policy, ep = hit.route, hit.policy, hit.endpoint
        key = (route.virtual_service, str(policy.source_path), ep.address, ep.port)
        if key in seen:
            continue
        seen.add(key)
        res = next(
            (
                r
                for r in cs.resources
                if r.kind == "VirtualService" and r.ref == route.virtual_service
            ),
            None,
        )
        ns, _, name = route.virtual_service.partition("/")
        verb = (
            "is"
            if _is_ip(ep.address) or ep.address.lower().rstrip(".") == "localhost"
            else ("resolves to")
        )
        out.append(
            Diagnostic(
                Severity.ERROR,
                f"mirror endpoint {ep.address}:{ep.port} of {policy.cluster.name} {verb} this "
                f"proxy's own listen address {hit.listen[0] or '*'}:{hit.listen[1]}; every copy "
                "would come back to the proxy",
                source=res.source if res is not None else None,
                kind="VirtualService",
                namespace=ns,
                name=name,
                path=policy.source_path,
                line=res.line_of(policy.source_path) if res is not None else None,
            )
        )
    return out
