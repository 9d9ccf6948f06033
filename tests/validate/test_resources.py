"""Istio's validation rules, table-driven: a YAML document next to the message it must produce.

Each case is (YAML, expected message substring, expected path) in the spirit of Istio's `_err:`
fixtures. Paths are checked in CRD spelling, so a message always points at the right field.
"""

from __future__ import annotations

import textwrap

import pytest

from meshmirror.config.loader import load_text
from meshmirror.diagnostics import Diagnostic, Severity, format_path
from meshmirror.golang import check_istio_duration, parse_duration, parse_duration_ns
from meshmirror.validate.names import hosts_match
from meshmirror.validate.resources import validate_resources
from meshmirror.validate.virtualservice import NOT_YET_SERVED

# --- helpers -----------------------------------------------------------------------------------

ROUTE = "route: [{destination: {host: httpbin}}]"


def run(text: str, file: str = "t.yaml") -> list[Diagnostic]:
    loaded = load_text(textwrap.dedent(text), file)
    assert not loaded.errors, [d.format() for d in loaded.errors]
    return validate_resources(loaded.resources)


def errors(ds: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in ds if d.severity is Severity.ERROR]


def warnings(ds: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in ds if d.severity is Severity.WARNING]


def vs(spec: str, *, name: str = "vs") -> str:
    """A VirtualService document around a `spec:` body written flush left."""
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: {name}, namespace: default}}\nspec:\n{body}\n"
    )


def rule(body: str, *, hosts: str = "[httpbin]", extra: str = "") -> str:
    """A VirtualService with one http rule whose fields are `body` (flush left)."""
    lines = textwrap.dedent(body).strip("\n").splitlines()
    item = "- " + lines[0] + "".join("\n  " + line for line in lines[1:])
    return vs(f"hosts: {hosts}\n{extra}http:\n{item}")


def doc(kind: str, spec: str, *, api: str = "networking.istio.io/v1", name: str = "x") -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    meta = f"metadata: {{name: {name}, namespace: default}}"
    return f"apiVersion: {api}\nkind: {kind}\n{meta}\nspec:\n{body}\n"


def find(ds: list[Diagnostic], needle: str) -> Diagnostic:
    for d in ds:
        if needle in d.message:
            return d
    raise AssertionError(f"no diagnostic contains {needle!r}; got:\n" + "\n".join(map(str, ds)))


# --- invalid cases: (yaml, message substring, path) --------------------------------------------

