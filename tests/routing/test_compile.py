"""routes.py: Istio -> Envoy route translation for the proxy meshmirror plays."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meshmirror.config.loader import load_text
from meshmirror.config.resources import LoadedResource
from meshmirror.diagnostics import Diagnostic, Severity
from meshmirror.routing.compile import compile_route_table
from meshmirror.routing.explain import retries_text, route_policy_lines
from meshmirror.routing.table import Route, RouteTable

# --- helpers ----------------------------------------------------------------------------------


def load(text: str) -> list[LoadedResource]:
    loaded = load_text(text, "test.yaml")
    assert not loaded.errors, [d.format() for d in loaded.errors]
    return loaded.resources


def compile_ok(
    text: str, gateway: str | None = None, listener_port: int = 80
) -> tuple[RouteTable, list[Diagnostic]]:
    table, diags = compile_route_table(load(text), gateway=gateway, listener_port=listener_port)
    assert table is not None, [d.format() for d in diags]
    assert not [d for d in diags if d.is_error]
    return table, diags


def all_routes(table: RouteTable) -> list[Route]:
    return [r for vh in table.virtual_hosts for r in vh.routes]


def vs(http: str, hosts: str = "[app.example.com]", extra: str = "", name: str = "app") -> str:
    """A VirtualService document; `http` is the YAML list under spec.http (indented 2)."""
    return (
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n"
        f"metadata: {{name: {name}}}\nspec:\n  hosts: {hosts}\n{extra}  http:\n{http}"
    )


# --- the seed, Step 4 ---------------------------------------------------------------------------

# Cluster A's configuration from the seed's Step 3 (Service, ServiceEntry, DestinationRule,
# Gateway, VirtualService), with the Deployment's pod replaced by a loopback WorkloadEntry.
SEED_CLUSTER_A = """
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  labels: {app: httpbin, service: httpbin}
spec:
  ports:
  - name: http
    port: 8000
    targetPort: 80
  selector:
    app: httpbin
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata:
  name: httpbin-v1
spec:
  address: 127.0.0.1
  labels: {app: httpbin, version: v1}
  ports: {http: 28080}
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: httpbin-cluster-b
spec:
  hosts:
  - httpbin.mirror.cluster-b
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports: {http: 28081}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  subsets:
  - name: v1
    labels:
      version: v1
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: httpbin-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: httpbin
spec:
  gateways:
    - httpbin-gateway
  hosts:
    - '*'
  http:
    - match:
        - uri:
            prefix: /headers
      mirror:
        host: httpbin.mirror.cluster-b
        port:
          number: 80
      mirrorPercentage:
        value: 50
      route:
        - destination:
            host: httpbin
            port:
              number: 8000
            subset: v1
"""

# The seed's Step 4 Envoy config dump, verbatim.
SEED_STEP4_ROUTES = json.loads(
    """
[
  {
    "match": {
      "prefix": "/headers",
      "case_sensitive": true
    },
    "route": {
      "cluster": "outbound|8000|v1|httpbin.default.svc.cluster.local",
      "timeout": "0s",
      "retry_policy": {
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retry_host_predicate": [
          {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
              "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            }
          }
        ],
        "host_selection_retry_max_attempts": "5",
        "retriable_status_codes": [503]
      },
      "request_mirror_policies": [
        {
          "cluster": "outbound|80||httpbin.mirror.cluster-b",
          "runtime_fraction": {
            "default_value": {
              "numerator": 500000,
              "denominator": "MILLION"
            }
          },
          "trace_sampled": false
        }
      ]
    }
  }
]
"""  # noqa: E501 (the seed's dump, verbatim)
)


def test_seed_step4_dump() -> None:
    table, diags = compile_ok(SEED_CLUSTER_A)
    assert diags == []
    assert table.gateway == "default/httpbin-gateway"
    dump = table.to_envoy()
    assert dump["name"] == "http.80"
    [vhost] = dump["virtual_hosts"]
    assert vhost["name"] == "*:80"
    assert vhost["domains"] == ["*"]
    expected = json.loads(json.dumps(SEED_STEP4_ROUTES))
    # The seed's dump predates Istio 1.24, which took 503 out of the mesh default policy.
    del expected[0]["route"]["retry_policy"]["retriable_status_codes"]
    # Istio's default retry policy is in the dump only where the proxy applies it.
    applied = table.to_envoy(default_retries=True)["virtual_hosts"][0]["routes"]
    assert applied == expected
    del expected[0]["route"]["retry_policy"]
    assert vhost["routes"] == expected


def test_seed_clusters_carry_loopback_endpoints() -> None:
    table, _ = compile_ok(SEED_CLUSTER_A)
    [route] = all_routes(table)
    assert route.label == "default/httpbin[0]"
    [wc] = route.clusters
    assert [(e.address, e.port) for e in wc.cluster.endpoints] == [("127.0.0.1", 28080)]
    [mirror] = route.mirrors
    assert [(e.address, e.port) for e in mirror.cluster.endpoints] == [("127.0.0.1", 28081)]
    assert mirror.source_path == ("spec", "http", 0, "mirror")


# --- mirror percentages (Istio MirrorPercent / MirrorPercentByPolicy) ----------------------------

MIRROR_RULE = """\
  - route: [{destination: {host: primary.example.com}}]
    mirror: {host: shadow.example.com}
