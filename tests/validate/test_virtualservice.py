"""validate/virtualservice.py: null list items answered as Istio's `ValidateVirtualService`
answers them (validation.go: `validateTLSRoute` / `validateTCPRoute` return early on a nil route;
`validateTLSMatch`, `validateTCPMatch` and `validateRouteDestinations` name a nil item), and
no "not served" warning for `corsPolicy` or a `grpcStatus` abort, which are served."""

from __future__ import annotations

import pytest

from meshmirror.diagnostics import format_path
from tests.validate.test_resources import ROUTE, errors, rule, run, vs


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("hosts: [a.example]\ntls: [null]", [], id="null-tls-route-passes"),
        pytest.param("hosts: [a.example]\ntcp: [null]", [], id="null-tcp-route-passes"),
        pytest.param(
            "hosts: [a.example]\ntls:\n- match: [null]\n"
            "  route: [{destination: {host: a.example}}]",
            [("spec.tls[0].match[0]", "TLS match may not be null")],
            id="null-tls-match",
        ),
        pytest.param(
            "hosts: [a.example]\ntcp:\n- match: [null]\n  route: [{destination: {host: db}}]",
            [("spec.tcp[0].match[0]", "tcp match may not be nil")],
            id="null-tcp-match",
        ),
        pytest.param(
            "hosts: [a.example]\ntcp:\n- route: [null]",
            [("spec.tcp[0].route[0]", "weight may not be nil")],
            id="null-tcp-route-destination",
        ),
        pytest.param(
            "hosts: [a.example]\ntls:\n- match: [{sniHosts: [a.example]}]\n  route: [null]",
            [("spec.tls[0].route[0]", "weight may not be nil")],
            id="null-tls-route-destination",
        ),
    ],
)
def test_null_items(spec: str, expected: list[tuple[str, str]]) -> None:
    ds = run(vs(spec))
    assert [(format_path(d.path), d.message) for d in errors(ds)] == expected


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            f"{ROUTE}\ncorsPolicy: {{allowOrigins: [{{exact: 'https://a.example'}}], "
            "allowMethods: [GET], maxAge: 24h, allowCredentials: true, "
            "unmatchedPreflights: IGNORE}",
            id="corsPolicy",
        ),
        pytest.param(
            f"{ROUTE}\nfault: {{abort: {{grpcStatus: UNAVAILABLE, percentage: {{value: 50}}}}}}",
            id="fault.abort.grpcStatus",
        ),
        pytest.param(
            "match: [{uri: {prefix: /old}}]\nredirect: {prefixRewrite: /new}",
            id="redirect.prefixRewrite",
        ),
    ],
)
def test_served_fields_are_valid_without_warnings(body: str) -> None:
    assert run(rule(body)) == []