INVALID = [
    # 2.1 VirtualService level
    pytest.param(
        vs(f"gateways: [gw]\nhttp:\n- {ROUTE}"),
        "delegate virtual service must have no gateways specified",
        "spec.gateways",
        id="vs-delegate-with-gateways",
    ),
    pytest.param(
        vs("tcp:\n- route: [{destination: {host: db}}]"),
        "delegate virtual service must have no tcp route specified",
        "spec.tcp",
        id="vs-delegate-with-tcp",
    ),
    pytest.param(
        rule(ROUTE, hosts='["foo.ba!r"]'),
        'domain name "foo.ba!r" invalid (label "ba!r" invalid)',
        "spec.hosts[0]",
        id="host-bad-label",
    ),
    pytest.param(
        rule(ROUTE, hosts=f'["{"a" * 252}.com"]'),
        "too long (max 255)",
        "spec.hosts[0]",
        id="host-too-long",
    ),
    pytest.param(
        rule(ROUTE, hosts='[""]'), "empty domain name not allowed", "spec.hosts[0]", id="host-empty"
    ),
    pytest.param(
        rule(ROUTE, hosts='["foo.*.com"]'),
        'domain name "foo.*.com" invalid (label "*" invalid)',
        "spec.hosts[0]",
        id="host-wildcard-not-first-label",
    ),
    pytest.param(
        rule(ROUTE, hosts='["foo.123"]'),
        'top level domain "123" cannot be all-numeric',
        "spec.hosts[0]",
        id="host-numeric-tld",
    ),
    pytest.param(
        rule(ROUTE, hosts='["*"]'),
        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
        "spec.hosts[0]",
        id="host-star-on-mesh",
    ),
    pytest.param(
        rule(ROUTE, hosts='["*"]', extra="gateways: [gw, mesh]\n"),
        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
        "spec.hosts[0]",
        id="host-star-on-gateway-and-mesh",
    ),
    pytest.param(
        rule(ROUTE, hosts='["*.foo.bar", "*.bar"]'),
        "duplicate hosts in virtual service: *.foo.bar & *.bar",
        "spec.hosts[0]",
        id="hosts-overlap",
    ),
    pytest.param(
        vs("hosts: [httpbin]"),
        "http, tcp or tls must be provided in virtual service",
        "spec",
        id="vs-no-routes",
    ),
    pytest.param(
        vs("hosts: [httpbin]\nhttp: [null]"),
        "http route may not be null",
        "spec.http[0]",
        id="http-null",
    ),
    pytest.param(
        rule(ROUTE, extra="gateways: [ns1/*]\n"),
        'invalid value for gateway name: "*"',
        "spec.gateways[0]",
        id="gateway-name-star",
    ),
    pytest.param(
        rule(ROUTE, extra="gateways: ['*/gateway']\n"),
        'invalid value for namespace: "*"',
        "spec.gateways[0]",
        id="gateway-namespace-star",
    ),
    pytest.param(
        rule(ROUTE, extra="gateways: [my_gw]\n"),
        'domain name "my_gw" invalid (label "my_gw" invalid)',
        "spec.gateways[0]",
        id="gateway-name-not-dns",
    ),
    pytest.param(
        rule(f"match: [{{headers: {{'@request.auth.claims.group': {{exact: admin}}}}}}]\n{ROUTE}"),
        "JWT claim based routing (key: @request.auth.claims.group) is only supported for "
        "gateway, found no gateways: []",
        "spec.http[0].match[0].headers['@request.auth.claims.group']",
        id="jwt-claim-without-gateway",
    ),
    pytest.param(
        rule(ROUTE, extra="exportTo: [foo, foo]\n"),
        "duplicate entries in exportTo for entry foo",
        "spec.exportTo[1]",
        id="export-to-duplicate",
    ),
    # 2.2 HTTPRoute level
    pytest.param(
        rule(f"{ROUTE}\nredirect: {{uri: /x}}"),
        "HTTP route cannot contain both route and redirect",
        "spec.http[0]",
        id="redirect-and-route",
    ),
    pytest.param(
        rule(f"{ROUTE}\ndirectResponse: {{status: 503}}"),
        "HTTP route cannot contain both route and direct_response",
        "spec.http[0]",
        id="direct-response-and-route",
    ),
    pytest.param(
        rule("redirect: {uri: /x}\nrewrite: {uri: /y}"),
        "HTTP route rule cannot contain both rewrite and redirect",
        "spec.http[0]",
        id="redirect-and-rewrite",
    ),
    pytest.param(
        rule("name: only-mirror\nmirror: {host: shadow}"),
        "HTTP route, redirect or direct_response is required",
        "spec.http[0]",
        id="no-route",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{host: a}}\nmirrors: [{{destination: {{host: b}}}}]"),
        "HTTP route cannot contain both mirror and mirrors",
        "spec.http[0]",
        id="mirror-and-mirrors",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{host: shadow}}\nmirrorPercent: 101"),
        "mirror_percent must have a max value of 100 (it has 101)",
        "spec.http[0].mirrorPercent",
        id="mirror-percent-101",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{host: shadow}}\nmirrorPercentage: {{value: 101}}"),
        "mirror_percentage must have a max value of 100 (it has 101.000000)",
        "spec.http[0].mirrorPercentage.value",
        id="mirror-percentage-101",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{host: shadow}}\nmirrorPercentage: {{value: 100.0001}}"),
        "mirror_percentage must have a max value of 100 (it has 100.000100)",
        "spec.http[0].mirrorPercentage.value",
        id="mirror-percentage-100.0001",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{host: shadow}}\nmirrorPercentage: {{value: -1}}"),
        "mirror_percentage must have a min value of 0 (it has -1.000000)",
        "spec.http[0].mirrorPercentage.value",
        id="mirror-percentage-negative",
    ),
    pytest.param(
        rule(
            f"{ROUTE}\nmirrors:\n- destination: {{host: a}}\n"
            "- {destination: {host: b}, percentage: {value: 150}}"
        ),
        "mirror percentage must have a max value of 100 (it has 150.000000)",
        "spec.http[0].mirrors[1].percentage.value",
        id="mirrors-percentage-150",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirrors: [{{destination: {{host: a}}, percentage: {{value: -0.5}}}}]"),
        "mirror percentage must have a min value of 0 (it has -0.500000)",
        "spec.http[0].mirrors[0].percentage.value",
        id="mirrors-percentage-negative",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirrors: [null]"),
        "mirror cannot be null",
        "spec.http[0].mirrors[0]",
        id="mirrors-null",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirrors: [{{percentage: {{value: 5}}}}]"),
        "destination is required for mirrors",
        "spec.http[0].mirrors[0]",
        id="mirrors-no-destination",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{host: '*'}}"),
        "invalid destination host *",
        "spec.http[0].mirror.host",
        id="mirror-host-star",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{subset: v1}}"),
        "empty domain name not allowed",
        "spec.http[0].mirror.host",
        id="mirror-host-missing",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{host: shadow, subset: v1_mirror}}"),
        "subset name is invalid: v1_mirror",
        "spec.http[0].mirror.subset",
        id="mirror-subset-invalid",
    ),
    pytest.param(
        rule("route: [{destination: {host: httpbin, port: {number: 0}}}]"),
        "port number 0 must be in the range 1..65535",
        "spec.http[0].route[0].destination.port.number",
        id="route-port-0",
    ),
    pytest.param(
        rule("route: [{destination: {host: httpbin, port: {}}}]"),
        "port number 0 must be in the range 1..65535",
        "spec.http[0].route[0].destination.port.number",
        id="route-port-unnumbered",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{host: shadow, port: {{number: 70000}}}}"),
        "port number 70000 must be in the range 1..65535",
        "spec.http[0].mirror.port.number",
        id="mirror-port-70000",
    ),
    pytest.param(
        rule("route: [null]"), "weight may not be nil", "spec.http[0].route[0]", id="route-null"
    ),
    pytest.param(
        rule("route: [{weight: 100}]"),
        "destination is required",
        "spec.http[0].route[0]",
        id="route-no-destination",
    ),
    pytest.param(
        rule("route: [{destination: {host: a}, weight: -1}]"),
        "weight -1 < 0",
        "spec.http[0].route[0].weight",
        id="route-weight-negative",
    ),
    pytest.param(
        rule("route: [{destination: {host: a}, weight: 0}, {destination: {host: b}, weight: 0}]"),
        "total destination weight = 0",
        "spec.http[0].route",
        id="route-total-weight-0",
    ),
    # header operations
    pytest.param(
        rule(f"{ROUTE}\nheaders: {{request: {{set: {{'': x}}}}}}"),
        "header name cannot be empty",
        "spec.http[0].headers.request.set['']",
        id="header-set-empty-name",
    ),
    pytest.param(
        rule(f"{ROUTE}\nheaders: {{request: {{set: {{':path': /x}}}}}}"),
        'invalid header ":path": header cannot have ":" prefix',
        "spec.http[0].headers.request.set[':path']",
        id="header-set-pseudo",
    ),
    pytest.param(
        rule(f"{ROUTE}\nheaders: {{response: {{set: {{host: x}}}}}}"),
        'invalid header "host": cannot set Host header',
        "spec.http[0].headers.response.set.host",
        id="header-response-host",
    ),
    pytest.param(
        rule(f"{ROUTE}\nheaders: {{request: {{remove: [Host]}}}}"),
        'invalid header "Host": cannot set Host header',
        "spec.http[0].headers.request.remove[0]",
        id="header-remove-host",
    ),
    pytest.param(
        rule(f"{ROUTE}\nheaders: {{request: {{add: {{x-a: 'abc%123'}}}}}}"),
        "header value configuration: invalid header configuration. Un-terminated variable",
        "spec.http[0].headers.request.add.x-a",
        id="header-value-lone-percent",
    ),
    pytest.param(
        rule("route: [{destination: {host: a}, headers: {request: {set: {':method': GET}}}}]"),
        'invalid header ":method": header cannot have ":" prefix',
        "spec.http[0].route[0].headers.request.set[':method']",
        id="destination-header-pseudo",
    ),
    pytest.param(
        rule(f"{ROUTE}\nrewrite: {{authority: a}}\nheaders: {{request: {{set: {{host: b}}}}}}"),
        'authority header cannot be set multiple times: have "a", attempting to set "b"',
        "spec.http[0].headers.request.set.host",
        id="authority-twice",
    ),
    # durations
    pytest.param(
        rule(f"{ROUTE}\ntimeout: 0.5ms"),
        "duration must be greater than 1ms",
        "spec.http[0].timeout",
        id="timeout-below-1ms",
    ),
    pytest.param(
        rule(f"{ROUTE}\ntimeout: 0s"),
        "duration must be greater than 1ms",
        "spec.http[0].timeout",
        id="timeout-zero",
    ),
    pytest.param(
        rule(f"{ROUTE}\ntimeout: 1.0005s"),
        "only durations to ms precision are supported",
        "spec.http[0].timeout",
        id="timeout-sub-ms",
    ),
    pytest.param(
        rule(f"{ROUTE}\ntimeout: 5x"),
        'bad Duration: time: unknown unit "x" in duration "5x"',
        "spec.http[0].timeout",
        id="timeout-unknown-unit",
    ),
    pytest.param(
        rule(f"{ROUTE}\ntimeout: '5'"),
        'time: missing unit in duration "5"',
        "spec.http[0].timeout",
        id="timeout-missing-unit",
    ),
    pytest.param(
        rule(f"{ROUTE}\nretries: {{attempts: 3, perTryTimeout: 100us}}"),
        "duration must be greater than 1ms",
        "spec.http[0].retries.perTryTimeout",
        id="per-try-timeout-too-small",
    ),
    pytest.param(
        rule(f"{ROUTE}\nretries: {{attempts: 3, backoff: soon}}"),
        'time: invalid duration "soon"',
        "spec.http[0].retries.backoff",
        id="backoff-unparsable",
    ),
    # retries
    pytest.param(
        rule(f"{ROUTE}\nretries: {{attempts: -1}}"),
        "attempts cannot be negative",
        "spec.http[0].retries.attempts",
        id="retries-negative",
    ),
    pytest.param(
        rule(f"{ROUTE}\nretries: {{attempts: 0, perTryTimeout: 1s}}"),
        "http retry policy configured when attempts are set to 0 (disabled)",
        "spec.http[0].retries",
        id="retries-zero-with-policy",
    ),
    pytest.param(
        rule(f"{ROUTE}\nretries: {{attempts: 2, retryOn: '5xx,bogus'}}"),
        '"bogus" is not a valid retryOn policy',
        "spec.http[0].retries.retryOn",
        id="retry-on-unknown",
    ),
    # redirect / direct response
    pytest.param(
        rule("redirect: {uri: /x, redirectCode: 200}"),
        "200 is not a valid redirect code, must be 3xx",
        "spec.http[0].redirect.redirectCode",
        id="redirect-code-200",
    ),
    pytest.param(
        rule("redirect: {uri: /x, scheme: ftp}"),
        'invalid redirect scheme, must be "http" or "https"',
        "spec.http[0].redirect.scheme",
        id="redirect-scheme-ftp",
    ),
    pytest.param(
        rule("redirect: {}"),
        "redirect must specify URI, authority, scheme, or port",
        "spec.http[0].redirect",
        id="redirect-empty",
    ),
    pytest.param(
        rule("directResponse: {status: 700}"),
        "HTTP status 700 is not in range 200-599",
        "spec.http[0].directResponse.status",
        id="direct-response-700",
    ),
    pytest.param(
        rule("directResponse: {status: 600}"),
        "HTTP status 600 is not in range 200-599",
        "spec.http[0].directResponse.status",
        id="direct-response-600",
    ),
    # fault
    pytest.param(
        rule(f"{ROUTE}\nfault: {{}}"),
        "HTTP fault injection must have an abort and/or a delay",
        "spec.http[0].fault",
        id="fault-empty",
    ),
    pytest.param(
        rule(f"{ROUTE}\nfault: {{abort: {{httpStatus: 503, percentage: {{value: 101}}}}}}"),
        "percentage 101 is neither 0.0, nor in range [0.0001, 100.0]",
        "spec.http[0].fault.abort.percentage.value",
        id="fault-abort-percentage-101",
    ),
    pytest.param(
        rule(f"{ROUTE}\nfault: {{delay: {{fixedDelay: 1s, percentage: {{value: 0.00001}}}}}}"),
        "percentage 1e-05 is neither 0.0, nor in range [0.0001, 100.0]",
        "spec.http[0].fault.delay.percentage.value",
        id="fault-delay-percentage-tiny",
    ),
    pytest.param(
        rule(f"{ROUTE}\nfault: {{delay: {{fixedDelay: 0s}}}}"),
        "duration must be greater than 1ms",
        "spec.http[0].fault.delay.fixedDelay",
        id="fault-delay-zero",
    ),
    pytest.param(
        rule(f"{ROUTE}\nfault: {{abort: {{httpStatus: 99}}}}"),
        "HTTP status 99 is not in range 200-599",
        "spec.http[0].fault.abort.httpStatus",
        id="fault-abort-status-99",
    ),
    # rewrite
    pytest.param(
        rule(f"{ROUTE}\nrewrite: {{uri: /a, uriRegexRewrite: {{match: a, rewrite: b}}}}"),
        "rewrite may only contain one of URI or UriRegexRewrite",
        "spec.http[0].rewrite",
        id="rewrite-uri-and-regex",
    ),
    pytest.param(
        rule(f"{ROUTE}\nrewrite: {{uriRegexRewrite: {{match: '(a', rewrite: b}}}}"),
        '"HTTPRewrite.UriRegexRewrite.Match": error parsing regexp',
        "spec.http[0].rewrite.uriRegexRewrite.match",
        id="rewrite-regex-invalid",
    ),
    # 2.4 StringMatch / regex
    pytest.param(
        rule(f"match: [{{uri: {{exact: /a, prefix: /b}}}}]\n{ROUTE}"),
        "only one of exact, prefix or regex may be set (found exact and prefix)",
        "spec.http[0].match[0].uri",
        id="string-match-oneof",
    ),
    pytest.param(
        rule(f"match: [{{uri: {{regex: '(abc'}}}}]\n{ROUTE}"),
        '"uri": error parsing regexp: missing ): (abc; Istio uses RE2 style regex-based match '
        "(https://github.com/google/re2/wiki/Syntax)",
        "spec.http[0].match[0].uri.regex",
        id="regex-unbalanced",
    ),
    pytest.param(
        rule(f"match: [{{uri: {{regex: 'a(?=b)'}}}}]\n{ROUTE}"),
        "invalid perl operator",
        "spec.http[0].match[0].uri.regex",
        id="regex-lookahead-not-re2",
    ),
    pytest.param(
        rule(f"match: [{{headers: {{x-a: {{regex: ''}}}}}}]\n{ROUTE}"),
        '"headers": regex string match should not be empty',
        "spec.http[0].match[0].headers.x-a.regex",
        id="regex-empty",
    ),
    pytest.param(
        rule(f"match: [{{queryParams: {{q: {{regex: '{'a' * 1025}'}}}}}}]\n{ROUTE}"),
        '"queryParams": regex is too large, max length allowed is 1024',
        "spec.http[0].match[0].queryParams.q.regex",
        id="regex-too-long",
    ),
    pytest.param(
        rule(f"match: [{{withoutHeaders: {{x-a: {{regex: '?'}}}}}}]\n{ROUTE}"),
        '"withoutHeaders": error parsing regexp',
        "spec.http[0].match[0].withoutHeaders.x-a.regex",
        id="without-headers-regex-question-mark",
    ),
    pytest.param(
        rule(f"match: [{{method: {{prefix: ''}}}}]\n{ROUTE}"),
        '"method": prefix string match should not be empty',
        "spec.http[0].match[0].method.prefix",
        id="method-empty-prefix",
    ),
    pytest.param(
        rule(f"match: [{{headers: {{x-user: null}}}}]\n{ROUTE}"),
        "header match x-user cannot be null",
        "spec.http[0].match[0].headers.x-user",
        id="header-match-null",
    ),
    pytest.param(
        rule(f"match: [{{headers: {{'bad header': {{exact: a}}}}}}]\n{ROUTE}"),
        "header name bad header is not a valid header name",
        "spec.http[0].match[0].headers['bad header']",
        id="header-match-bad-name",
    ),
    pytest.param(
        rule(f"match: [{{port: 70000}}]\n{ROUTE}"),
        "port number 70000 must be in the range 1..65535",
        "spec.http[0].match[0].port",
        id="match-port",
    ),
    pytest.param(
        rule(f"match: [{{sourceNamespace: Bad_NS}}]\n{ROUTE}"),
        "sourceNamespace match Bad_NS is invalid",
        "spec.http[0].match[0].sourceNamespace",
        id="match-source-namespace",
    ),
    pytest.param(
        rule(f"match: [{{sourceLabels: {{'bad key!': v}}}}]\n{ROUTE}"),
        'invalid tag key: "bad key!"',
        "spec.http[0].match[0].sourceLabels['bad key!']",
        id="match-source-labels",
    ),
    # delegation
    pytest.param(
        rule("name: r1\ndelegate: {name: child}\n" + ROUTE),
        "root HTTP route r1 must not specify route",
        "spec.http[0].route",
        id="root-route-with-route",
    ),
    pytest.param(
        vs(f"http:\n- delegate: {{name: grandchild}}\n  {ROUTE}"),
        "delegate HTTP route cannot contain delegate",
        "spec.http[0].delegate",
        id="delegate-route-with-delegate",
    ),
    # 2.6 DestinationRule
    pytest.param(
        doc("DestinationRule", "host: 'httpbin!'"),
        'domain name "httpbin!" invalid',
        "spec.host",
        id="dr-host",
    ),
    pytest.param(
        doc("DestinationRule", "host: httpbin\nsubsets: [null]"),
        "subset may not be null",
        "spec.subsets[0]",
        id="dr-subset-null",
    ),
    pytest.param(
        doc("DestinationRule", "host: httpbin\nsubsets: [{name: v1}, {name: v1}]"),
        "duplicate subset names: v1",
        "spec.subsets[1].name",
        id="dr-subset-duplicate",
    ),
    pytest.param(
        doc("DestinationRule", "host: httpbin\nsubsets: [{labels: {version: v1}}]"),
        "subset name cannot be empty",
        "spec.subsets[0].name",
        id="dr-subset-unnamed",
    ),
    pytest.param(
        doc("DestinationRule", "host: httpbin\ntrafficPolicy: {}"),
        "traffic policy must have at least one field",
        "spec.trafficPolicy",
        id="dr-traffic-policy-empty",
    ),
    pytest.param(
        doc("DestinationRule", "host: httpbin\ntrafficPolicy: {connectionPool: {}}"),
        "connection pool must have at least one field",
        "spec.trafficPolicy.connectionPool",
        id="dr-connection-pool-empty",
    ),
    pytest.param(
        doc(
            "DestinationRule",
            "host: httpbin\ntrafficPolicy: {connectionPool: {tcp: {connectTimeout: 0.1ms}}}",
        ),
        "duration must be greater than 1ms",
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        id="dr-connect-timeout",
    ),
    pytest.param(
        doc(
            "DestinationRule",
            "host: httpbin\ntrafficPolicy: {connectionPool: {http: {http2MaxRequests: -1}}}",
        ),
        "http2 max requests must be non-negative",
        "spec.trafficPolicy.connectionPool.http.http2MaxRequests",
        id="dr-negative-pool-limit",
    ),
    pytest.param(
        doc("DestinationRule", "host: httpbin\ntrafficPolicy: {tls: {mode: MUTUAL}}"),
        "client certificate required for mutual tls",
        "spec.trafficPolicy.tls",
        id="dr-mutual-without-cert",
    ),
    pytest.param(
        doc(
            "DestinationRule",
            "host: httpbin\ntrafficPolicy:\n"
            "  tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem}",
        ),
        "cannot specify CaCertificates or CredentialName or SubjectAltNames when "
        "InsecureSkipVerify is set true",
        "spec.trafficPolicy.tls",
        id="dr-insecure-skip-verify-with-ca",
    ),
    # 2.6 ServiceEntry
    pytest.param(
        doc("ServiceEntry", "ports: [{number: 80, name: http, protocol: HTTP}]"),
        "service entry must have at least one host",
        "spec.hosts",
        id="se-no-hosts",
    ),
    pytest.param(
        doc("ServiceEntry", "hosts: ['*']"), "invalid host *", "spec.hosts[0]", id="se-host-star"
    ),
    pytest.param(
        doc(
            "ServiceEntry",
            "hosts: [a.example.com]\nworkloadSelector: {labels: {app: a}}\n"
            "endpoints: [{address: 10.0.0.1}]\nresolution: STATIC",
        ),
        "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        "spec",
        id="se-selector-and-endpoints",
    ),
    pytest.param(
        doc(
            "ServiceEntry",
            "hosts: [a.example.com]\nports:\n- {number: 80, name: http, protocol: HTTP}\n"
            "- {number: 81, name: http, protocol: HTTP}",
        ),
        'service entry port name "http" already defined',
        "spec.ports[1].name",
        id="se-duplicate-port-name",
    ),
    pytest.param(
        doc(
            "ServiceEntry",
            "hosts: [a.example.com]\nports:\n- {number: 80, name: http, protocol: HTTP}\n"
            "- {number: 80, name: web, protocol: HTTP}",
        ),
        "service entry port 80 already defined",
        "spec.ports[1].number",
        id="se-duplicate-port-number",
    ),
    pytest.param(
        doc(
            "ServiceEntry",
            "hosts: [a.example.com]\nresolution: NONE\nendpoints: [{address: 10.0.0.1}]",
        ),
        "no endpoints should be provided for resolution type none",
        "spec.endpoints",
        id="se-none-with-endpoints",
    ),
    pytest.param(
        doc(
            "ServiceEntry",
            "hosts: [httpbin.mirror.cluster-b]\nports: [{number: 80, name: http, protocol: HTTP}]\n"
            "resolution: STATIC\nendpoints: [{address: 47.95.XX.XX}]",
        ),
        'endpoint address "47.95.XX.XX" is not a valid IP address',
        "spec.endpoints[0].address",
        id="se-static-placeholder-ip",
    ),
    pytest.param(
        doc(
            "ServiceEntry",
            "hosts: ['*foo.com']\nports: [{number: 80, name: http, protocol: HTTP}]\n"
            "resolution: DNS",
        ),
        "hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for "
        "resolution mode DNS",
        "spec.hosts[0]",
        id="se-dns-host-not-fqdn",
    ),
    pytest.param(
        doc(
            "ServiceEntry",
            "hosts: [a.example.com]\nresolution: DNS_ROUND_ROBIN\n"
            "endpoints: [{address: a.example.com}, {address: b.example.com}]",
        ),
        "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
        "spec.endpoints",
        id="se-dns-rr-two-endpoints",
    ),
    pytest.param(
        doc(
            "ServiceEntry",
            "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\n"
            "resolution: STATIC\nendpoints: [{address: 10.0.0.1, ports: {web: 8080}}]",
        ),
        "endpoint port 8080 is not defined by the service entry",
        "spec.endpoints[0].ports.web",
        id="se-endpoint-port-undefined",
    ),
    pytest.param(
        doc(
            "ServiceEntry",
            "hosts: [a.example.com, b.example.com]\nresolution: DNS\n"
            "ports: [{number: 5432, name: tcp-pg, protocol: TCP}]",
        ),
        "multiple hosts provided with non-HTTP, non-TLS ports",
        "spec.ports[0]",
        id="se-multiple-hosts-tcp",
    ),
    pytest.param(
        doc(
            "ServiceEntry",
            "hosts: [a.example.com]\naddresses: [10.0.0.0/24]\nresolution: DNS",
        ),
        "CIDR addresses are allowed only for NONE/STATIC resolution types",
        "spec.addresses",
        id="se-cidr-with-dns",
    ),
    pytest.param(
        doc("ServiceEntry", "hosts: [a.example.com]\naddresses: [1.2.3]"),
        "1.2.3 is not a valid IP",
        "spec.addresses[0]",
        id="se-bad-address",
    ),
    # WorkloadEntry
    pytest.param(
        doc("WorkloadEntry", "labels: {app: a}"),
        "address is required",
        "spec.address",
        id="we-no-address",
    ),
    pytest.param(
        doc("WorkloadEntry", "address: foo_bar"),
        'endpoint address "foo_bar" is not a valid FQDN or an IP address',
        "spec.address",
        id="we-bad-address",
    ),
    pytest.param(
        doc("WorkloadEntry", "address: 10.0.0.1\nports: {http: 0}"),
        "port number 0 must be in the range 1..65535",
        "spec.ports.http",
        id="we-port-0",
    ),
    # Gateway
    pytest.param(
        doc("Gateway", "selector: {istio: ingressgateway}"),
        "gateway must have at least one server",
        "spec.servers",
        id="gw-no-servers",
    ),
    pytest.param(
        doc("Gateway", "servers: [{port: {number: 80, name: http, protocol: HTTP}}]"),
        "server config must contain at least one host",
        "spec.servers[0].hosts",
        id="gw-server-no-hosts",
    ),
    pytest.param(
        doc("Gateway", "servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [web]}]"),
        "short names (non FQDN) are not allowed",
        "spec.servers[0].hosts[0]",
        id="gw-short-host",
    ),
    pytest.param(
        doc("Gateway", "servers: [{port: {number: 80, protocol: HTTP}, hosts: ['*']}]"),
        "port name must be set",
        "spec.servers[0].port.name",
        id="gw-port-name-missing",
    ),
    pytest.param(
        doc(
            "Gateway",
            "servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]",
        ),
        "server must have TLS settings for HTTPS/TLS protocols",
        "spec.servers[0]",
        id="gw-https-without-tls",
    ),
    pytest.param(
        doc(
            "Gateway",
            "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']\n"
            "  tls: {serverCertificate: /c.pem}",
        ),
        "server cannot have TLS settings for plain text HTTP ports",
        "spec.servers[0].tls",
        id="gw-http-with-certs",
    ),
    pytest.param(
        doc(
            "Gateway",
            "servers:\n- {port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}\n"
            "- {port: {number: 81, name: http, protocol: HTTP}, hosts: ['*']}",
        ),
        "port names in servers must be unique: duplicate name http",
        "spec.servers[1].port.name",
        id="gw-duplicate-port-name",
    ),
    pytest.param(
        doc("Gateway", "servers: [{port: {number: 80, name: x, protocol: FOO}, hosts: ['*']}]"),
        'invalid protocol "FOO", supported protocols are HTTP',
        "spec.servers[0].port.protocol",
        id="gw-bad-protocol",
    ),
    pytest.param(
        doc(
            "Gateway",
            "servers: [{port: {number: 80, name: h, protocol: HTTP}, hosts: ['*']}]",
            name="my.gw",
        ),
        'invalid gateway name: "my.gw"',
        "metadata.name",
        id="gw-name-dots",
    ),
    # Kubernetes Service
    pytest.param(
        doc("Service", "ports: [{port: 0}]", api="v1"),
        "must be between 1 and 65535, inclusive",
        "spec.ports[0].port",
        id="svc-port-0",
    ),
    pytest.param(
        doc("Service", "ports: [{port: 80, targetPort: 70000}]", api="v1"),
        "must be between 1 and 65535, inclusive",
        "spec.ports[0].targetPort",
        id="svc-target-port-range",
    ),
    pytest.param(
        doc("Service", "ports: [{port: 80, targetPort: http_web}]", api="v1"),
        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        "spec.ports[0].targetPort",
        id="svc-target-port-name-chars",
    ),
    pytest.param(
        doc("Service", "ports: [{port: 80, targetPort: this-name-is-too-long}]", api="v1"),
        "must be no more than 15 characters",
        "spec.ports[0].targetPort",
        id="svc-target-port-name-long",
    ),
    pytest.param(
        doc("Service", "ports: [{port: 80, targetPort: '8080'}]", api="v1"),
        "must contain at least one letter (a-z)",
        "spec.ports[0].targetPort",
        id="svc-target-port-digits-string",
    ),
    pytest.param(
        doc("Service", "ports: [{port: 80, name: a}, {port: 81}]", api="v1"),
        "Required value",
        "spec.ports[1].name",
        id="svc-second-port-unnamed",
    ),
]