"""


@pytest.mark.parametrize(
    ("percent_yaml", "expected"),
    [
        ("    mirrorPercentage: {value: 0.57}\n", (5699, "MILLION")),
        ("    mirrorPercentage: {value: 50}\n", (500000, "MILLION")),
        ("    mirrorPercentage: {value: 12.345678}\n", (123456, "MILLION")),
        ("    mirrorPercentage: {value: 100}\n", (1000000, "MILLION")),
        ("", (100, "HUNDRED")),
        ("    mirrorPercentage: {value: 0}\n", None),
        ("    mirrorPercent: 0\n", None),
        ("    mirrorPercent: 40\n    mirrorPercentage: {value: 50.0}\n", (500000, "MILLION")),
        ("    mirrorPercent: 50\n", (50, "HUNDRED")),
        ("    mirror_percent: 25\n", (25, "HUNDRED")),
    ],
    ids=[
        "0.57-truncates-to-5699",
        "50-to-500000",
        "12.345678-truncates",
        "100-to-million",
        "absent-100-hundred",
        "percentage-0-no-policy",
        "percent-0-no-policy",
        "both-percentage-wins",
        "mirrorPercent-50-hundred",
        "snake-case-mirror_percent",
    ],
)
def test_mirror_percent(percent_yaml: str, expected: tuple[int, str] | None) -> None:
    table, _ = compile_ok(vs(MIRROR_RULE + percent_yaml))
    [route] = all_routes(table)
    action = route.to_envoy()["route"]
    if expected is None:
        assert route.mirrors == ()
        assert "request_mirror_policies" not in action
        return
    [policy] = action["request_mirror_policies"]
    frac = policy["runtime_fraction"]["default_value"]
    assert (frac["numerator"], frac["denominator"]) == expected
    assert policy["cluster"] == "outbound|80||shadow.example.com"
    assert policy["trace_sampled"] is False


def test_mirrors_list_order_and_percentages() -> None:
    http = """\
  - route: [{destination: {host: primary.example.com}}]
    mirrors:
    - destination: {host: a.example.com}
      percentage: {value: 10}
    - destination: {host: b.example.com, port: {number: 8080}}
    - destination: {host: c.example.com}
      percentage: {value: 0}
    - destination: {host: d.example.com}
      percentage: {value: 0.57}
"""
    table, _ = compile_ok(vs(http))
    [route] = all_routes(table)
    got = [(m.cluster.name, m.numerator, m.denominator, m.source_path) for m in route.mirrors]
    assert got == [
        ("outbound|80||a.example.com", 100000, 1_000_000, ("spec", "http", 0, "mirrors", 0)),
        ("outbound|8080||b.example.com", 100, 100, ("spec", "http", 0, "mirrors", 1)),
        ("outbound|80||d.example.com", 5699, 1_000_000, ("spec", "http", 0, "mirrors", 3)),
    ]


@pytest.mark.parametrize(
    "action_yaml",
    [
        "    redirect: {uri: /new}\n",
        "    directResponse: {status: 503}\n",
    ],
    ids=["redirect", "direct-response"],
)
def test_no_mirror_policy_without_route_action(action_yaml: str) -> None:
    text = vs("  - mirror: {host: shadow.example.com}\n" + action_yaml)
    table, _ = compile_ok(text)
    [route] = all_routes(table)
    assert route.action in ("redirect", "direct_response")
    assert route.mirrors == () and route.clusters == ()
    assert "route" not in route.to_envoy()


def test_redirect_and_direct_response_dumps() -> None:
    http = """\
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: new.example.com, redirectCode: 302}
  - directResponse: {status: 418, body: {string: teapot}}
"""
    table, _ = compile_ok(vs(http))
    r0, r1 = (r.to_envoy() for r in all_routes(table))
    assert r0["redirect"] == {
        "path_redirect": "/new",
        "host_redirect": "new.example.com",
        "response_code": "FOUND",
    }
    assert r1["direct_response"] == {"status": 418, "body": {"inline_string": "teapot"}}


# --- destinations and weights -------------------------------------------------------------------


def test_single_destination_ignores_weight() -> None:
    table, _ = compile_ok(vs("  - route: [{destination: {host: a.example.com}, weight: 0}]\n"))
    [route] = all_routes(table)
    assert not route.weighted and len(route.clusters) == 1
    assert route.to_envoy()["route"]["cluster"] == "outbound|80||a.example.com"


def test_weighted_skips_zero_and_keeps_weights_unnormalised() -> None:
    http = """\
  - route:
    - {destination: {host: a.example.com}, weight: 550}
    - {destination: {host: b.example.com}, weight: 0}
    - {destination: {host: c.example.com, subset: v2}, weight: 500}
