"""The connection manager's header rules (mitm/edge.py), as the differential suite found them in
Envoy 1.40: pure, table-driven."""

from __future__ import annotations

import pytest

from meshmirror.mirror.shadow import host_address
from meshmirror.mitm.edge import connection_manager_fields

H = tuple[tuple[bytes, bytes], ...]


@pytest.mark.parametrize(
    ("fields", "client", "edge", "expected"),
    [
        pytest.param(
            ((b"Host", b"a"),),
            "10.0.0.1",
            False,
            ((b"Host", b"a"), (b"x-forwarded-proto", b"http")),
            id="mesh-proto-added",
        ),
        pytest.param(
            ((b"Host", b"a"), (b"X-Forwarded-Proto", b"https")),
            "10.0.0.1",
            False,
            None,
            id="mesh-proto-kept",
        ),
        pytest.param(
            (
                (b"Host", b"a"),
                (b"x-envoy-retry-on", b"5xx"),
                (b"x-envoy-foo", b"1"),
                (b"X-Forwarded-Proto", b"https"),
            ),
            "10.0.0.1",
            False,
            ((b"Host", b"a"), (b"x-envoy-foo", b"1"), (b"X-Forwarded-Proto", b"https")),
            id="mesh-control-header-removed",
        ),
        pytest.param(
            (
                (b"Host", b"a"),
                (b"X-Forwarded-For", b"1.1.1.1"),
                (b"x-forwarded-for", b"2.2.2.2"),
                (b"x-envoy-original-path", b"/x"),
                (b"x-envoy-upstream-rq-timeout-ms", b"5"),
            ),
            "10.0.0.1",
            True,
            (
                (b"Host", b"a"),
                (b"x-forwarded-for", b"1.1.1.1,2.2.2.2,10.0.0.1"),
                (b"x-envoy-external-address", b"10.0.0.1"),
                (b"x-forwarded-proto", b"http"),
            ),
            id="edge",
        ),
        pytest.param(
            ((b"Host", b"a"),),
            "127.0.0.1",
            True,
            (
                (b"Host", b"a"),
                (b"x-forwarded-for", host_address().encode()),
                (b"x-envoy-internal", b"true"),
                (b"x-forwarded-proto", b"http"),
            ),
            id="edge-loopback-client-is-internal",
        ),
        pytest.param(
            ((b"Host", b"a"), (b"X-Forwarded-For", b"9.9.9.9")),
            "127.0.0.1",
            True,
            (
                (b"Host", b"a"),
                (b"x-forwarded-for", b"9.9.9.9," + host_address().encode()),
                (b"x-envoy-external-address", b"127.0.0.1"),
                (b"x-forwarded-proto", b"http"),
            ),
            id="edge-loopback-client-with-a-forwarded-for-is-external",
        ),
    ],
)
def test_connection_manager_fields(fields: H, client: str, edge: bool, expected: H | None) -> None:
    assert connection_manager_fields(fields, client=client, scheme="http", edge=edge) == expected


def test_a_client_on_127_0_0_1_is_forwarded_as_the_machines_address_at_the_edge() -> None:
    out = connection_manager_fields((), client="127.0.0.1", scheme="http", edge=True)
    assert out is not None
    assert (b"x-forwarded-for", host_address().encode()) in out
