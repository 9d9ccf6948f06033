"""policy/cors.py: corsPolicy as Envoy's CORS filter applies it under Istio, table-driven.

The expected headers follow Envoy's `CorsFilter::decodeHeaders` / `encodeHeaders` (and its
integration tests: a preflight from an allowed origin carries the expose headers too).
"""

from __future__ import annotations

from typing import Any

import pytest

from meshmirror.config.virtualservice import CorsPolicy
from meshmirror.policy.cors import CrossOriginPolicy, compile_cors

FULL = {
    "allowOrigins": [{"exact": "https://a.example"}, {"prefix": "https://b."}],
    "allowMethods": ["POST", "GET"],
    "allowHeaders": ["content-type", "x-grpc-web"],
    "exposeHeaders": ["x-total"],
    "maxAge": "24h",
    "allowCredentials": True,
}


def policy(spec: dict[str, Any]) -> CrossOriginPolicy:
    p = compile_cors(CorsPolicy.model_validate(spec))
    assert p is not None
    return p


def preflight(origin: str, method: str = "GET", headers: str | None = None) -> dict[str, str]:
    h = {"origin": origin, "access-control-request-method": method}
    if headers is not None:
        h["access-control-request-headers"] = headers
    return h


@pytest.mark.parametrize(
    ("spec", "method", "headers", "expected"),
    [
        pytest.param(
            FULL,
            "OPTIONS",
            preflight("https://a.example"),
            {
                "access-control-allow-origin": "https://a.example",
                "access-control-allow-credentials": "true",
                "access-control-allow-methods": "POST,GET",
                "access-control-allow-headers": "content-type,x-grpc-web",
                "access-control-max-age": "86400",
                "access-control-expose-headers": "x-total",
            },
            id="allowed-origin-answered",
        ),
        pytest.param(
            FULL,
            "OPTIONS",
            preflight("https://b.other"),
            {
                "access-control-allow-origin": "https://b.other",
                "access-control-allow-credentials": "true",
                "access-control-allow-methods": "POST,GET",
                "access-control-allow-headers": "content-type,x-grpc-web",
                "access-control-max-age": "86400",
                "access-control-expose-headers": "x-total",
            },
            id="prefix-origin-answered",
        ),
        pytest.param(
            FULL, "OPTIONS", preflight("https://c.example"), None, id="unmatched-forwarded"
        ),
        pytest.param(
            {**FULL, "unmatchedPreflights": "IGNORE"},
            "OPTIONS",
            preflight("https://c.example"),
            {
                "access-control-allow-credentials": "true",
                "access-control-allow-methods": "POST,GET",
                "access-control-allow-headers": "content-type,x-grpc-web",
                "access-control-max-age": "86400",
            },
            id="unmatched-ignore-answered-without-origin",
        ),
        pytest.param(
            {"allowOrigins": [{"regex": "https://.*\\.envoyproxy\\.io"}]},
            "OPTIONS",
            preflight("https://www.envoyproxy.io"),
            {"access-control-allow-origin": "https://www.envoyproxy.io"},
            id="regex-origin-full-match",
        ),
        pytest.param(
            {"allowOrigins": [{"regex": "envoyproxy"}]},
            "OPTIONS",
            preflight("https://www.envoyproxy.io"),
            None,
            id="regex-is-not-a-search",
        ),
        pytest.param(
            {"allowOrigins": [{"exact": "*"}], "allowMethods": ["*"], "allowHeaders": ["*"]},
            "OPTIONS",
            preflight("https://any.example", "PUT", "x-a,x-b"),
            {
                "access-control-allow-origin": "https://any.example",
                "access-control-allow-methods": "PUT",
                "access-control-allow-headers": "x-a,x-b",
            },
            id="star-echoes-origin-method-headers",
        ),
        pytest.param(
            {"allowOrigin": ["https://old.example"]},
            "OPTIONS",
            preflight("https://old.example"),
            {"access-control-allow-origin": "https://old.example"},
            id="deprecated-allow-origin-is-exact",
        ),
        pytest.param(
            {"allowOrigins": [{"exact": "https://A.example"}]},
            "OPTIONS",
            preflight("https://a.example"),
            None,
            id="exact-is-case-sensitive",
        ),
        pytest.param(
            {**FULL, "maxAge": "1.5s"},
            "OPTIONS",
            preflight("https://a.example"),
            "1",
            id="max-age-seconds",
        ),
        pytest.param(FULL, "GET", preflight("https://a.example"), None, id="not-options"),
        pytest.param(
            FULL,
            "OPTIONS",
            {"origin": "https://a.example"},
            None,
            id="options-without-request-method",
        ),
        pytest.param(
            FULL,
            "OPTIONS",
            {"origin": "", "access-control-request-method": "GET"},
            None,
            id="empty-origin",
        ),
    ],
)
def test_preflight(
    spec: dict[str, Any], method: str, headers: dict[str, str], expected: Any
) -> None:
    answer = policy(spec).preflight_answer(method, headers)
    if isinstance(expected, str):
        assert answer is not None
        assert (
            dict((n.decode(), v.decode()) for n, v in answer)["access-control-max-age"] == expected
        )
        return
    if expected is None:
        assert answer is None
    else:
        assert answer is not None
        assert [(n.decode(), v.decode()) for n, v in answer] == list(expected.items())


@pytest.mark.parametrize(
    ("spec", "origin", "expected"),
    [
        pytest.param(
            FULL,
            "https://a.example",
            [
                ("access-control-allow-origin", "https://a.example"),
                ("access-control-allow-credentials", "true"),
                ("access-control-expose-headers", "x-total"),
            ],
            id="allowed",
        ),
        pytest.param(FULL, "https://c.example", [], id="not-allowed-unchanged"),
        pytest.param(FULL, "", [], id="no-origin"),
        pytest.param(
            {"allowOrigins": [{"prefix": ""}]},
            "https://z.example",
            [("access-control-allow-origin", "https://z.example")],
            id="empty-prefix-allows-all",
        ),
        pytest.param(
            {"allowOrigins": [{"exact": "https://a.example"}], "allowCredentials": False},
            "https://a.example",
            [("access-control-allow-origin", "https://a.example")],
            id="credentials-false-omitted",
        ),
    ],
)
def test_actual_request_response_headers(
    spec: dict[str, Any], origin: str, expected: list[tuple[str, str]]
) -> None:
    got = policy(spec).response_headers({"origin": origin})
    assert [(n.decode(), v.decode()) for n, v in got] == expected


def test_dump_is_istios_per_filter_config() -> None:
    assert policy({**FULL, "unmatchedPreflights": "IGNORE"}).to_envoy() == {
        "envoy.filters.http.cors": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": [{"exact": "https://a.example"}, {"prefix": "https://b."}],
            "allow_methods": "POST,GET",
            "allow_headers": "content-type,x-grpc-web",
            "expose_headers": "x-total",
            "max_age": "86400",
            "allow_credentials": True,
            "filter_enabled": {"default_value": {"numerator": 100}},
            "forward_not_matching_preflights": False,
        }
    }


def test_no_cors_policy_compiles_to_nothing() -> None:
    assert compile_cors(None) is None