"""
    table, _ = compile_ok(vs(http))
    [route] = all_routes(table)
    assert route.to_envoy()["route"]["weighted_clusters"] == {
        "clusters": [
            {"name": "outbound|80||a.example.com", "weight": 550},
            {"name": "outbound|80|v2|c.example.com", "weight": 500},
        ]
    }


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [(None, "0s"), ("5s", "5s"), ("250ms", "0.250s"), ("1m30s", "90s")],
    ids=["unset", "seconds", "millis", "minutes"],
)
def test_timeout(timeout: str | None, expected: str) -> None:
    extra = f"    timeout: {timeout}\n" if timeout else ""
    table, _ = compile_ok(vs("  - route: [{destination: {host: a.example.com}}]\n" + extra))
    assert all_routes(table)[0].to_envoy()["route"]["timeout"] == expected


def test_port_choice_service_only_port_then_listener() -> None:
    text = """
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: one}
spec:
  hosts: [one.example.com]
  ports: [{number: 9090, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
""" + vs(
        "  - route: [{destination: {host: one.example.com}}]\n"
        "    mirror: {host: unknown.example.com}\n"
    )
    table, _ = compile_ok(text, listener_port=8080)
    [route] = all_routes(table)
    assert route.clusters[0].cluster.name == "outbound|9090||one.example.com"
    assert route.mirrors[0].cluster.name == "outbound|8080||unknown.example.com"


# --- gateway selection ----------------------------------------------------------------------------


def gateway(name: str, namespace: str = "default", hosts: str = '["*"]') -> str:
    return (
        "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\n"
        "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
        f"  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: {hosts}\n"
    )


ROUTE = "  - route: [{destination: {host: a.example.com}}]\n"


def vs_for(name: str, gateways: str | None, namespace: str = "default") -> str:
    extra = f"  gateways: {gateways}\n" if gateways is not None else ""
    text = vs(ROUTE, hosts=f"[{name}.example.com]", extra=extra, name=name)
    return text.replace(
        f"metadata: {{name: {name}}}", f"metadata: {{name: {name}, namespace: {namespace}}}"
    )


@pytest.mark.parametrize(
    ("docs", "chosen", "expected_gateway", "expected_vs"),
    [
        ([vs_for("m", None)], None, None, ["default/m"]),
        (
            [gateway("gw"), vs_for("m", None), vs_for("g", "[gw]")],
            None,
            "default/gw",
            ["default/g"],
        ),
        ([gateway("gw"), vs_for("m", None), vs_for("g", "[gw]")], "mesh", None, ["default/m"]),
        ([vs_for("both", "[mesh, gw]"), vs_for("g", "[gw]")], None, None, ["default/both"]),
        (
            [
                gateway("gw", "edge"),
                gateway("gw2"),
                vs_for("a", "[gw]", "edge"),
                vs_for("b", "[edge/gw]"),
                vs_for("c", "[gw]"),
            ],
            "edge/gw",
            "edge/gw",
            ["edge/a", "default/b"],
        ),
        (
            [gateway("gw"), gateway("gw2"), vs_for("g", "[gw2]")],
            "gw2",
            "default/gw2",
            ["default/g"],
        ),
    ],
    ids=[
        "no-gateway-is-mesh",
        "only-gateway-chosen",
        "explicit-mesh",
        "mesh-listed-explicitly",
        "ns-qualified-and-vs-namespace",
        "bare-name-default-namespace",
    ],
)
def test_gateway_selection(
    docs: list[str], chosen: str | None, expected_gateway: str | None, expected_vs: list[str]
) -> None:
    table, _ = compile_ok("---\n".join(docs), gateway=chosen)
    assert table.gateway == expected_gateway
    assert [vh.virtual_service for vh in table.virtual_hosts] == expected_vs


@pytest.mark.parametrize(
    ("docs", "chosen", "message"),
    [
        ([gateway("a"), gateway("b", "edge")], None, "2 Gateways (default/a, edge/b)"),
        ([gateway("a")], "nope", "gateway 'default/nope' is not defined"),
        ([], "edge/a", "Gateways defined: none"),
    ],
    ids=["several-none-chosen", "unknown-name", "none-defined"],
)
def test_gateway_selection_errors(docs: list[str], chosen: str | None, message: str) -> None:
    table, diags = compile_route_table(load("---\n".join(docs)), gateway=chosen)
    assert table is None
    [d] = diags
    assert d.is_error and message in d.message


def test_vs_not_applying_gets_an_info_line() -> None:
    _, diags = compile_ok("---\n".join([gateway("gw"), vs_for("m", None)]))
    [d] = diags
    assert d.severity is Severity.INFO
    assert "does not apply to gateway default/gw" in d.message


def test_gateway_server_hosts_narrow_vs_hosts() -> None:
    text = "---\n".join(
        [
            gateway("gw", hosts='["*.example.com", "other.org"]'),
            vs(ROUTE, hosts='["*", "a.example.com", "b.example.net"]', extra="  gateways: [gw]\n"),
        ]
    )
    table, diags = compile_ok(text)
    assert [vh.domains for vh in table.virtual_hosts] == [
        ("*.example.com",),
        ("other.org",),
        ("a.example.com",),
    ]
    [d] = diags
    assert d.severity is Severity.WARNING and "'b.example.net' matches no host" in d.message


# --- virtual hosts and domains --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hosts", "namespace", "expected"),
    [
        (
            "[httpbin]",
            "default",
            [
                (
                    "httpbin.default.svc.cluster.local:80",
                    (
                        "httpbin.default.svc.cluster.local",
                        "httpbin",
                        "httpbin.default.svc",
                        "httpbin.default",
                    ),
                )
            ],
        ),
        (
            "[httpbin.prod.svc.cluster.local]",
            "default",
            [
                (
                    "httpbin.prod.svc.cluster.local:80",
                    ("httpbin.prod.svc.cluster.local", "httpbin.prod.svc", "httpbin.prod"),
                )
            ],
        ),
        (
            "[api.example.com, '*.example.org']",
            "default",
            [
                ("api.example.com:80", ("api.example.com",)),
                ("*.example.org:80", ("*.example.org",)),
            ],
        ),
    ],
    ids=["short-name-alternates", "other-namespace-alternates", "plain-and-wildcard"],
)
def test_domains(hosts: str, namespace: str, expected: list[tuple[str, tuple[str, ...]]]) -> None:
    text = vs(ROUTE, hosts=hosts).replace(
        "metadata: {name: app}", f"metadata: {{name: app, namespace: {namespace}}}"
    )
    table, _ = compile_ok(text)
    assert [(vh.name, vh.domains) for vh in table.virtual_hosts] == expected


def test_same_host_first_vs_wins_and_second_is_named() -> None:
    text = "---\n".join(
        [vs(ROUTE, hosts="[httpbin]", name="first"), vs(ROUTE, hosts="[httpbin]", name="second")]
    )
    table, diags = compile_ok(text)
    assert [vh.virtual_service for vh in table.virtual_hosts] == ["default/first"]
    [d] = diags
    assert d.severity is Severity.WARNING
    assert (d.kind, d.name, d.path) == ("VirtualService", "second", ("spec", "hosts", 0))
    assert "already served by VirtualService default/first" in d.message


# --- route generation -----------------------------------------------------------------------------


def labels(text: str, **kw: Any) -> list[str]:
    table, _ = compile_ok(text, **kw)
    return [r.label for r in all_routes(table)]


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        (
            "  - match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: b}}]\n"
            + ROUTE
            + "  - match: [{uri: {prefix: /b}}]\n    route: [{destination: {host: b}}]\n",
            ["default/app[0]", "default/app[1]"],
        ),
        (
            "  - match: [{uri: {prefix: /}}, {uri: {prefix: /x}}]\n"
            "    route: [{destination: {host: b}}]\n" + ROUTE,
            ["default/app[0.0]"],
        ),
        (
            "  - match: [{uri: {regex: '.*'}}]\n    route: [{destination: {host: b}}]\n" + ROUTE,
            ["default/app[0]"],
        ),
        (
            "  - match: [{uri: {prefix: /}, ignoreUriCase: true}]\n"
            "    route: [{destination: {host: b}}]\n" + ROUTE,
            ["default/app[0]"],
        ),
        (
            "  - match: [{uri: {prefix: /}, headers: {x: {exact: y}}}]\n"
            "    route: [{destination: {host: b}}]\n" + ROUTE,
            ["default/app[0]", "default/app[1]"],
        ),
        (
            "  - match: [{method: {exact: GET}}]\n    route: [{destination: {host: b}}]\n" + ROUTE,
            ["default/app[0]", "default/app[1]"],
        ),
        (
            "  - match: [{uri: {prefix: /}, queryParams: {q: {}}}]\n"
            "    route: [{destination: {host: b}}]\n" + ROUTE,
            ["default/app[0]", "default/app[1]"],
        ),
    ],
    ids=[
        "rule-without-match-stops",
        "prefix-slash-stops-mid-rule",
        "regex-dot-star-stops",
        "ignore-case-prefix-slash-stops",
        "header-condition-does-not-stop",
        "method-condition-does-not-stop",
        "query-condition-does-not-stop",
    ],
)
def test_catch_all_stops_generation(http: str, expected: list[str]) -> None:
    assert labels(vs(http)) == expected


def test_route_names_and_labels() -> None:
    http = """\
  - name: rule
    match: [{name: m0, uri: {prefix: /a}}, {uri: {prefix: /b}}]
    route: [{destination: {host: b}}]
  - match: [{name: only, uri: {prefix: /c}}]
    route: [{destination: {host: b}}]
"""
    table, _ = compile_ok(vs(http))
    got = [(r.name, r.label, r.rule_index, r.match_index) for r in all_routes(table)]
    assert got == [
        ("rule.m0", "default/app[0.0:rule.m0]", 0, 0),
        ("rule", "default/app[0.1:rule]", 0, 1),
        (".only", "default/app[1:.only]", 1, 0),
    ]
    assert all_routes(table)[0].to_envoy()["name"] == "rule.m0"


@pytest.mark.parametrize(
    ("listener_port", "expected"),
    [(80, ["default/app[0.0]", "default/app[0.1]"]), (8080, ["default/app[0.1]"])],
    ids=["port-matches", "port-differs-skipped"],
)
def test_match_port_is_a_listener_selector(listener_port: int, expected: list[str]) -> None:
    http = (
        "  - match: [{port: 80, uri: {prefix: /a}}, {uri: {prefix: /b}}]\n"
        "    route: [{destination: {host: b}}]\n"
    )
    assert labels(vs(http), listener_port=listener_port) == expected


def test_match_gateways_and_source_labels_are_selectors() -> None:
    http = """\
  - match:
    - {gateways: [other], uri: {prefix: /other}}
    - {gateways: [gw], uri: {prefix: /mine}}
    - {sourceLabels: {istio: ingressgateway}, uri: {prefix: /labels-ok}}
    - {sourceLabels: {app: sleep}, uri: {prefix: /labels-no}}
    route: [{destination: {host: b}}]
"""
    text = "---\n".join([gateway("gw"), vs(http, extra="  gateways: [gw]\n", hosts='["*"]')])
    table, diags = compile_ok(text)
    assert [r.matcher.path_value for r in all_routes(table)] == ["/mine", "/labels-ok"]
    assert [d.path for d in diags] == [("spec", "http", 0, "match", 3, "sourceLabels")]


def test_match_dump_headers_query_and_flags() -> None:
    http = """\
  - match:
    - uri: {regex: '/api/v[0-9]+'}
      ignoreUriCase: true
      headers: {x-b: {exact: "1"}, x-a: {}, x-c: {regex: "*"}}
      withoutHeaders: {x-skip: {prefix: "no"}, x-gone: {}}
      method: {exact: GET}
      authority: {prefix: api}
      scheme: {exact: http}
      queryParams: {debug: {exact: ""}, v: {regex: '\\d+'}}
    route: [{destination: {host: b}}]
"""
    table, _ = compile_ok(vs(http))
    assert all_routes(table)[0].to_envoy()["match"] == {
        "safe_regex": {"regex": "/api/v[0-9]+"},
        "case_sensitive": False,
        "headers": [
            {"name": "x-a", "present_match": True},
            {"name": "x-b", "string_match": {"exact": "1"}},
            {"name": "x-c", "present_match": True},
            {"name": "x-gone", "present_match": True, "invert_match": True},
            {
                "name": "x-skip",
                "string_match": {"prefix": "no"},
                "invert_match": True,
                "treat_missing_header_as_empty": True,
            },
            {"name": ":method", "string_match": {"exact": "GET"}},
            {"name": ":authority", "string_match": {"prefix": "api"}},
            {"name": ":scheme", "string_match": {"exact": "http"}},
        ],
        "query_parameters": [
            {"name": "debug", "string_match": {"exact": ""}},
            {"name": "v", "string_match": {"safe_regex": {"regex": "\\d+"}}},
        ],
    }


def test_delegate_and_hostless_vs() -> None:
    """The delegate's rules are inlined into the root (resolved in the delegate's namespace);
    the host-less delegate gets no virtual host of its own."""
    http = "  - match: [{uri: {prefix: /d}}]\n    delegate: {name: child, namespace: team}\n"
    child = vs("  - route: [{destination: {host: b}}]\n", hosts="[]", name="child")
    child = child.replace("metadata: {name: child}", "metadata: {name: child, namespace: team}")
    table, _ = compile_ok("---\n".join([vs(http), child]))
    [route] = all_routes(table)
    assert route.action == "route" and route.virtual_service == "team/child"
    assert route.matcher.path_value == "/d"
    assert route.clusters[0].cluster.host == "b.team.svc.cluster.local"
    assert [vh.virtual_service for vh in table.virtual_hosts] == ["default/app"]


def test_describe_rows_and_generation_replace() -> None:
    import dataclasses

    table, _ = compile_ok(SEED_CLUSTER_A)
    [row] = table.describe_rows()
    assert row.route == "default/httpbin[0]"
    assert row.match == "uri prefix /headers"
    assert row.destinations == "outbound|8000|v1|httpbin.default.svc.cluster.local"
    assert row.mirrors == "outbound|80||httpbin.mirror.cluster-b 50%"
    t2 = dataclasses.replace(table, generation=3)
    assert t2.generation == 3 and t2.select_virtual_host("x") is t2.virtual_hosts[0]


# --- analyze (cross-resource warnings, istioctl analyze) ------------------------------------------

ANALYZE_BASE = SEED_CLUSTER_A.split("---\napiVersion: networking.istio.io/v1alpha3\nkind: Gateway")[
    0
]


def analyze_messages(http: str) -> list[tuple[str | None, str, tuple[object, ...]]]:
    from meshmirror.routing.analysis import analyze

    text = ANALYZE_BASE + "---\n" + vs(http, hosts="[httpbin]")
    table, _ = compile_ok(text)
    # These configs mirror nothing on purpose: that finding has its own test.
    return [(d.code, d.message, d.path) for d in analyze(load(text), table) if not _no_mirror(d)]


def _no_mirror(d: object) -> bool:
    return str(getattr(d, "message", "")).startswith("no route mirrors anything")


def test_a_config_whose_routes_mirror_nothing_gets_a_warning() -> None:
    from meshmirror.routing.analysis import analyze

    plain = ANALYZE_BASE + "---\n" + vs(ROUTE, hosts="[httpbin]")
    table, _ = compile_ok(plain)
    found = [d for d in analyze(load(plain), table) if _no_mirror(d)]
    assert [d.severity.value for d in found] == ["warning"]
    mirrored = (
        ANALYZE_BASE + "---\n" + vs(ROUTE + "    mirror: {host: httpbin}\n", hosts="[httpbin]")
    )
    table, _ = compile_ok(mirrored)
    assert not [d for d in analyze(load(mirrored), table) if _no_mirror(d)]


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        (
            "  - route: [{destination: {host: httpbin, subset: v1, port: {number: 8000}}}]\n"
            "    mirror: {host: httpbin.mirror.cluster-b}\n",
            [],
        ),
        (
            "  - route: [{destination: {host: nowhere}}]\n",
            [
                (
                    "IST0101",
                    'Referenced host not found: "nowhere"; routed requests go to the '
                    "reverse-proxy upstream",
                    ("spec", "http", 0, "route", 0, "destination", "host"),
                )
            ],
        ),
        (
            "  - route: [{destination: {host: httpbin, port: {number: 8000}}}]\n"
            "    mirror: {host: shadow.nowhere}\n",
            [
                (
                    "IST0101",
                    'Referenced mirror host not found: "shadow.nowhere"; copies to it are '
                    "skipped (no endpoints in the config)",
                    ("spec", "http", 0, "mirror", "host"),
                )
            ],
        ),
        (
            "  - route: [{destination: {host: httpbin, subset: v9, port: {number: 8000}}}]\n"
            "    mirrors: [{destination: {host: httpbin, subset: v7, port: {number: 8000}}}]\n",
            [
                (
                    "IST0101",
                    'Referenced host+subset in destinationrule not found: "httpbin+v9"',
                    ("spec", "http", 0, "route", 0, "destination", "subset"),
                ),
                (
                    "IST0101",
                    'Referenced mirror+subset in destinationrule not found: "httpbin+v7"',
                    ("spec", "http", 0, "mirrors", 0, "destination", "subset"),
                ),
            ],
        ),
        (
            "  - route: [{destination: {host: httpbin, port: {number: 9999}}}]\n",
            [
                (
                    "IST0101",
                    'Referenced host+port not found: "httpbin:9999"',
                    ("spec", "http", 0, "route", 0, "destination", "port", "number"),
                )
            ],
        ),
    ],
    ids=[
        "clean",
        "route-host-not-found",
        "mirror-host-not-found",
        "subsets-not-found",
        "port-not-exposed",
    ],
)
def test_analyze(http: str, expected: list[tuple[str | None, str, tuple[object, ...]]]) -> None:
    assert analyze_messages(http) == expected


def test_analyze_port_selector_required_and_no_endpoints() -> None:
    from meshmirror.routing.analysis import analyze

    text = """
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: multi}
spec:
  hosts: [multi.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 8080, name: alt, protocol: HTTP}]
  resolution: NONE
