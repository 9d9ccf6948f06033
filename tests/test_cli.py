"""The `meshmirror` command through real subprocesses: exit codes and output as a user sees them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SEED_A = CONFIGS / "seed" / "cluster-a"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshmirror", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_every_shipped_config_validates_clean() -> None:
    r = run("validate", str(CONFIGS))
    assert r.returncode == 0, r.stdout + r.stderr
    sets = [line for line in r.stdout.splitlines() if ": OK: " in line]
    # every directory under configs/ that holds YAML is its own set, and each is OK
    expected = {p.parent for p in CONFIGS.rglob("*.yaml")}
    assert len(sets) == len(expected) >= 5
    # The seed's cluster B is the shadow side: its routes mirror nothing, and validate says so.
    warnings = [line for line in r.stdout.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: no route mirrors anything (no VirtualService here has mirror, mirrors or a "
        "non-zero mirrorPercentage): requests are proxied and none is copied"
    ]
    assert "INVALID" not in r.stdout


def test_routes_json_shows_the_seed_step4_mirror_policy() -> None:
    r = run("routes", str(SEED_A), "--format", "json")
    assert r.returncode == 0, r.stderr
    dump = json.loads(r.stdout)
    route = dump["virtual_hosts"][0]["routes"][0]
    assert route["match"] == {"prefix": "/headers", "case_sensitive": True}
    assert route["route"]["cluster"] == "outbound|8000|v1|httpbin.default.svc.cluster.local"
    assert route["route"]["request_mirror_policies"] == [
        {
            "cluster": "outbound|80||httpbin.mirror.cluster-b",
            "runtime_fraction": {"default_value": {"numerator": 500000, "denominator": "MILLION"}},
            "trace_sampled": False,
        }
    ]


def test_routes_table_names_endpoints() -> None:
    r = run("routes", str(SEED_A))
    assert r.returncode == 0, r.stderr
    assert (
        "outbound|80||httpbin.mirror.cluster-b 50% (500000/MILLION)  [127.0.0.1:28081, HTTP/1.1]"
        in r.stdout
    )


def test_explain_names_rule_primary_and_shadow_host() -> None:
    r = run("explain", str(SEED_A), "--request", "GET http://httpbin:8000/headers")
    assert r.returncode == 0, r.stderr
    assert "matched: default/httpbin[0]" in r.stdout
    assert (
        "primary: outbound|8000|v1|httpbin.default.svc.cluster.local -> 127.0.0.1:28080" in r.stdout
    )
    assert "copy carries Host: httpbin-shadow:8000" in r.stdout


@pytest.mark.parametrize(
    "request_args",
    [
        ("--request", "GET http://httpbin/headers"),
        ("--request", "http://httpbin/headers"),  # a bare URL is a GET, as curl takes it
        ("--request", "GET /headers", "-H", "Host: httpbin"),
    ],
    ids=["method-and-url", "bare-url", "path-and-host-header"],
)
def test_explain_takes_a_request_the_ways_curl_does(request_args: tuple[str, ...]) -> None:
    r = run("explain", str(SEED_A), *request_args)
    assert r.returncode == 0, r.stderr
    assert "request: GET http://httpbin/headers" in r.stdout
    assert "copy carries Host: httpbin-shadow" in r.stdout


def test_explain_unmatched_path_says_why() -> None:
    r = run("explain", str(SEED_A), "--request", "GET http://httpbin/ip")
    assert r.returncode == 0
    assert "no route matched" in r.stdout
    assert "/headers" in r.stdout  # the failed condition is shown


def test_several_mistakes_are_all_reported_with_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: app, namespace: shop}
spec:
  hosts: [app]
  http:
  - route:
    - destination: {host: app, port: {number: 70000}}
    mirror: {host: shadow}
    mirrors:
    - destination: {host: other}
    mirrorPercentage: {value: 150}
  - route:
    - destination: {host: app}
    mirrorPercentag: {value: 1}
"""
    )
    r = run("validate", str(bad))
    assert r.returncode == 1
    out = r.stdout
    prefix = f"{bad}:"
    expected = [
        ("spec.http[0].route[0].destination.port.number", "70000"),
        ("spec.http[0]", "cannot contain both mirror and mirrors"),
        ("spec.http[0].mirrorPercentage.value", "150"),
        ("spec.http[1].mirrorPercentag", "did you mean 'mirrorPercentage'"),
    ]
    for path, text in expected:
        lines = [line for line in out.splitlines() if path in line and text in line]
        assert lines, (path, text, out)
        assert lines[0].startswith(prefix)
        assert "doc 1" in lines[0]
    assert "Traceback" not in out + r.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("validate", "/nonexistent/path.yaml"), 2),
        (("routes",), 2),
        (("explain", str(SEED_A), "--request", "GET /path-without-a-host"), 2),
        (("explain", str(SEED_A), "--request", "G=T http://httpbin/"), 2),
        (("bogus",), 2),
    ],
    ids=["missing-path", "no-paths", "path-without-host", "bad-method", "unknown-command"],
)
def test_usage_errors_exit_2(args: tuple[str, ...], code: int) -> None:
    r = run(*args)
    assert r.returncode == code, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_broken_yaml_is_a_located_error_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x\n")
    r = run("validate", str(bad))
    assert r.returncode == 1
    assert f"{bad}:" in r.stdout and "YAML syntax error" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