@pytest.mark.parametrize(("text", "message", "path"), INVALID)
def test_invalid(text: str, message: str, path: str) -> None:
    ds = errors(run(text))
    d = find(ds, message)
    assert format_path(d.path) == path, d.format()
    assert d.source is not None and d.source.file == "t.yaml"


# --- valid cases: no errors ----------------------------------------------------------------------

VALID = [
    pytest.param(rule(f"{ROUTE}\nmirror: {{host: shadow}}"), id="mirror-plain"),
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{host: shadow}}\nmirrorPercentage: {{value: 0.57}}"),
        id="mirror-percentage-0.57",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{host: shadow}}\nmirrorPercentage: {{value: 50}}"),
        id="mirror-percentage-50",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{host: shadow}}\nmirrorPercentage: {{value: 100}}"),
        id="mirror-percentage-100",
    ),
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{host: shadow}}\nmirrorPercentage: {{value: 0}}"),
        id="mirror-percentage-0",
    ),
    pytest.param(
        rule(
            f"{ROUTE}\nmirrors:\n- {{destination: {{host: a, port: {{number: 8000}}}}}}\n"
            "- {destination: {host: b, subset: v2}, percentage: {value: 100.0}}"
        ),
        id="mirrors-two",
    ),
    pytest.param(rule(ROUTE, hosts='["*"]', extra="gateways: [gw]\n"), id="host-star-on-gateway"),
    pytest.param(rule(ROUTE, hosts='["10.0.0.1"]'), id="host-ip"),
    pytest.param(rule(ROUTE, hosts='["*-foo.baz", "istio.io."]'), id="host-wildcard-prefix"),
    pytest.param(rule(ROUTE, extra="gateways: [istio-system/gw, mesh]\n"), id="gateway-ns-name"),
    pytest.param(
        rule(
            "route:\n- {destination: {host: a}, weight: 550}\n"
            "- {destination: {host: b}, weight: 500}"
        ),
        id="weights-above-100",
    ),
    pytest.param(
        rule(f"{ROUTE}\nheaders: {{request: {{set: {{x-a: '100%%', x-b: '%HOSTNAME%'}}}}}}"),
        id="header-values-percent",
    ),
    pytest.param(
        rule(f"{ROUTE}\nrewrite: {{authority: a}}\nheaders: {{request: {{set: {{x-a: b}}}}}}"),
        id="authority-once",
    ),
    pytest.param(rule(f"{ROUTE}\ntimeout: 1m30s"), id="timeout-1m30s"),
    pytest.param(rule(f"{ROUTE}\ntimeout: 250ms"), id="timeout-250ms"),
    pytest.param(rule(f"{ROUTE}\ntimeout: 1.5s"), id="timeout-1.5s"),
    pytest.param(
        rule(f"{ROUTE}\nretries: {{attempts: 3, perTryTimeout: 2s, retryOn: '5xx,503,reset'}}"),
        id="retries-ok",
    ),
    pytest.param(rule("redirect: {uri: /x, redirectCode: 308, scheme: https}"), id="redirect-ok"),
    pytest.param(rule("directResponse: {status: 503, body: {string: down}}"), id="direct-ok"),
    pytest.param(
        rule(f"{ROUTE}\nfault: {{abort: {{httpStatus: 503, percentage: {{value: 0.0001}}}}}}"),
        id="fault-ok",
    ),
    pytest.param(
        rule(
            "match:\n- uri: {prefix: ''}\n  headers: {x-a: {regex: '*'}, x-b: {}}\n"
            "  withoutHeaders: {x-c: {regex: '*'}}\n  queryParams: {q: {regex: '\\d+$'}}\n"
            "  method: {exact: GET}\n  ignoreUriCase: true\n" + ROUTE
        ),
        id="matches-ok",
    ),
    pytest.param(
        rule(f"match: [{{uri: {{regex: '(?i)/api/v[0-9]+/.*'}}}}]\n{ROUTE}"), id="regex-re2-ok"
    ),
    pytest.param(vs(f"http:\n- {ROUTE}"), id="delegate-vs-ok"),
    pytest.param(
        doc(
            "DestinationRule",
            "host: httpbin\ntrafficPolicy:\n  connectionPool:\n"
            "    tcp: {connectTimeout: 30ms, idleTimeout: 0s}\n    http: {idleTimeout: 1m}\n"
            "subsets: [{name: v1, labels: {version: v1}}]",
        ),
        id="dr-ok",
    ),
    pytest.param(
        doc(
            "ServiceEntry",
            "hosts: [api.example.com]\nports: [{number: 443, name: https, protocol: TLS}]\n"
            "resolution: DNS",
        ),
        id="se-dns-ok",
    ),
    pytest.param(doc("WorkloadEntry", "address: 10.0.0.1\nports: {http: 8080}"), id="we-ip"),
    pytest.param(doc("WorkloadEntry", "address: vm1.example.com"), id="we-fqdn"),
    pytest.param(
        doc("Service", "ports: [{name: http, port: 8000, targetPort: 80}]", api="v1"),
        id="svc-target-int",
    ),
    pytest.param(
        doc("Service", "ports: [{name: http, port: 8000, targetPort: http-web}]", api="v1"),
        id="svc-target-name",
    ),
]