---
""" + vs(
        "  - route: [{destination: {host: multi.example.com}}]\n"
        "    mirror: {host: multi.example.com, port: {number: 8080}}\n"
    )
    table, _ = compile_ok(text)
    got = [(d.severity, d.code, d.message) for d in analyze(load(text), table)]
    assert got == [
        (
            Severity.WARNING,
            "IST0112",
            'This VirtualService routes to a service "multi.example.com" that exposes multiple '
            "ports [80 8080]. Specifying a port in the destination is required to disambiguate. "
            "(meshmirror uses the listener port 80)",
        ),
        (
            Severity.INFO,
            None,
            "cluster outbound|80||multi.example.com has no endpoints in the config "
            "(ServiceEntry default/multi selects none): routed requests go to the reverse-proxy "
            "upstream",
        ),
        (
            Severity.WARNING,
            None,
            "mirror cluster outbound|8080||multi.example.com has no endpoints in the config "
            "(ServiceEntry default/multi selects none): copies to it are skipped",
        ),
    ]


def test_analyze_unknown_gateway_and_unused_vs() -> None:
    from meshmirror.routing.analysis import analyze

    text = "---\n".join(
        [
            vs(ROUTE, extra="  gateways: [missing, mesh]\n"),
            vs(
                "  - route: [{destination: {host: nowhere}}]\n",
                extra="  gateways: [gw2]\n",
                name="unused",
            ),
        ]
    )
    table, _ = compile_ok(text)
    got = [(d.name, d.code, d.message) for d in analyze(load(text), table) if not _no_mirror(d)]
    # The unused VirtualService's destinations are not analyzed (it cannot affect traffic),
    # but its gateway reference is.
    assert got == [
        ("app", "IST0101", 'Referenced gateway not found: "missing"'),
        (
            "app",
            "IST0101",
            'Referenced host not found: "a.example.com"; routed requests go to '
            "the reverse-proxy upstream",
        ),
        ("unused", "IST0101", 'Referenced gateway not found: "gw2"'),
    ]


# --- HTTPRoute policies and delegates (issue 7) --------------------------------------------------

DELEGATE_ROOT = """  - match: [{uri: {prefix: /reviews}, headers: {x-env: {exact: prod}}}]
    name: root
    timeout: 3s
    mirror: {host: shadow}
    headers: {request: {set: {x-root: "1"}}}
    delegate: {name: reviews, namespace: team}
  - route: [{destination: {host: fallback}}]
