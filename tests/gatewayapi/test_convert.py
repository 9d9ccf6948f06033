"""Gateway API: models, CEL validation, conversion to Istio, precedence, element-wise PathPrefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshmirror.config.loader import load_text
from meshmirror.config.virtualservice import VirtualService
from meshmirror.diagnostics import Severity
from meshmirror.gatewayapi.convert import convert_gateway_api
from meshmirror.gatewayapi.origin import ConvertedResource
from meshmirror.gatewayapi.rules import mirror_percent
from meshmirror.pipeline import ConfigSet, load_config_set
from meshmirror.routing.match import match_request
from meshmirror.routing.request_view import RequestView
from meshmirror.routing.table import Route, RouteTable
from meshmirror.validate.resources import validate_resources

NS = "gateway-conformance-infra"

GATEWAY = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: same-namespace, namespace: {NS}}}
spec:
  gatewayClassName: meshmirror
  listeners:
  - {{name: http, port: 80, protocol: HTTP}}
"""


def service(name: str, ns: str = NS) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 8080, targetPort: 3000}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: {ns}}}
spec:
  address: 127.0.0.1
  labels: {{app: {name}}}
"""


BACKENDS = "\n---\n".join(service(f"infra-backend-v{i}") for i in (1, 2, 3))


def route(
    rules: str,
    name: str = "request-mirror",
    ns: str = NS,
    extra_spec: str = "",
    extra_meta: str = "",
) -> str:
    """An HTTPRoute attached to the conformance Gateway; `rules` is the YAML under spec.rules."""
    return (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata:\n  name: {name}\n  namespace: {ns}\n{extra_meta}"
        f"spec:\n  parentRefs: [{{name: same-namespace, namespace: {NS}}}]\n{extra_spec}"
        f"  rules:\n{rules}"
    )


def write(tmp_path: Path, *docs: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("\n---\n".join(d.strip() for d in docs) + "\n")
    return path


def load(tmp_path: Path, *docs: str, gateway: str | None = None) -> ConfigSet:
    return load_config_set([str(write(tmp_path, *docs))], gateway=gateway)


def table_of(cs: ConfigSet) -> RouteTable:
    assert cs.table is not None, [d.format() for d in cs.errors]
    return cs.table


def routes_of(cs: ConfigSet) -> list[Route]:
    return [r for vh in table_of(cs).virtual_hosts for r in vh.routes]


def get(
    table: RouteTable, path: str, host: str = "app.example.com", **headers: str
) -> Route | None:
    req = RequestView.build("GET", "http", host, path, headers.items(), 80)
    found = match_request(table, req)
    return None if found is None else found.route


MIRROR_RULES = """
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v2, port: 8080}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /mirror-and-modify-headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: header-val-1}]
        remove: [X-Header-Remove]
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v2, port: 8080}
        fraction: {numerator: 4, denominator: 8}
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v3, port: 8080}
        percent: 80
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"""

V1 = f"outbound|8080||infra-backend-v1.{NS}.svc.cluster.local"
V2 = f"outbound|8080||infra-backend-v2.{NS}.svc.cluster.local"
V3 = f"outbound|8080||infra-backend-v3.{NS}.svc.cluster.local"


# --- percent conversion (spec 3.5) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "num", "den", "expected"),
    [
        (None, None, None, None),
        (20, None, None, 20.0),
        (0, None, None, 0.0),
        (None, 25, 50, 50.0),
        (None, 4, 8, 50.0),
        (None, 1, 3, 100 / 3),
        (None, 83, 1000, 8.3),
        (None, 5, None, 5.0),  # denominator defaults to 100
    ],
    ids=["neither", "percent", "percent-0", "25/50", "4/8", "1/3", "83/1000", "den-default"],
)
def test_mirror_percent(
    percent: int | None, num: int | None, den: int | None, expected: float | None
) -> None:
    assert mirror_percent(percent, num, den) == pytest.approx(expected)


# --- conversion -----------------------------------------------------------------------------------


def test_conformance_route_converts_to_mirrors_in_order(tmp_path: Path) -> None:
    cs = load(tmp_path, GATEWAY, BACKENDS, route(MIRROR_RULES))
    table = table_of(cs)
    assert table.gateway == f"{NS}/same-namespace"  # the only Gateway is chosen by default
    plain = get(table, "/mirror?id=1")
    assert plain is not None
    assert [wc.cluster.name for wc in plain.clusters] == [V1]
    assert [(m.cluster.name, m.numerator, m.denominator) for m in plain.mirrors] == [(V2, 100, 100)]
    both = get(table, "/mirror-and-modify-headers")
    assert both is not None
    assert [(m.cluster.name, m.numerator, m.denominator) for m in both.mirrors] == [
        (V2, 500_000, 1_000_000),
        (V3, 800_000, 1_000_000),
    ]
    assert both.clusters[0].cluster.endpoints[0].port == 3000
    # The generated VirtualService carries the Istio fields the filters convert to.
    converted = [
        r for r in convert_gateway_api(cs.resources)[0] if isinstance(r.obj, VirtualService)
    ]
    assert len(converted) == 1
    vs = converted[0].obj
    assert isinstance(vs, VirtualService)
    assert vs.spec.hosts == ["*"] and vs.spec.gateways == [f"{NS}/same-namespace"]
    rules = vs.spec.http or []
    assert rules[0] is not None and rules[0].headers is not None
    req = rules[0].headers.request
    assert req is not None
    assert req.set == {"X-Header-Set": "set-overwrites-values"}
    assert req.add == {"X-Header-Add": "header-val-1"}
    assert req.remove == ["X-Header-Remove"]


@pytest.mark.parametrize(
    ("path", "route_name"),
    [
        ("/mirror", "0"),
        ("/mirror/", "0"),
        ("/mirror/deeper", "0"),
        ("/mirror?x=1", "0"),
        ("/mirrorx", None),
        ("/mirror-and-modify-headers", "1"),
        ("/mirror-and-modify-headers/x", "1"),
        ("/mirror-and-modify-headersx", None),
        ("/", None),
    ],
)
def test_path_prefix_is_element_wise(tmp_path: Path, path: str, route_name: str | None) -> None:
    table = table_of(load(tmp_path, GATEWAY, BACKENDS, route(MIRROR_RULES)))
    found = get(table, path)
    if route_name is None:
        assert found is None
    else:
        assert found is not None and found.name == f"{NS}.request-mirror.{route_name}.0"
        assert found.matcher.path_kind == "path_separated_prefix"
        assert "path_separated_prefix" in found.matcher.to_envoy()


def test_trailing_slash_of_a_prefix_is_ignored_and_slash_stays_a_plain_prefix(
    tmp_path: Path,
) -> None:
    rules = """
  - matches: [{path: {type: PathPrefix, value: /api/}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - backendRefs: [{name: infra-backend-v2, port: 8080}]
"""
    table = table_of(load(tmp_path, GATEWAY, BACKENDS, route(rules)))
    api = get(table, "/api")
    assert api is not None and api.matcher.path_value == "/api"
    rest = get(table, "/apix")
    assert rest is not None and rest.matcher.path_kind == "prefix" and rest.rule_index == 1


PRECEDENCE_RULES = """
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /a/b}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /a}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /a}
      headers: [{name: x-one, value: "1"}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /a}
      headers: [{name: x-one, value: "1"}, {name: x-two, value: "2"}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /a}
      method: GET
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /a}
      queryParams: [{name: q, value: "1"}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"""


def test_precedence_across_rules(tmp_path: Path) -> None:
    cs = load(tmp_path, GATEWAY, BACKENDS, route(PRECEDENCE_RULES, name="order"))
    order = [int(r.name.split(".")[-2]) for r in routes_of(cs)]
    # Exact, longest prefix, then for /a: method, most headers, most query params, plain; "/" last.
    assert order == [3, 2, 6, 5, 4, 7, 1, 0]
    table = table_of(cs)
    assert (r := get(table, "/a")) is not None and r.rule_index == 0  # the Exact rule
    hit = get(table, "/a/x?q=1", **{"x-one": "1"})
    assert hit is not None and hit.name.endswith(".6.0")  # method GET wins over headers


def test_precedence_across_routes_oldest_then_name(tmp_path: Path) -> None:
    rules = """
  - matches: [{path: {type: PathPrefix, value: /same}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"""
    young = route(rules, name="a-young", extra_meta='  creationTimestamp: "2024-05-01T00:00:00Z"\n')
    old = route(rules, name="z-old", extra_meta="  creationTimestamp: 2023-01-01T00:00:00Z\n")
    undated_b = route(rules, name="b-undated")
    undated_a = route(rules, name="a-undated")
    cs = load(tmp_path, GATEWAY, BACKENDS, undated_b, young, undated_a, old)
    names = [r.name.split(".")[1] for r in routes_of(cs)]
    # Only the first of equal matches is reachable, but all are kept in Istio's order.
    assert names[0] == "z-old"
    found = get(table_of(cs), "/same")
    assert found is not None and found.name == f"{NS}.z-old.0.0"


def test_precedence_ties_keep_rule_and_match_order(tmp_path: Path) -> None:
    rules = """
  - matches:
    - path: {type: PathPrefix, value: /p}
      headers: [{name: x, value: "1"}]
    - path: {type: PathPrefix, value: /p}
      headers: [{name: y, value: "1"}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /p}
      headers: [{name: z, value: "1"}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"""
    cs = load(tmp_path, GATEWAY, BACKENDS, route(rules))
    assert [r.name.rsplit(".", 2)[-2:] for r in routes_of(cs)] == [
        ["0", "0"],
        ["0", "1"],
        ["1", "0"],
    ]


def test_headers_query_and_method_matches(tmp_path: Path) -> None:
    rules = """
  - matches:
    - path: {type: RegularExpression, value: "/v[0-9]+/.*"}
      headers:
      - {name: X-Env, value: canary}
      - {type: RegularExpression, name: x-id, value: "[a-f]+"}
      queryParams: [{name: debug, value: "on"}]
      method: GET
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"""
    table = table_of(load(tmp_path, GATEWAY, BACKENDS, route(rules)))
    assert get(table, "/v1/x?debug=on", **{"x-env": "canary", "x-id": "abc"}) is not None
    assert get(table, "/v1/x?debug=off", **{"x-env": "canary", "x-id": "abc"}) is None
    assert get(table, "/v1/x?debug=on", **{"x-env": "canary", "x-id": "xyz"}) is None
    assert get(table, "/vx/x?debug=on", **{"x-env": "canary", "x-id": "abc"}) is None


def test_weighted_backends_and_zero_weight(tmp_path: Path) -> None:
    rules = """
  - backendRefs:
    - {name: infra-backend-v1, port: 8080, weight: 90}
    - {name: infra-backend-v2, port: 8080, weight: 10}
    - {name: infra-backend-v3, port: 8080, weight: 0}
"""
    (r,) = routes_of(load(tmp_path, GATEWAY, BACKENDS, route(rules)))
    assert r.weighted
    assert [(wc.cluster.name, wc.weight) for wc in r.clusters] == [(V1, 90), (V2, 10)]


def test_hostnames_intersect_listener_hostnames(tmp_path: Path) -> None:
    gw = GATEWAY.replace(
        "  - {name: http, port: 80, protocol: HTTP}",
        "  - {name: http, port: 80, protocol: HTTP, hostname: '*.example.com'}\n"
        "  - {name: other, port: 8080, protocol: HTTP, hostname: other.test}",
    )
    rules = """
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
"""
    spec = "  hostnames: [app.example.com, app.other.org]\n"
    cs = load(tmp_path, gw, BACKENDS, route(rules, extra_spec=spec))
    domains = [d for vh in table_of(cs).virtual_hosts for d in vh.domains]
    assert domains == ["app.example.com"]
    # No hostnames: the listener hostnames; sectionName picks one listener.
    cs2 = load(
        tmp_path,
        gw,
        BACKENDS,
        route(rules).replace(
            "{name: same-namespace,", "{name: same-namespace, sectionName: other,"
        ),
    )
    assert [d for vh in table_of(cs2).virtual_hosts for d in vh.domains] == ["other.test"]


def test_unresolvable_mirror_is_dropped_and_the_route_kept(tmp_path: Path) -> None:
    rules = """
  - filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: missing-svc, port: 8080}
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v2, port: 8080}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"""
    cs = load(tmp_path, GATEWAY, BACKENDS, route(rules))
    (r,) = routes_of(cs)
    assert [m.cluster.name for m in r.mirrors] == [V2]
    (warning,) = [d for d in cs.warnings if "missing-svc" in d.message]
    assert warning.kind == "HTTPRoute" and warning.name == "request-mirror"
    assert warning.path == ("spec", "rules", 0, "filters", 0, "requestMirror", "backendRef")
    assert "the mirror is dropped, the route is kept" in warning.message
    lines = (tmp_path / "config.yaml").read_text().splitlines()
    assert warning.line == 1 + next(i for i, t in enumerate(lines) if "missing-svc" in t)


def test_compile_diagnostics_point_at_the_http_route(tmp_path: Path) -> None:
    # A Service with no endpoints: analyze's warning about the generated VS names the HTTPRoute.
    lonely = """
apiVersion: v1
kind: Service
metadata: {name: lonely, namespace: gateway-conformance-infra}
spec:
  ports: [{name: http, port: 8080}]
"""
    rules = """
  - filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: lonely, port: 8080}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"""
    cs = load(tmp_path, GATEWAY, BACKENDS, lonely, route(rules))
    (d,) = [d for d in cs.warnings if "lonely" in d.message]
    assert (d.kind, d.path) == (
        "HTTPRoute",
        ("spec", "rules", 0, "filters", 0, "requestMirror", "backendRef"),
    )
    assert (
        d.source is not None and d.source.doc == 9
    )  # Gateway, 3 x (Service, WorkloadEntry), lonely, HTTPRoute


def test_rule_without_backends_answers_500_and_redirect_rewrite_convert(tmp_path: Path) -> None:
    rules = """
  - matches: [{path: {type: PathPrefix, value: /empty}}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: new.example.com}
  - matches: [{path: {type: PathPrefix, value: /rw}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: internal.example.com
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"""
    cs = load(tmp_path, GATEWAY, BACKENDS, route(rules))
    (converted,) = convert_gateway_api(cs.resources)[0]
    assert isinstance(converted, ConvertedResource) and isinstance(converted.obj, VirtualService)
    http = {r.name: r for r in converted.obj.spec.http or [] if r is not None}
    empty = http[f"{NS}.request-mirror.0.0"]
    assert empty.direct_response is not None and empty.direct_response.status == 500
    redirect = http[f"{NS}.request-mirror.1.0"].redirect
    assert redirect is not None
    assert (redirect.scheme, redirect.authority, redirect.redirect_code) == (
        "https",
        "new.example.com",
        302,
    )
    assert redirect.derive_port == "FROM_PROTOCOL_DEFAULT"
    rewrite = http[f"{NS}.request-mirror.2.0"].rewrite
    assert rewrite is not None and (rewrite.uri, rewrite.authority) == (
        "/v2",
        "internal.example.com",
    )
    actions = {r.name: r.action for r in routes_of(cs)}
    assert actions[f"{NS}.request-mirror.0.0"] == "direct_response"
    assert actions[f"{NS}.request-mirror.1.0"] == "redirect"


def test_service_entry_and_hostname_backends(tmp_path: Path) -> None:
    se = f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shadow, namespace: {NS}}}
spec:
  hosts: [shadow.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: 9999}}}}]
"""
    rules = """
  - filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {group: networking.istio.io, kind: ServiceEntry, name: shadow, port: 80}
    - type: RequestMirror
      requestMirror:
        backendRef: {group: networking.istio.io, kind: Hostname, name: shadow.local, port: 80}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"""
    (r,) = routes_of(load(tmp_path, GATEWAY, BACKENDS, se, route(rules)))
    assert [m.cluster.name for m in r.mirrors] == ["outbound|80||shadow.local"] * 2
    assert r.mirrors[0].cluster.endpoints[0].port == 9999


def test_allowed_routes_same_namespace_rejects_other_namespaces(tmp_path: Path) -> None:
    rules = """
  - backendRefs: [{name: infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}]
"""
    cs = load(tmp_path, GATEWAY, BACKENDS, route(rules, ns="other"))
    assert table_of(cs).virtual_hosts == ()
    assert any("admits this HTTPRoute" in d.message for d in cs.warnings)
    allow_all = GATEWAY.replace(
        "protocol: HTTP}", "protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}"
    )
    cs2 = load(tmp_path, allow_all, BACKENDS, route(rules, ns="other"))
    assert len(table_of(cs2).virtual_hosts) == 1
    assert any("ReferenceGrant" in d.message for d in cs2.warnings)


def test_service_parent_attaches_to_the_mesh(tmp_path: Path) -> None:
    mesh_route = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: mesh-mirror, namespace: {NS}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: infra-backend-v1, port: 8080}}]
  rules:
  - filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {{name: infra-backend-v2, port: 8080}}
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"""
    cs = load(tmp_path, BACKENDS, mesh_route)
    table = table_of(cs)
    assert table.gateway is None
    r = get(table, "/x", host=f"infra-backend-v1.{NS}")
    assert r is not None and [m.cluster.name for m in r.mirrors] == [V2]


# --- gateway choice -------------------------------------------------------------------------------

ISTIO_GATEWAY = f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: same-namespace, namespace: {NS}}}
spec:
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
"""