@pytest.mark.parametrize("text", VALID)
def test_valid(text: str) -> None:
    assert errors(run(text)) == []


# --- warnings ----------------------------------------------------------------------------------

WARNINGS = [
    pytest.param(
        rule(f"{ROUTE}\nmirror: {{host: shadow}}\nmirrorPercent: 50"),
        'using deprecated setting "mirrorPercent", use "mirrorPercentage" instead',
        "spec.http[0].mirrorPercent",
        None,
        id="mirror-percent-deprecated",
    ),
    pytest.param(
        vs(f"hosts: [a]\nhttp:\n- {ROUTE}\n- {ROUTE}"),
        "virtualService rule #1 not used (only the last rule can have no matches)",
        "spec.http[1]",
        "IST0130",
        id="unreachable-two-catch-alls",
    ),
    pytest.param(
        vs(f"hosts: [a]\nhttp:\n- {ROUTE}\n- match: [{{uri: {{prefix: /x}}}}]\n  {ROUTE}"),
        "virtualService rule #1 not used (route without matches defined before)",
        "spec.http[1]",
        "IST0130",
        id="unreachable-after-catch-all",
    ),
    pytest.param(
        vs(
            "hosts: [a]\nhttp:\n"
            f"- name: first\n  match: [{{uri: {{exact: /x}}}}]\n  {ROUTE}\n"
            f"- name: second\n  match: [{{name: m, uri: {{exact: /x}}}}]\n  {ROUTE}"
        ),
        'virtualService rule "second" match "m" is not used (duplicate/overlapping match in rule '
        '"first")',
        "spec.http[1].match[0]",
        "IST0131",
        id="duplicate-match",
    ),
    pytest.param(
        vs(
            "hosts: [a]\nhttp:\n"
            f"- match: [{{uri: {{exact: /x}}}}]\n  {ROUTE}\n"
            f"- match: [{{uri: {{exact: /x}}}}]\n  {ROUTE}"
        ),
        "virtualService rule #1 not used (all matches used by prior rules)",
        "spec.http[1]",
        "IST0130",
        id="all-matches-used",
    ),
    pytest.param(
        vs(
            "hosts: [a]\nhttp:\n"
            f"- match: [{{uri: {{prefix: /debug}}}}]\n  {ROUTE}\n"
            f"- match: [{{uri: {{prefix: /debugs}}}}]\n  {ROUTE}"
        ),
        "virtualService rule #1 match #0 of prefix /debugs is not used (duplicate/overlapping "
        "match in rule #0 of prefix /debug on #0)",
        "spec.http[1].match[0]",
        "IST0131",
        id="overlapping-prefix",
    ),
    pytest.param(
        vs("hosts: [a]\ntcp:\n- route: [{destination: {host: db}}]"),
        "tcp routes are parsed but not served by meshmirror (HTTP only)",
        "spec.tcp",
        None,
        id="tcp-not-served",
    ),
    pytest.param(
        rule(ROUTE, extra="gateways: [gw.istio-system]\n"),
        'using legacy gatewayName format "gw.istio-system"; prefer the <namespace>/<name> '
        'format: "istio-system/gw"',
        "spec.gateways[0]",
        None,
        id="legacy-gateway-name",
    ),
    pytest.param(
        doc("WorkloadEntry", "network: net1"),
        'address is unset with network "net1"',
        "spec.address",
        None,
        id="we-network-without-address",
    ),
]