"""


def delegate_vs(http: str) -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: reviews, namespace: team}}\nspec:\n  http:\n{http}"
    )


def test_delegate_merges_match_and_inherits_root_fields() -> None:
    child = delegate_vs(
        "  - name: v2\n    match: [{uri: {prefix: /reviews/v2}}]\n"
        "    route: [{destination: {host: reviews-v2}}]\n    timeout: 1s\n"
        "  - route: [{destination: {host: reviews-v1}}]\n"
    )
    table, diags = compile_ok("---\n".join([vs(DELEGATE_ROOT), child]))
    r0, r1, r2 = all_routes(table)
    assert (r0.virtual_service, r0.rule_index, r0.name) == ("team/reviews", 0, "root-v2")
    assert r0.matcher.path_value == "/reviews/v2"
    assert [h.name for h in r0.matcher.headers] == ["x-env"]  # root AND delegate
    assert r0.upstream is not None and r0.upstream.timeout == 1.0  # the delegate's own wins
    assert r0.clusters[0].cluster.host == "reviews-v2.team.svc.cluster.local"
    # Inherited from the root, resolved in the root's namespace.
    assert [m.cluster.host for m in r0.mirrors] == ["shadow.default.svc.cluster.local"]
    assert r0.request_headers is not None and r0.request_headers.set == ((b"x-root", b"1"),)
    assert r1.matcher.path_value == "/reviews" and r1.upstream is not None
    assert r1.upstream.timeout == 3.0
    assert r2.virtual_service == "default/app"


@pytest.mark.parametrize(
    ("root_match", "leaf_match", "expected"),
    [
        ("{uri: {prefix: /a}}", "{uri: {prefix: /a/b}}", "prefix /a/b"),
        ("{uri: {prefix: /a}}", "{uri: {exact: /a/x}}", "exact /a/x"),
        ("{uri: {prefix: /a}}", "{uri: {prefix: /b}}", None),  # not inside the root
        ("{uri: {exact: /a}}", "{uri: {prefix: /a}}", None),
        ("{uri: {regex: /a.*}}", "{uri: {prefix: /a}}", None),
        ("{uri: {prefix: /a}}", "{method: {exact: GET}}", "prefix /a"),  # inherits the uri
        ("{uri: {prefix: /a}, port: 80}", "{port: 81}", None),
    ],
    ids=[
        "prefix-in-prefix",
        "exact-in-prefix",
        "prefix-outside",
        "prefix-under-exact",
        "regex-conflicts",
        "inherits-uri",
        "port-conflict",
    ],
)
def test_delegate_match_merging(root_match: str, leaf_match: str, expected: str | None) -> None:
    root = f"  - match: [{root_match}]\n    delegate: {{name: reviews, namespace: team}}\n"
    child = delegate_vs(f"  - match: [{leaf_match}]\n    route: [{{destination: {{host: b}}}}]\n")
    table, diags = compile_ok("---\n".join([vs(root), child]))
    routes = all_routes(table)
    if expected is None:
        assert routes == []
        assert any("conflicts with the match of its root" in d.message for d in diags)
    else:
        [route] = routes
        kind = {"prefix": "prefix", "path": "exact"}[route.matcher.path_kind]
        assert f"{kind} {route.matcher.path_value}" == expected


def test_missing_delegate_warns_and_drops_rule() -> None:
    table, diags = compile_ok(vs("  - delegate: {name: nope}\n"))
    assert all_routes(table) == []
    assert any("VirtualService default/nope is not in the config" in d.message for d in diags)


def test_route_policies_compiled_and_dumped() -> None:
    http = """  - match: [{uri: {prefix: /v1}}]
    rewrite: {uri: /v2, authority: new.example}
    headers:
      request: {set: {x-a: "1"}, remove: [x-b]}
      response: {add: {x-r: "2"}}
    timeout: 2s
    retries: {attempts: 2, perTryTimeout: 500ms, retryOn: "5xx,429"}
    fault: {delay: {fixedDelay: 1s, percentage: {value: 50}}}
    route:
    - destination: {host: a}
      weight: 50
      headers: {request: {set: {x-dest: a, host: a.example}}}
    - destination: {host: b}
      weight: 50