# --- mistakes caught as kubectl and istioctl catch them -----------------------------------------


@pytest.mark.parametrize(
    ("api_version", "kind", "message"),
    [
        (
            "networking.istio.io/v1",
            "Virtualservice",
            "kind: no kind 'Virtualservice' in networking.istio.io; did you mean VirtualService?",
        ),
        (
            "networking.istio.io/v1beta1",
            "VirtualSrvice",
            "did you mean VirtualService?",
        ),
        (
            "networking.k8s.io/v1",
            "VirtualService",
            "apiVersion: VirtualService is not a kind of networking.k8s.io; did you mean "
            "apiVersion networking.istio.io/v1?",
        ),
        ("gateway.networking.k8s.io/v1", "HttpRoute", "did you mean HTTPRoute?"),
        ("v1", "service", "no kind 'service' in the core API group (apiVersion v1)"),
        ("networking.istio.io/v1", "Frobnicator", "no kind 'Frobnicator' in networking.istio.io"),
    ],
)
def test_a_kind_the_api_server_would_refuse_is_an_error(
    tmp_path: Path, api_version: str, kind: str, message: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{}}\n")
    r = run("validate", str(cfg))
    assert r.returncode == 1, r.stdout + r.stderr
    assert message in r.stdout and f"{cfg}:" in r.stdout, r.stdout
    assert "INVALID: 1 error(s)" in r.stdout


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [("networking.istio.io/v1", "Sidecar"), ("apps/v1", "Deployment"), ("v1", "ConfigMap")],
)
def test_a_real_kind_meshmirror_does_not_read_is_skipped(
    tmp_path: Path, api_version: str, kind: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x}}\n")
    r = run("validate", str(cfg))
    assert r.returncode == 0, r.stdout
    assert f"info: {cfg}:1: doc 1: skipped {kind}" in r.stdout
    # As istioctl analyze --failure-threshold Info: an info finding fails the check.
    strict = run("validate", "--failure-threshold", "info", str(cfg))
    assert strict.returncode == 1 and "FAILED: 1 finding(s) at or above Info" in strict.stdout


MIRROR_WITHOUT_SERVICE_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: app}
spec:
  hosts: [app.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 8080}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: [app.local]
  http:
  - route: [{destination: {host: app.local}}]
    mirror: {host: shadow.nowhere}