@pytest.mark.parametrize(("text", "message", "path", "code"), WARNINGS)
def test_warnings(text: str, message: str, path: str, code: str | None) -> None:
    ds = run(text)
    d = find(warnings(ds), message)
    assert format_path(d.path) == path
    assert d.code == code
    assert errors(ds) == []


NOT_SERVED_SNIPPETS = {
    "corsPolicy": f"{ROUTE}\ncorsPolicy: {{allowOrigins: [{{exact: 'https://a.example'}}]}}",
    "fault": f"{ROUTE}\nfault: {{abort: {{httpStatus: 503}}}}",
    "fault.abort.grpcStatus": f"{ROUTE}\nfault: {{abort: {{grpcStatus: UNAVAILABLE}}}}",
    "retries": f"{ROUTE}\nretries: {{attempts: 2}}",
    "timeout": f"{ROUTE}\ntimeout: 2s",
    "rewrite": f"{ROUTE}\nrewrite: {{uri: /v2}}",
    "redirect": "redirect: {uri: /x}",
    "directResponse": "directResponse: {status: 503}",
    "delegate": "delegate: {name: child}",
    "headers": f"{ROUTE}\nheaders: {{request: {{set: {{x-a: b}}}}}}",
}


def test_every_http_route_field_is_served() -> None:
    assert NOT_YET_SERVED == ()