"""
    table, _ = compile_ok(vs(http))
    [route] = all_routes(table)
    assert route.authority == "new.example"
    assert route.rewrite is not None and route.rewrite.apply("/v1/x") == "/v2/x"
    assert route.fault is not None and route.fault.delay_per_million == 500_000
    assert route.upstream is not None and route.upstream.retriable_codes == {429}
    a, b = route.clusters
    assert a.authority == "a.example" and a.request_headers is not None
    assert b.request_headers is None
    dump = route.to_envoy()
    assert dump["route"]["prefix_rewrite"] == "/v2"
    assert dump["route"]["host_rewrite_literal"] == "new.example"
    assert dump["route"]["timeout"] == "2s"
    assert dump["route"]["retry_policy"]["num_retries"] == 2
    assert dump["request_headers_to_remove"] == ["x-b"]
    assert dump["response_headers_to_add"][0]["append_action"] == "APPEND_IF_EXISTS_OR_ADD"


def test_redirect_and_direct_response_policies() -> None:
    http = """  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, derivePort: FROM_REQUEST_PORT}
  - directResponse: {status: 200, body: {string: ok}}
"""
    table, _ = compile_ok(vs(http), listener_port=8080)
    r0, r1 = all_routes(table)
    assert r0.redirect_policy is not None and r0.redirect_policy.port == 8080
    assert r1.direct_policy is not None and r1.direct_policy.body == b"ok"


# --- Istio 1.31: redirect.prefixRewrite, corsPolicy, the mesh default retry policy ---------------


def test_redirect_prefix_rewrite_per_match_block_and_dump() -> None:
    http = """  - match: [{uri: {prefix: /foo/}}, {uri: {prefix: /bar}}]
    redirect: {authority: foo.example.com, prefixRewrite: /}
