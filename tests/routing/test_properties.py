"""Property tests: arbitrary requests never make matching raise; arbitrary header lists never
break the copy's headers (and never leak a redacted value)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshmirror.mirror import shadow
from meshmirror.pipeline import load_config_set
from meshmirror.routing.explain import explain_request
from meshmirror.routing.match import match_request
from meshmirror.routing.paths import normalize_path
from meshmirror.routing.request_view import RequestView
from meshmirror.routing.table import RouteTable

CONFIG = """
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: shadow}
spec:
  hosts: [shadow.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 9}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: [app.example.com, "*.wild.example.com"]
  http:
  - match:
    - uri: {prefix: /api/}
      headers: {x-user: {regex: "a.*"}, x-env: {exact: prod}}
      queryParams: {debug: {exact: "1"}}
      ignoreUriCase: true
    - uri: {regex: "/v[0-9]+/.*"}
      method: {exact: POST}
      withoutHeaders: {x-skip: {exact: "1"}}
    route: [{destination: {host: shadow.local}}]
    mirror: {host: shadow.local}
    mirrorPercentage: {value: 50}
  - match: [{uri: {exact: /exact}, authority: {prefix: app}, scheme: {exact: http}}]
    route: [{destination: {host: shadow.local}}]
  - route: [{destination: {host: shadow.local}}]
"""


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> RouteTable:
    path: Path = tmp_path_factory.mktemp("props") / "c.yaml"
    path.write_text(CONFIG)
    cs = load_config_set([str(path)])
    assert not cs.errors, [d.format() for d in cs.errors]
    assert cs.table is not None
    return cs.table


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
hostile = st.sampled_from(
    ["", "/", "*", "/..", "/api/../v1/x", "/%2e%2e/", "\\", "?", "#", "%", "/a//b", "[::1]", ":"]
)
paths = st.one_of(text, hostile, st.lists(st.one_of(text, hostile), max_size=6).map("".join))
authorities = st.one_of(
    text,
    st.sampled_from(
        ["", "app.example.com", "APP.EXAMPLE.COM.", "[::1]:80", "u:p@app", "x.wild.example.com:1"]
    ),
)
header_items = st.lists(
    st.tuples(st.one_of(text, st.sampled_from(["x-user", "x-env", "x-skip", ":path"])), text),
    max_size=8,
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.one_of(text, st.sampled_from(["GET", "POST", "CONNECT", "PRI"])),
    scheme=st.sampled_from(["http", "https", ""]),
    authority=authorities,
    path=paths,
    headers=header_items,
    port=st.integers(0, 70000),
)
def test_matching_never_raises(
    table: RouteTable,
    method: str,
    scheme: str,
    authority: str,
    path: str,
    headers: list[tuple[str, str]],
    port: int,
) -> None:
    view = RequestView.build(method, scheme, authority, path, headers, port)
    match_request(table, view)
    explanation = explain_request(table, view)
    assert explanation is not None
    _ = view.query


@given(path=paths)
def test_normalize_path_is_total_and_keeps_the_query(path: str) -> None:
    out = normalize_path(path)
    q = path.find("?")
    if q != -1:
        assert out.endswith(path[q:])
    if path.startswith("/") and q == -1:
        assert out.startswith("/") and "/../" not in out and not out.endswith("/..")


header_bytes = st.binary(max_size=40)


@given(
    fields=st.lists(
        st.tuples(
            st.one_of(
                header_bytes,
                st.sampled_from(
                    [b"Host", b"cookie", b"X-Forwarded-For", b"x-request-id", b"Authorization"]
                ),
            ),
            header_bytes,
        ),
        max_size=12,
    ),
    host=text,
    forwarded_for=st.one_of(st.none(), st.sampled_from(["127.0.0.1", "::1"])),
    request_id=st.one_of(st.none(), st.just("rid")),
)
def test_mirror_headers_never_break_and_never_leak_redacted(
    fields: list[tuple[bytes, bytes]], host: str, forwarded_for: str | None, request_id: str | None
) -> None:
    redact = shadow.parse_redactions(["Authorization", "Cookie=mask"])
    out = shadow.mirror_headers(
        fields,
        shadow=shadow.shadow_host(host),
        forwarded_for=forwarded_for,
        request_id=request_id,
        redact=redact,
    )
    assert out[0][0] == b"host"
    assert out[-1] == (shadow.MARKER_HEADER, shadow.MARKER_VALUE)
    assert [n for n, _ in out].count(b"host") == 1
    for name, value in out:
        assert name.lower() != b"authorization"
        if name.lower() == b"cookie":
            assert value == shadow.REDACTED