"""


def test_a_mirror_host_nothing_defines_fails_validate_as_istioctl_analyze_does(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(MIRROR_WITHOUT_SERVICE_ENTRY)
    r = run("validate", str(cfg))
    assert r.returncode == 1, r.stdout
    (line,) = [x for x in r.stdout.splitlines() if "IST0101" in x]
    # An Error, as istioctl rates IST0101: no `warning:` prefix.
    assert line.startswith(f"{cfg}:") and 'Referenced mirror host not found: "shadow.nowhere"' in (
        line
    )
    assert "FAILED: 1 finding(s) at or above Error" in r.stdout
    assert "the proxy would serve it" in r.stdout
    assert run("validate", "--failure-threshold", "Warning", str(cfg)).returncode == 1
    # -q still shows errors, IST0101 among them.
    assert "IST0101" in run("validate", "-q", str(cfg)).stdout


# --- report refuses what is not an outcome log --------------------------------------------------


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{\n  "log": {"version": "1.2", "entries": []}\n}\n', "no line is an outcome record"),
        ('{"foo": 1}\n', "none of its 1 JSON line(s) is an outcome record"),
        ("", "no line is an outcome record"),
    ],
    ids=["har", "other-json-lines", "empty"],
)
def test_report_refuses_a_file_that_is_not_an_outcome_log(
    tmp_path: Path, content: str, why: str
) -> None:
    log = tmp_path / "rec.har"
    log.write_text(content)
    r = run("report", str(log))
    assert r.returncode == 2, r.stdout
    assert f"{log}: not a meshmirror outcome log ({why}" in r.stderr
    assert "Traceback" not in r.stderr


def test_report_names_the_request_by_method_and_path_without_a_request_id(tmp_path: Path) -> None:
    record = {
        "rule": "default/app[0]",
        "cluster": "outbound|80||shadow.local",
        "outcome": "sent",
        "flow": "a4f1c2de-0000-4000-8000-000000000000",
        "method": "GET",
        "path": "/users/7",
        "shadow_status": 200,
        "comparison": {"match": False, "fields": ["status"], "examples": {"status": "200 != 500"}},
    }
    log = tmp_path / "outcomes.jsonl"
    log.write_text(json.dumps(record) + "\n" + json.dumps({"foo": 1}) + "\n")
    r = run("report", str(log))
    assert r.returncode == 0, r.stderr
    assert "[GET /users/7]" in r.stdout and "a4f1c2de" not in r.stdout
    assert "1 line(s) are not outcome records and were left out" in r.stderr
    assert "1 sampled copies" in r.stdout


def test_routes_show_istios_default_retry_policy_and_say_it_is_not_applied() -> None:
    table = run("routes", str(SEED_A))
    assert table.returncode == 0, table.stderr
    assert (
        "      retries: not applied by meshmirror (mirror_default_retries=off); Istio would apply "
        "its mesh default: 2 retries on connect-failure,refused-stream,unavailable,cancelled,"
        "retriable-status-codes\n"
    ) in table.stdout
    # The JSON is the route configuration served: Istio's default only where it is applied.
    dump = json.loads(run("routes", str(SEED_A), "--format", "json").stdout)
    route = dump["virtual_hosts"][0]["routes"][0]
    assert "retry_policy" not in route["route"]
    applied = run("routes", str(SEED_A), "--format", "json", "--default-retries", "istio")
    route = json.loads(applied.stdout)["virtual_hosts"][0]["routes"][0]
    assert route["route"]["retry_policy"]["num_retries"] == 2
    words = run("routes", str(SEED_A), "--default-retries", "istio").stdout
    assert (
        "retries: Istio's mesh default, applied (mirror_default_retries=istio): 2 retries" in words
    )


CORS_AND_PREFIX_REDIRECT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: [app.local]
  http:
  - match: [{uri: {prefix: /old/}}]
    redirect: {prefixRewrite: /new/}
  - route: [{destination: {host: app.local}}]
    corsPolicy: {allowOrigins: [{exact: "https://a.example"}], allowMethods: [GET, PUT]}
"""


def test_explain_answers_a_preflight_and_a_prefix_redirect(tmp_path: Path) -> None:
    cfg = tmp_path / "vs.yaml"
    cfg.write_text(CORS_AND_PREFIX_REDIRECT)
    r = run(
        "explain",
        str(cfg),
        "--request",
        "OPTIONS http://app.local/api",
        "-H",
        "Origin: https://a.example",
        "-H",
        "Access-Control-Request-Method: PUT",
    )
    assert r.returncode == 0, r.stderr
    assert (
        "cors: a preflight, answered 200 by the proxy (never routed, never mirrored); headers "
        "access-control-allow-origin: https://a.example, access-control-allow-methods: GET,PUT"
    ) in r.stdout
    assert "action: cors preflight (answered by the proxy" in r.stdout
    assert "primary:" not in r.stdout
    redirect = run("explain", str(cfg), "--request", "GET http://app.local/old/x?q=1")
    assert "redirect: 301, Location: http://app.local/new/x?q=1" in redirect.stdout
    table = run("routes", str(cfg))
    assert "      redirect 301 to (scheme)://(host), prefix /old/ -> /new/\n" in table.stdout
    assert "      cors: origins exact https://a.example; methods GET,PUT;" in table.stdout
    dump = json.loads(run("routes", str(cfg), "--format", "json").stdout)
    first, second = dump["virtual_hosts"][0]["routes"]
    assert first["redirect"] == {"prefix_rewrite": "/new/"}
    assert "envoy.filters.http.cors" in second["typed_per_filter_config"]