"""
    table, _ = compile_ok(vs(http))
    r0, r1 = all_routes(table)
    assert r0.redirect_policy is not None and r1.redirect_policy is not None
    # Each match block swaps its own prefix.
    assert r0.redirect_policy.location("http", "app", "/foo/x") == "http://foo.example.com/x"
    assert r1.redirect_policy.location("http", "app", "/bar/x") == "http://foo.example.com//x"
    assert r0.to_envoy()["redirect"] == {"host_redirect": "foo.example.com", "prefix_rewrite": "/"}
    assert route_policy_lines(r0) == [
        "redirect 301 to (scheme)://foo.example.com, prefix /foo/ -> /"
    ]


def test_delegate_redirect_prefix_rewrite_swaps_the_roots_prefix() -> None:
    # The delegate's rule has no uri match: the merged match takes the root's (mergeHTTPRoute).
    root = "  - match: [{uri: {prefix: /api}}]\n    delegate: {name: reviews, namespace: team}\n"
    child = delegate_vs("  - match: [{method: {exact: GET}}]\n    redirect: {prefixRewrite: /v2}\n")
    table, _ = compile_ok("---\n".join([vs(root), child]))
    [route] = all_routes(table)
    assert route.redirect_policy is not None
    assert route.redirect_policy.location("http", "app", "/api/x?q") == "http://app/v2/x?q"


def test_cors_policy_on_every_action_and_dumped() -> None:
    cors = "    corsPolicy: {allowOrigins: [{exact: 'https://a.example'}], maxAge: 1m}\n"
    http = (
        "  - match: [{uri: {prefix: /r}}]\n    redirect: {uri: /x}\n"
        + cors
        + "  - route: [{destination: {host: a}}]\n"
        + cors
    )
    table, _ = compile_ok(vs(http))
    redirect, forward = all_routes(table)
    for route in (redirect, forward):
        assert route.cors is not None and route.cors.max_age == "60"
        config = route.to_envoy()["typed_per_filter_config"]["envoy.filters.http.cors"]
        assert config["allow_origin_string_match"] == [{"exact": "https://a.example"}]
    assert route_policy_lines(forward)[0] == (
        "cors: origins exact https://a.example; max age 60s; preflights answered by the proxy"
    )


def test_delegate_inherits_the_roots_cors_policy() -> None:
    root = (
        "  - match: [{uri: {prefix: /api}}]\n    delegate: {name: reviews, namespace: team}\n"
        "    corsPolicy: {allowOrigins: [{prefix: 'https://'}]}\n"
    )
    child = delegate_vs("  - route: [{destination: {host: b}}]\n")
    table, _ = compile_ok("---\n".join([vs(root), child]))
    [route] = all_routes(table)
    assert route.cors is not None and route.cors.origin_allowed("https://x.example")


@pytest.mark.parametrize(
    ("rule_fields", "mesh_default", "retry_on"),
    [
        ("", True, "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"),
        ("    timeout: 2s\n", True, None),
        ("    retries: {attempts: 0}\n", False, None),
        ("    retries: {attempts: 3, retryOn: 5xx}\n", False, "5xx"),
    ],
    ids=["no-retries", "timeout-only", "attempts-0-disables", "explicit"],
)
def test_mesh_default_retry_policy(
    rule_fields: str, mesh_default: bool, retry_on: str | None
) -> None:
    table, _ = compile_ok(vs("  - route: [{destination: {host: a}}]\n" + rule_fields))
    [route] = all_routes(table)
    assert (route.mesh_default_upstream is not None) is mesh_default
    assert route.upstream_is_mesh_default is mesh_default
    off, on = route.to_envoy(), route.to_envoy(default_retries=True)
    if mesh_default:
        # Not served unless asked: not in the dump, and the table's words say Istio's.
        assert "retry_policy" not in off["route"]
        assert route.mesh_default_upstream is not None
        # The route's own timeout stays with the default retries.
        assert route.mesh_default_upstream.timeout == (2.0 if "timeout" in rule_fields else 0.0)
        assert on["route"]["retry_policy"]["num_retries"] == 2
        retries = retries_text(route)
        assert retries is not None and retries.startswith("not applied by meshmirror")
    if retry_on is not None:
        assert on["route"]["retry_policy"]["retry_on"] == retry_on
        if not mesh_default:
            assert off["route"]["retry_policy"]["retry_on"] == retry_on
    elif not mesh_default:
        assert "retry_policy" not in off["route"] and "retry_policy" not in on["route"]


SNIFFED_AND_GRPC = """
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: a}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: any}, {number: 81, name: grpc, protocol: GRPC}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
"""


@pytest.mark.parametrize(
    ("gateways", "chosen", "sniffed", "grpc"),
    [(None, None, "client", "HTTP/2"), ("[gw]", "gw", "HTTP/1.1", "HTTP/2")],
    ids=["mesh-keeps-the-clients", "gateway-speaks-http1"],
)
def test_upstream_protocol_of_a_sniffed_port(
    gateways: str | None, chosen: str | None, sniffed: str, grpc: str
) -> None:
    route = (
        "  - route: [{destination: {host: a.example.com, port: {number: 80}}}]\n"
        "    mirror: {host: a.example.com, port: {number: 81}}\n"
    )
    extra = f"  gateways: {gateways}\n" if gateways else ""
    docs = [SNIFFED_AND_GRPC, vs(route, extra=extra)] + ([gateway("gw")] if chosen else [])
    table, _ = compile_ok("---\n".join(docs), gateway=chosen)
    [r] = all_routes(table)
    assert table.upstream_protocol(r.clusters[0].cluster) == sniffed
    assert table.upstream_protocol(r.mirrors[0].cluster) == grpc