def test_istio_and_gateway_api_gateways_of_the_same_name_coexist(tmp_path: Path) -> None:
    cs = load(tmp_path, GATEWAY, ISTIO_GATEWAY, BACKENDS, route(MIRROR_RULES))
    assert not [d for d in cs.errors if "duplicate" in d.message]
    assert any("the config defines 2 Gateways" in d.message for d in cs.errors)


def test_a_named_gateway_api_gateway_is_chosen(tmp_path: Path) -> None:
    other = GATEWAY.replace("name: same-namespace", "name: other-gw")
    cs = load(tmp_path, GATEWAY, other, BACKENDS, route(MIRROR_RULES), gateway=f"{NS}/other-gw")
    table = table_of(cs)
    assert table.gateway == f"{NS}/other-gw" and table.virtual_hosts == ()
    assert any("does not apply to gateway" in d.message for d in cs.infos)
    cs2 = load(
        tmp_path, GATEWAY, other, BACKENDS, route(MIRROR_RULES), gateway=f"{NS}/same-namespace"
    )
    assert len(routes_of(cs2)) == 2


# --- validation (CEL rules and OpenAPI bounds) --------------------------------------------------


def _filter(body: str) -> str:
    return f"""
  - filters:
    - {body}
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"""


MIRROR = (
    "type: RequestMirror\n      requestMirror:\n"
    "        backendRef: {name: infra-backend-v2, port: 8080}\n"
)