def test_kinds_istio_validates_and_meshmirror_does_not_read_are_skipped(tmp_path: Path) -> None:
    kinds = [
        ("security.istio.io/v1", "AuthorizationPolicy"),
        ("security.istio.io/v1", "PeerAuthentication"),
        ("security.istio.io/v1", "RequestAuthentication"),
        ("telemetry.istio.io/v1", "Telemetry"),
        ("networking.istio.io/v1alpha3", "EnvoyFilter"),
        ("networking.istio.io/v1", "Sidecar"),
        ("networking.istio.io/v1", "WorkloadGroup"),
        ("networking.istio.io/v1beta1", "ProxyConfig"),
        ("extensions.istio.io/v1alpha1", "WasmPlugin"),
    ]
    cfg = tmp_path / "kinds.yaml"
    cfg.write_text(
        "---\n".join(f"apiVersion: {a}\nkind: {k}\nmetadata: {{name: x}}\n" for a, k in kinds)
    )
    r = run("validate", str(cfg))
    assert r.returncode == 0, r.stdout
    for doc, (api, kind) in enumerate(kinds, start=1):
        assert f"doc {doc}: skipped {kind} ({api}) x: not a kind meshmirror uses" in r.stdout


def test_the_two_natural_service_entry_mistakes_get_a_hint(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        MIRROR_WITHOUT_SERVICE_ENTRY.replace(
            "endpoints: [{address: 127.0.0.1, ports: {http: 8080}}]",
            "endpoints: [{address: '127.0.0.1:8080'}]",
        ).replace("mirror: {host: shadow.nowhere}", "mirror: {host: 127.0.0.1}")
    )
    r = run("validate", str(cfg))
    assert r.returncode == 1
    # Istio's message first, then meshmirror's hint.
    assert (
        'endpoint address "127.0.0.1:8080" is not a valid IP address; the port goes in the '
        "endpoint's ports map, by port name: `address: 127.0.0.1` with `ports: {http: 8080}`"
    ) in r.stdout
    assert (
        'domain name "0.0.1" invalid (top level domain "1" cannot be all-numeric); a destination '
        "host is a service name, not an address"
    ) in r.stdout


@pytest.mark.parametrize(
    ("host", "entry"),
    [
        (
            "http://127.0.0.1:9090",
            "`hosts: [shadow.local]`, `ports: [{number: 80, name: http, protocol: HTTP}]`, "
            "`resolution: STATIC`, `endpoints: [{address: 127.0.0.1, ports: {http: 9090}}]`",
        ),
        (
            "https://shadow.example.com",
            "`hosts: [shadow.local]`, `ports: [{number: 80, name: https, protocol: HTTPS}]`, "
            "`resolution: DNS`, `endpoints: [{address: shadow.example.com, ports: {https: 443}}]`",
        ),
    ],
    ids=["http-ip-port", "https-name"],
)
def test_a_mirror_host_written_as_a_url_gets_a_hint(tmp_path: Path, host: str, entry: str) -> None:
    """What a `meshmirror run --mirror URL` user pastes into YAML."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(MIRROR_WITHOUT_SERVICE_ENTRY.replace("shadow.nowhere", f'"{host}"'))
    r = run("validate", str(cfg))
    assert r.returncode == 1
    (line,) = [x for x in r.stdout.splitlines() if "spec.http[0].mirror.host" in x]
    # Istio's message first, then meshmirror's hint.
    assert f'domain name "{host}" invalid' in line, line
    assert (
        f"; a destination host is a service name, not a URL: declare {host} in a ServiceEntry "
        f"({entry}) and use its host here"
    ) in line, line


def test_a_value_the_message_already_states_is_not_repeated(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        MIRROR_WITHOUT_SERVICE_ENTRY.replace(
            "mirror: {host: shadow.nowhere}",
            "mirror: {host: app.local}\n    mirrorPercentage: {value: 150}",
        )
        + "  - route: [{destination: {host: app.local}}]\n"
        "    mirror: {host: app.local}\n    mirror_percent: 150\n"
    )
    r = run("validate", str(cfg))
    assert r.returncode == 1
    lines = [x for x in r.stdout.splitlines() if "must have a max value of 100" in x]
    assert len(lines) == 2, r.stdout
    assert lines[0].endswith(
        "spec.http[0].mirrorPercentage.value: mirror_percentage must have a max value of 100 "
        "(it has 150.000000)"
    ), lines
    assert lines[1].endswith(
        "spec.http[1].mirrorPercent: mirror_percent must have a max value of 100 (it has 150)"
    ), lines
