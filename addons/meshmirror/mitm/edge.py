"""What Envoy's HTTP connection manager does to a client's request headers before any filter or
route sees them, as Istio configures it, so that the primary and its copies carry what they
would behind Envoy (the differential suite compares them field by field):

- Envoy's control headers are not taken from clients: the ones the router would obey
  (`x-envoy-retry-on`, `x-envoy-upstream-rq-timeout-ms`, ...) and `x-envoy-internal` are
  removed from every request (no client address is internal), X-Forwarded-Client-Cert too
  (Envoy's default SANITIZE); at a Gateway, Istio's edge (`use_remote_address`), also the ones
  an edge proxy sets itself (`x-envoy-decorator-operation`, `x-envoy-original-path`, ...).
- At a Gateway, X-Forwarded-For gets the client's address appended (the machine's own for a
  client on 127.0.0.1, as Envoy does), `x-envoy-external-address` is the client's address
  (`x-envoy-internal: true` instead for a client on 127.0.0.1 that sent no X-Forwarded-For) and
  X-Forwarded-Proto the scheme the client used; in the mesh (a sidecar) X-Forwarded-Proto is set
  when the client did not send one.

Pure: `connection_manager_fields` takes the raw fields and returns the new ones.
"""

from __future__ import annotations

from meshmirror.mirror.shadow import host_address
from meshmirror.mitm.headers import without_connection_token

Fields = tuple[tuple[bytes, bytes], ...]

#: Removed from every client request (Envoy's internal-only headers; found by the differential
#: suite against Envoy 1.40).
INTERNAL_ONLY = frozenset(
    name.encode()
    for name in (
        "x-envoy-expected-rq-timeout-ms",
        "x-envoy-force-trace",
        "x-envoy-hedge-on-per-try-timeout",
        "x-envoy-internal",
        "x-envoy-ip-tags",
        "x-envoy-max-retries",
        "x-envoy-retriable-header-names",
        "x-envoy-retriable-status-codes",
        "x-envoy-retry-grpc-on",
        "x-envoy-retry-on",
        "x-envoy-upstream-alt-stat-name",
        "x-envoy-upstream-rq-per-try-timeout-ms",
        "x-envoy-upstream-rq-timeout-alt-response",
        "x-envoy-upstream-rq-timeout-ms",
        "x-envoy-upstream-stream-duration-ms",
        "x-forwarded-client-cert",
    )
)
#: Removed at the edge as well: an edge proxy sets them itself.
EDGE_ONLY = frozenset(
    name.encode()
    for name in (
        "x-envoy-decorator-operation",
        "x-envoy-downstream-service-cluster",
        "x-envoy-downstream-service-node",
        "x-envoy-external-address",
        "x-envoy-original-path",
        "x-forwarded-for",
        "x-forwarded-proto",
    )
)
_XFF = b"x-forwarded-for"
_PROTO = b"x-forwarded-proto"
_SET_HERE = frozenset({_XFF, _PROTO, b"x-envoy-external-address"})
_LOOPBACK = ("127.0.0.1", "::1")


def connection_manager_fields(
    fields: Fields, *, client: str | None, scheme: str, edge: bool
) -> Fields | None:
    """The fields Envoy forwards for a request from `client` over `scheme` (`http`/`https`);
    `edge`: the proxy acts as a Gateway. None when nothing changes."""
    out: list[tuple[bytes, bytes]] = []
    forwarded: list[bytes] = []
    has_proto = changed = False
    nominated = _nominated(fields)
    for name, value in fields:
        if nominated and name.lower() in nominated:
            # Named hop-by-hop by the client: Envoy's codec drops it before the connection
            # manager adds its own, and the Connection field no longer names it.
            changed = True
            continue
        if name[:2] in (b"x-", b"X-"):
            low = name.lower()
            if low in INTERNAL_ONLY:
                changed = True
                continue
            if edge and low in EDGE_ONLY:
                if low == _XFF:
                    forwarded.append(value)
                changed = True
                continue
            has_proto = has_proto or low == _PROTO
        out.append((name, value))
    if edge:
        address = (client or "").removeprefix("::ffff:")
        # Envoy's internal request: the client is the loopback address itself and sent no
        # X-Forwarded-For (the one address in it is then Envoy's own); every other request
        # is external and says from where.
        internal = address in _LOOPBACK and not forwarded
        forwarded.append((host_address() if address in _LOOPBACK else address).encode())
        out.append((_XFF, b",".join(forwarded)))
        if internal:
            out.append((b"x-envoy-internal", b"true"))
        else:
            out.append((b"x-envoy-external-address", address.encode()))
    if edge or not has_proto:
        out.append((_PROTO, scheme.encode()))
        changed = True
    if nominated:
        fixed = out
        for token in nominated:
            fixed = list(without_connection_token(tuple(fixed), token))
        out = fixed
    return tuple(out) if changed else None


def _nominated(fields: Fields) -> frozenset[bytes]:
    """The fields this module sets that the client's Connection names."""
    tokens: set[bytes] = set()
    for name, value in fields:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens & _SET_HERE)