CEL_CASES: list[tuple[str, str, str | None]] = [
    ("percent-42-valid", _filter(MIRROR + "        percent: 42"), None),
    (
        "fraction-83-1000-valid",
        _filter(MIRROR + "        fraction: {numerator: 83, denominator: 1000}"),
        None,
    ),
    (
        "percent-and-fraction",
        _filter(
            MIRROR + "        percent: 42\n        fraction: {numerator: 83, denominator: 1000}"
        ),
        "spec.rules[0].filters[0].requestMirror: Only one of percent or fraction may be "
        "specified in HTTPRequestMirrorFilter",
    ),
    (
        "numerator-over-denominator",
        _filter(MIRROR + "        fraction: {numerator: 1001, denominator: 1000}"),
        "requestMirror.fraction: numerator must be less than or equal to denominator",
    ),
    (
        "denominator-zero",
        _filter(MIRROR + "        fraction: {numerator: 0, denominator: 0}"),
        "requestMirror.fraction.denominator: should be greater than or equal to 1",
    ),
    (
        "numerator-negative",
        _filter(MIRROR + "        fraction: {numerator: -1, denominator: 1000}"),
        "requestMirror.fraction.numerator: should be greater than or equal to 0",
    ),
    (
        "percent-over-100",
        _filter(MIRROR + "        percent: 101"),
        "requestMirror.percent: should be less than or equal to 100",
    ),
    (
        "percent-negative",
        _filter(MIRROR + "        percent: -1"),
        "requestMirror.percent: should be greater than or equal to 0",
    ),
    (
        "mirror-type-without-member",
        _filter("type: RequestMirror"),
        "filter.requestMirror must be specified for RequestMirror filter.type",
    ),
    (
        "mirror-member-with-other-type",
        _filter(
            "type: RequestHeaderModifier\n      requestHeaderModifier: {remove: [x]}\n"
            "      requestMirror:\n        backendRef: {name: infra-backend-v2, port: 8080}"
        ),
        "filters[0].requestMirror: filter.requestMirror must be nil if the filter.type is not "
        "RequestMirror",
    ),
    (
        "header-modifier-type-without-member",
        _filter("type: RequestHeaderModifier"),
        "filter.requestHeaderModifier must be specified for RequestHeaderModifier filter.type",
    ),
    (
        "url-rewrite-member-with-other-type",
        _filter(
            "type: ExtensionRef\n      extensionRef: {group: x, kind: y, name: z}\n"
            "      urlRewrite: {hostname: a.b}"
        ),
        "filter.urlRewrite must be nil if the filter.type is not URLRewrite",
    ),
    (
        "header-modifier-repeated",
        """
  - filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [a]}}
    - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [b]}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        "spec.rules[0].filters: RequestHeaderModifier filter cannot be repeated",
    ),
    (
        "mirror-repeatable",
        """
  - filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v3, port: 8080}}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        None,
    ),
    (
        "mirror-service-without-port",
        _filter(
            "type: RequestMirror\n      requestMirror:\n"
            "        backendRef: {name: infra-backend-v2}"
        ),
        "requestMirror.backendRef: Must have port for Service reference",
    ),
    (
        "prefix-without-slash",
        """
  - matches: [{path: {type: PathPrefix, value: mirror}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        "matches[0].path.value: value must be an absolute path and start with '/'",
    ),
    (
        "exact-with-double-slash",
        """
  - matches: [{path: {type: Exact, value: /a//b}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        "must not contain '//'",
    ),
    (
        "bad-regex",
        """
  - matches: [{path: {type: RegularExpression, value: "/(a"}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        "error parsing regexp",
    ),
    (
        "redirect-with-backends",
        _filter("type: RequestRedirect\n      requestRedirect: {scheme: https}"),
        "RequestRedirect filter must not be used together with backendRefs",
    ),
    (
        "replace-prefix-without-prefix-match",
        """
  - matches: [{path: {type: Exact, value: /a}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        "When using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix "
        "match must be specified",
    ),
    (
        "path-modifier-type-mismatch",
        """
  - filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replacePrefixMatch: /b}}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        "replaceFullPath must be specified when type is set to 'ReplaceFullPath'",
    ),
    (
        "unknown-filter-type",
        _filter("type: Mirror"),
        "spec.rules[0].filters[0].type: input should be",
    ),
    (
        "unknown-path-type",
        """
  - matches: [{path: {type: Prefix, value: /a}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        "matches[0].path.type: input should be 'Exact', 'PathPrefix' or 'RegularExpression'",
    ),
    (
        "duplicate-header-match",
        """
  - matches: [{headers: [{name: X-A, value: "1"}, {name: x-a, value: "2"}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        "matches[0].headers[1].name: Duplicate value",
    ),
    (
        "weight-too-large",
        """
  - backendRefs: [{name: infra-backend-v1, port: 8080, weight: 1000001}]
""",
        "backendRefs[0].weight: should be between 0 and 1000000",
    ),
    (
        "backend-timeout-longer",
        """
  - timeouts: {request: 1s, backendRequest: 2s}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
""",
        "backendRequest timeout cannot be longer than request timeout",
    ),
]


@pytest.mark.parametrize(
    ("rules", "expected"), [c[1:] for c in CEL_CASES], ids=[c[0] for c in CEL_CASES]
)
def test_http_route_validation(rules: str, expected: str | None) -> None:
    text = "\n---\n".join([GATEWAY.strip(), BACKENDS.strip(), route(rules)])
    loaded = load_text(text, "t.yaml")
    errors = [d.format() for d in loaded.diagnostics if d.is_error]
    errors += [d.format() for d in validate_resources(loaded.resources) if d.is_error]
    if expected is None:
        assert errors == []
    else:
        assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    ("listeners", "expected"),
    [
        ("  - {name: http, port: 80, protocol: HTTP}\n  - {name: http, port: 81, protocol: HTTP}",
         "Listener name must be unique within the Gateway"),
        ("  - {name: a, port: 80, protocol: HTTP}\n  - {name: b, port: 80, protocol: HTTP}",
         "Combination of port, protocol and hostname must be unique for each listener"),
        ("  - {name: a, port: 80, protocol: HTTP, tls: {mode: Terminate}}",
         "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']"),
        ("  - {name: a, port: 0, protocol: HTTP}", "listeners[0].port: should be between 1"),
        ("  - {name: a, port: 80, protocol: HTTP, hostname: 'Bad_Host'}", "listeners[0].hostname"),
    ],
    ids=["dup-name", "dup-combo", "tls-on-http", "port-0", "bad-hostname"],
)  # fmt: skip
def test_gateway_validation(listeners: str, expected: str) -> None:
    text = GATEWAY.replace("  - {name: http, port: 80, protocol: HTTP}", listeners)
    loaded = load_text(text, "t.yaml")
    errors = [d.format() for d in validate_resources(loaded.resources) if d.is_error]
    assert any(expected in e for e in errors), errors


def test_not_yet_served_filters_warn_like_virtual_services(tmp_path: Path) -> None:
    from meshmirror.validate.virtualservice import NOT_YET_SERVED

    cs = load(tmp_path, GATEWAY, BACKENDS, route(MIRROR_RULES))
    warned = any(
        "RequestHeaderModifier is parsed but not yet served" in d.message for d in cs.warnings
    )
    assert warned == ("headers" in NOT_YET_SERVED)
    assert all(d.severity is not Severity.ERROR for d in cs.diagnostics)


def test_examples_validate_clean() -> None:
    root = Path(__file__).resolve().parents[2] / "configs" / "examples" / "gateway-api-mirror"
    cs = load_config_set([str(root)])
    assert cs.errors == [], [d.format() for d in cs.errors]
    table = table_of(cs)
    assert any(r.mirrors for vh in table.virtual_hosts for r in vh.routes)


def test_redirect_replace_prefix_match_becomes_prefix_rewrite(tmp_path: Path) -> None:
    # Istio's conversion golden case `redirect-prefix-replace` (pilot/pkg/config/kube/gateway/
    # testdata/http.yaml): ReplacePrefixMatch -> redirect.prefixRewrite (Istio >= 1.31).
    rules = """
  - matches: [{path: {type: PathPrefix, value: /original}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        port: 8080
        statusCode: 302
        scheme: https
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement}
"""
    cs = load(tmp_path, GATEWAY, BACKENDS, route(rules, name="redirect-prefix-replace"))
    (converted,) = convert_gateway_api(cs.resources)[0]
    assert isinstance(converted, ConvertedResource) and isinstance(converted.obj, VirtualService)
    [http] = [r for r in converted.obj.spec.http or [] if r is not None]
    assert http.redirect is not None
    assert (http.redirect.prefix_rewrite, http.redirect.uri) == ("/replacement", None)
    assert (http.redirect.port, http.redirect.redirect_code, http.redirect.scheme) == (
        8080,
        302,
        "https",
    )
    # PathPrefix is element-wise (path_separated_prefix): its prefix is what is swapped.
    found = get(table_of(cs), "/original/a?q=1")
    assert found is not None and found.redirect_policy is not None
    assert (
        found.redirect_policy.location("http", "app.example.com", "/original/a?q=1")
        == "https://app.example.com:8080/replacement/a?q=1"
    )
