"""validate/httproute.py: Istio 1.31's `redirect.prefixRewrite` rules (`validateHTTPRedirect`).

Cases named `TestValidateHTTPRedirect/...` and `TestValidateHTTPRoute/...` are those Go tests'
cases (istio/istio pkg/config/validation/validation_test.go) in YAML, with the message
validation.go gives for them.
"""

from __future__ import annotations

import pytest

from meshmirror.diagnostics import format_path
from tests.validate.test_resources import errors, rule, run, warnings

ONE_OF = "redirect may only specify one of uri or prefix_rewrite"
PREFIX_ONLY = "redirect prefix_rewrite requires all URI matches to use prefix match type"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            "redirect: {prefixRewrite: /bar}",
            [],
            id="TestValidateHTTPRedirect/prefix_rewrite alone",
        ),
        pytest.param(
            "redirect: {authority: foo.example.com, prefixRewrite: /}",
            [],
            id="TestValidateHTTPRedirect/prefix_rewrite with authority",
        ),
        pytest.param(
            "redirect: {uri: /old, prefixRewrite: /new}",
            [("spec.http[0].redirect", ONE_OF)],
            id="TestValidateHTTPRedirect/uri and prefix_rewrite mutually exclusive",
        ),
        pytest.param(
            "match: [{uri: {prefix: /foo}}]\nredirect: {prefixRewrite: /bar}",
            [],
            id="TestValidateHTTPRoute/prefix_rewrite redirect with prefix URI match",
        ),
        pytest.param(
            "match: [{uri: {exact: /foo}}]\nredirect: {prefixRewrite: /bar}",
            [("spec.http[0].redirect.prefixRewrite", PREFIX_ONLY)],
            id="TestValidateHTTPRoute/prefix_rewrite redirect with exact URI match is invalid",
        ),
        pytest.param(
            "match: [{uri: {regex: /foo.*}}]\nredirect: {prefixRewrite: /bar}",
            [("spec.http[0].redirect.prefixRewrite", PREFIX_ONLY)],
            id="TestValidateHTTPRoute/prefix_rewrite redirect with regex URI match is invalid",
        ),
        pytest.param(
            "match: [{headers: {x-foo: {exact: bar}}}]\nredirect: {prefixRewrite: /bar}",
            [],
            id="TestValidateHTTPRoute/"
            "prefix_rewrite redirect with no URI match (wildcard) is valid",
        ),
        pytest.param(
            "match: [{uri: {prefix: /a}}, {uri: {exact: /b}}]\nredirect: {prefixRewrite: /c}",
            [("spec.http[0].redirect.prefixRewrite", PREFIX_ONLY)],
            id="every-uri-match-must-be-a-prefix",
        ),
        pytest.param(
            "match: [{uri: {prefix: ''}}]\nredirect: {prefixRewrite: /c}",
            [],
            id="an-empty-prefix-is-a-prefix",
        ),
        pytest.param(
            "match: [{uri: {exact: /b}}]\nredirect: {uri: /c}",
            [],
            id="uri-redirect-takes-any-match",
        ),
        pytest.param(
            "redirect: {}",
            [("spec.http[0].redirect", "redirect must specify URI, authority, scheme, or port")],
            id="TestValidateHTTPRedirect/empty uri and authority",
        ),
    ],
)
def test_redirect_prefix_rewrite(body: str, expected: list[tuple[str, str]]) -> None:
    ds = run(rule(body))
    assert [(format_path(d.path), d.message) for d in errors(ds)] == expected
    assert warnings(ds) == []