@pytest.mark.parametrize(
    "field", sorted(set(NOT_SERVED_SNIPPETS) - set(NOT_YET_SERVED)), ids=lambda f: f
)
def test_served_fields_do_not_warn(field: str) -> None:
    ds = run(rule(NOT_SERVED_SNIPPETS[field]))
    assert not [d for d in warnings(ds) if "not yet served" in d.message]
    assert errors(ds) == []


def test_destination_headers_served() -> None:
    ds = run(rule("route: [{destination: {host: a}, headers: {response: {remove: [x-a]}}}]"))
    assert not [d for d in warnings(ds) if "not yet served" in d.message]


def test_plain_mirror_rule_has_no_warnings() -> None:
    assert run(rule(f"{ROUTE}\nmirror: {{host: shadow}}\nmirrorPercentage: {{value: 50}}")) == []


# --- one pass, every mistake -------------------------------------------------------------------

MANY_MISTAKES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: default}
spec:
  hosts: [httpbin]
  http:
  - route:
    - destination: {host: httpbin, port: {number: 0}}
    mirror: {host: shadow}
    mirrors: [{destination: {host: other}, percentage: {value: 150}}]
    mirrorPercentage: {value: 150}
    timeout: 1.0005s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin
  subsets: [{name: v1}, {name: v1}]
"""


def test_all_mistakes_reported_with_location() -> None:
    ds = errors(run(MANY_MISTAKES, "many.yaml"))
    expected = [
        (1, "spec.http[0]", "HTTP route cannot contain both mirror and mirrors", None),
        (1, "spec.http[0].route[0].destination.port.number", "port number 0 must be", 0),
        (1, "spec.http[0].mirrors[0].percentage.value", "(it has 150.000000)", None),
        (1, "spec.http[0].mirrorPercentage.value", "mirror_percentage must have", None),
        (1, "spec.http[0].timeout", "only durations to ms precision", "1.0005s"),
        (2, "spec.subsets[1].name", "duplicate subset names: v1", "v1"),
    ]
    assert len(ds) == len(expected), "\n".join(map(str, ds))
    for doc_no, path, needle, value in expected:
        d = next(x for x in ds if format_path(x.path) == path and needle in x.message)
        assert d.source is not None
        assert (d.source.file, d.source.doc) == ("many.yaml", doc_no)
        assert d.line is not None
        if value is not None:
            assert d.has_value and d.value == value
    # The line points at the field, not at the document.
    timeout = next(x for x in ds if format_path(x.path) == "spec.http[0].timeout")
    assert timeout.line == 12
    assert "many.yaml:12: doc 1 (VirtualService default/broken): spec.http[0].timeout:" in str(
        timeout
    )


def test_duplicate_resource_names_both_locations() -> None:
    text = rule(ROUTE) + "---\n" + rule(ROUTE)
    d = find(errors(run(text, "dup.yaml")), "duplicate VirtualService default/vs")
    assert "already defined at dup.yaml:1 (doc 1)" in d.message
    assert d.source is not None and d.source.doc == 2
    assert format_path(d.path) == "metadata.name"


def test_same_name_different_kind_is_not_duplicate() -> None:
    text = rule(ROUTE) + "---\n" + doc("DestinationRule", "host: httpbin", name="vs")
    assert errors(run(text)) == []


def test_list_member_diagnostic_has_relative_path_and_member_line() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n" + textwrap.indent(
        "- apiVersion: networking.istio.io/v1\n  kind: DestinationRule\n"
        "  metadata: {name: d}\n  spec:\n    host: 'bad!'\n",
        "",
    )
    d = find(errors(run(text)), 'domain name "bad!"')
    assert format_path(d.path) == "spec.host"
    assert d.line == 8


# --- seed scenario -----------------------------------------------------------------------------

SEED_CLUSTER_A = """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: httpbin
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  labels:
    app: httpbin
    service: httpbin
spec:
  ports:
  - name: http
    port: 8000
    targetPort: 80
  selector:
    app: httpbin
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin-v1
spec:
  replicas: 1
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
  - number: 80    # Port of the ingress gateway in Cluster B
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: {ip}   # External IP of the ingress gateway in Cluster B
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

SEED_SAMPLE_VS = """\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: myapp-traffic-mirroring
spec:
  hosts:
    - myapp
  http:
    - route:
        - destination:
            host: myapp.default.svc.cluster.local
            port:
              number: 8000
            subset: v1
          weight: 100
      mirror:
        host: myapp.default.svc.cluster.local
        port:
          number: 8000
        subset: v1-mirroring
"""


def test_seed_cluster_a_is_valid() -> None:
    ds = run(SEED_CLUSTER_A.replace("{ip}", "47.95.10.20"))
    assert errors(ds) == []
    assert warnings(ds) == []


def test_seed_sample_virtual_service_is_valid() -> None:
    assert run(SEED_SAMPLE_VS) == []


def test_seed_placeholder_ip_is_rejected_like_istio() -> None:
    ds = errors(run(SEED_CLUSTER_A.replace("{ip}", "47.95.XX.XX")))
    assert [d.message for d in ds] == ['endpoint address "47.95.XX.XX" is not a valid IP address']


# --- small pure helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("0", 0.0),
        ("-1s", -1.0),
        ("+2h", 7200.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("100us", 1e-4),
        ("100\u00b5s", 1e-4),
        ("1h2m3s4ms", 3723.004),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("5", 'time: missing unit in duration "5"'),
        ("s", 'time: invalid duration "s"'),
        (".s", 'time: invalid duration ".s"'),
        ("5 s", 'time: unknown unit " s" in duration "5 s"'),
        ("5sec", 'time: unknown unit "sec" in duration "5sec"'),
        ("1.2.3s", 'time: missing unit in duration "1.2.3s"'),
        ("9999999999h", 'time: invalid duration "9999999999h"'),
    ],
)
def test_parse_duration_rejects_like_go(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1ms", None),
        ("1.5s", None),
        ("999us", "duration must be greater than 1ms"),
        ("-5s", "duration must be greater than 1ms"),
        ("1001us", "only durations to ms precision are supported"),
    ],
)
def test_istio_duration_rule(text: str, message: str | None) -> None:
    assert check_istio_duration(parse_duration_ns(text)) == message


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("*.foo.bar", "*.bar", True),
        ("*.com", "foo.com", True),
        ("*.foo.com", "foo.com", False),
        ("*", "anything.example", True),
        ("a.example", "b.example", False),
        ("a.example", "a.example", True),
    ],
)
def test_hosts_match(a: str, b: str, overlap: bool) -> None:
    assert hosts_match(a, b) is overlap
    assert hosts_match(b, a) is overlap


def test_names_with_control_characters_are_warned_about() -> None:
    text = rule(f'name: "r\\e[31m"\nmatch: [{{name: "m\\x01"}}]\n{ROUTE}').replace(
        "name: vs,", 'name: "v\\u202e",'
    )
    found = {format_path(d.path): d for d in warnings(run(text))}
    assert set(found) == {"metadata.name", "spec.http[0].name", "spec.http[0].match[0].name"}
    assert "name has control characters (\\x1b)" in found["spec.http[0].name"].message
    assert "(\\u202e)" in found["metadata.name"].message
    # The resource's own name is escaped wherever a message names it.
    assert "(VirtualService default/v\\u202e)" in found["spec.http[0].name"].format()
    assert warnings(run(rule(f"name: plain\n{ROUTE}"))) == []
