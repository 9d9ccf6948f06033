"""registry.py: hosts -> endpoints, ports, subsets, TLS origination, cluster names."""

from __future__ import annotations

import pytest

from meshmirror.config.loader import load_text
from meshmirror.hosts import resolve_short_name
from meshmirror.mesh.clusters import TlsOrigination, cluster_name
from meshmirror.mesh.registry import Registry, build_registry


def registry_of(text: str) -> Registry:
    loaded = load_text(text, "test.yaml")
    assert not loaded.errors, [d.format() for d in loaded.errors]
    return build_registry(loaded.resources)


def endpoints(reg: Registry, host: str, port: int, subset: str | None = None) -> list[str]:
    return [f"{e.address}:{e.port}" for e in reg.cluster(host, port, subset).endpoints]


@pytest.mark.parametrize(
    ("host", "namespace", "expected"),
    [
        ("httpbin", "default", "httpbin.default.svc.cluster.local"),
        ("reviews", "prod", "reviews.prod.svc.cluster.local"),
        ("httpbin.mirror.cluster-b", "default", "httpbin.mirror.cluster-b"),
        ("*", "default", "*"),
        ("*.example.com", "default", "*.example.com"),
        ("10.0.0.1", "default", "10.0.0.1"),
    ],
    ids=["short", "short-other-ns", "dotted-unchanged", "star", "wildcard", "ip"],
)
def test_resolve_short_name(host: str, namespace: str, expected: str) -> None:
    assert resolve_short_name(host, namespace) == expected


@pytest.mark.parametrize(
    ("port", "subset", "host", "expected"),
    [
        (80, None, "httpbin.mirror.cluster-b", "outbound|80||httpbin.mirror.cluster-b"),
        (
            8000,
            "v1",
            "httpbin.default.svc.cluster.local",
            "outbound|8000|v1|httpbin.default.svc.cluster.local",
        ),
    ],
    ids=["no-subset", "subset"],
)
def test_cluster_name(port: int, subset: str | None, host: str, expected: str) -> None:
    assert cluster_name(port, subset, host) == expected


SE_PORTS = """
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [ext.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 8080}
  - {number: 81, name: admin, protocol: HTTP}
  - {number: 82, name: plain, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, ports: {http: 9090}}
  - {address: 10.0.0.2}
"""


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        (80, ["10.0.0.1:9090", "10.0.0.2:8080"]),  # ports map > targetPort
        (81, ["10.0.0.1:81", "10.0.0.2:81"]),  # number when neither
        (9999, []),  # a port the entry does not expose has no endpoints
    ],
    ids=["ports-map-then-targetPort", "number", "unexposed-port"],
)
def test_service_entry_port_precedence(port: int, expected: list[str]) -> None:
    assert endpoints(registry_of(SE_PORTS), "ext.example.com", port) == expected


def test_dns_service_entry_without_endpoints_resolves_the_host() -> None:
    reg = registry_of(
        """
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com, api2.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS, targetPort: 8443}]
  resolution: DNS
"""
    )
    assert endpoints(reg, "api.example.com", 443) == ["api.example.com:8443"]
    assert endpoints(reg, "api2.example.com", 443) == ["api2.example.com:8443"]
    # An HTTPS port means the endpoint speaks TLS: meshmirror originates it.
    assert reg.cluster("api.example.com", 443).tls == TlsOrigination()


def test_resolution_none_is_passthrough() -> None:
    reg = registry_of(
        """
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [any.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: NONE
"""
    )
    c = reg.cluster("any.example.com", 80)
    assert c.passthrough and c.endpoints == ()
    assert reg.service("any.example.com") is not None


def test_unknown_host_is_passthrough_without_tls() -> None:
    c = registry_of("").cluster("nowhere.example.com", 80)
    assert c.passthrough and c.tls is None
    assert c.name == "outbound|80||nowhere.example.com"


K8S = """
apiVersion: v1
kind: Service
metadata: {name: httpbin}
spec:
  ports:
  - {name: http, port: 8000, targetPort: 80}
  - {name: metrics, port: 9000, targetPort: 9100}
  - {name: named, port: 7000, targetPort: web}
  selector: {app: httpbin}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: httpbin-v1}
spec:
  address: 127.0.0.1
  labels: {app: httpbin, version: v1}
  ports: {http: 28080, web: 28070}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: httpbin-v2}
spec:
  address: 127.0.0.2
  labels: {app: httpbin, version: v2}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: other-ns, namespace: prod}
spec:
  address: 127.0.0.9
  labels: {app: httpbin, version: v1}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: other-app}
spec:
  address: 127.0.0.8
  labels: {app: reviews}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: httpbin}
spec:
  host: httpbin
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: all}
"""

HTTPBIN = "httpbin.default.svc.cluster.local"


@pytest.mark.parametrize(
    ("port", "subset", "expected"),
    [
        (8000, None, ["127.0.0.1:28080", "127.0.0.2:80"]),
        (9000, None, ["127.0.0.1:9100", "127.0.0.2:9100"]),
        (7000, None, ["127.0.0.1:28070", "127.0.0.2:7000"]),
        (8000, "v1", ["127.0.0.1:28080"]),
        (8000, "v2", ["127.0.0.2:80"]),
        (8000, "all", ["127.0.0.1:28080", "127.0.0.2:80"]),
        (8000, "v3", []),
    ],
    ids=[
        "we-port-name-then-targetPort",
        "targetPort",
        "named-targetPort",
        "subset-v1",
        "subset-v2",
        "subset-without-labels",
        "undefined-subset",
    ],
)
def test_kubernetes_service_selects_workload_entries(
    port: int, subset: str | None, expected: list[str]
) -> None:
    assert endpoints(registry_of(K8S), HTTPBIN, port, subset) == expected


def test_cluster_is_cached_and_named_as_envoy() -> None:
    reg = registry_of(K8S)
    c = reg.cluster(HTTPBIN, 8000, "v1")
    assert c is reg.cluster(HTTPBIN, 8000, "v1")
    assert c.name == "outbound|8000|v1|httpbin.default.svc.cluster.local"
    assert (c.host, c.port, c.subset) == (HTTPBIN, 8000, "v1")


@pytest.mark.parametrize(
    ("number", "expected"),
    [(8000, 8000), (None, 80)],
    ids=["explicit", "several-ports-listener"],
)
def test_choose_port_several_ports(number: int | None, expected: int) -> None:
    assert registry_of(K8S).choose_port(HTTPBIN, number, 80) == expected


def test_choose_port_single_port_and_unknown() -> None:
    reg = registry_of(
        SE_PORTS.replace("  - {number: 81, name: admin, protocol: HTTP}\n", "").replace(
            "  - {number: 82, name: plain, protocol: HTTP}\n", ""
        )
    )
    assert reg.choose_port("ext.example.com", None, 8080) == 80
    assert reg.choose_port("unknown.example.com", None, 8080) == 8080


def test_service_entry_workload_selector() -> None:
    reg = registry_of(
        """
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: internal}
spec:
  hosts: [internal.example.com]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  resolution: STATIC
  workloadSelector: {labels: {app: internal}}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: a}
spec: {address: 127.0.0.1, labels: {app: internal}, ports: {http: 9001}}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: b}
spec: {address: 127.0.0.2, labels: {app: internal, zone: x}}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: c, namespace: elsewhere}
spec: {address: 127.0.0.3, labels: {app: internal}}
"""
    )
    assert endpoints(reg, "internal.example.com", 80) == ["127.0.0.1:9001", "127.0.0.2:8080"]


TLS_BASE = """
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [secure.example.com]
  ports:
  - {number: 443, name: https, protocol: HTTPS}
  - {number: 80, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, labels: {v: one}}]
"""


@pytest.mark.parametrize(
    ("rule", "port", "subset", "expected"),
    [
        ("", 443, None, TlsOrigination()),
        ("", 80, None, None),
        (
            "trafficPolicy: {tls: {mode: SIMPLE, sni: s.example.com, caCertificates: /ca.pem}}",
            80,
            None,
            TlsOrigination("s.example.com", "/ca.pem", False),
        ),
        ("trafficPolicy: {tls: {mode: DISABLE}}", 443, None, None),
        (
            "trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true}}\n"
            "  subsets: [{name: one, labels: {v: one}, trafficPolicy: {tls: {mode: DISABLE}}}]",
            80,
            "one",
            None,
        ),
        (
            "trafficPolicy:\n"
            "    tls: {mode: DISABLE}\n"
            "    portLevelSettings: [{port: {number: 80}, tls: {mode: SIMPLE, sni: p.example}}]",
            80,
            None,
            TlsOrigination("p.example", None, False),
        ),
        (
            "trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true}}",
            80,
            None,
            TlsOrigination(None, None, True),
        ),
    ],
    ids=[
        "https-port",
        "http-port",
        "dr-simple",
        "dr-disable-overrides-https",
        "subset-overrides-top-level",
        "port-level-over-top-level",
        "insecure-skip-verify",
    ],
)
def test_tls_origination(
    rule: str, port: int, subset: str | None, expected: TlsOrigination | None
) -> None:
    text = TLS_BASE
    if rule:
        text += (
            "---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
            "metadata: {name: secure}\nspec:\n  host: secure.example.com\n  " + rule + "\n"
        )
    assert registry_of(text).cluster("secure.example.com", port, subset).tls == expected


def test_first_definition_of_a_host_wins() -> None:
    text = (
        SE_PORTS
        + "---\n"
        + SE_PORTS.replace("name: ext", "name: ext2").replace("10.0.0.1", "10.9.9.9")
    )
    reg = registry_of(text)
    svc = reg.service("ext.example.com")
    assert svc is not None and svc.ref == "default/ext"


def test_wildcard_service_entry_covers_subdomains() -> None:
    reg = registry_of(
        """
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: wild}
spec:
  hosts: ["*.example.com"]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: NONE
"""
    )
    assert reg.service("a.b.example.com") is not None
    assert reg.service("example.com") is None
    assert reg.cluster("a.example.com", 80).passthrough


PROTOCOLS = """
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [ext.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 81, name: grpc, protocol: GRPC}
  - {number: 82, name: h2, protocol: HTTP2}
  - {number: 83, name: web, protocol: GRPC-WEB}
  - {number: 84, name: tls, protocol: HTTPS}
  - {number: 85, name: any}
  - {number: 86, name: tcp, protocol: TCP}
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: up}
spec:
  hosts: [up.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 81, name: grpc, protocol: GRPC}
  - {number: 85, name: any}
  resolution: STATIC
  endpoints: [{address: 10.0.0.2, labels: {v: "1"}}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: up}
spec:
  host: up.example.com
  trafficPolicy:
    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
    portLevelSettings:
    - port: {number: 81}
      connectionPool: {http: {useClientProtocol: true}}
  subsets:
  - name: plain
    labels: {v: "1"}
    trafficPolicy:
      connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE}}
---
apiVersion: v1
kind: Service
metadata: {name: k, namespace: default}
spec:
  ports:
  - {name: grpc-api, port: 9000}
  - {name: http2, port: 9001}
  - {name: grpc-web-ui, port: 9002}
  - {name: web, port: 9003, appProtocol: kubernetes.io/h2c}
  - {name: web2, port: 9004, appProtocol: http}
  - {name: metrics, port: 9005}
  - {name: db, port: 3306}
"""


@pytest.mark.parametrize(
    ("host", "port", "subset", "protocol", "upstream"),
    [
        ("ext.example.com", 80, None, "HTTP", "HTTP/1.1"),
        ("ext.example.com", 81, None, "GRPC", "HTTP/2"),
        ("ext.example.com", 82, None, "HTTP2", "HTTP/2"),
        ("ext.example.com", 83, None, "GRPC-Web", "HTTP/2"),
        ("ext.example.com", 84, None, "HTTPS", "client"),
        ("ext.example.com", 85, None, "UnsupportedProtocol", "sniffed"),
        ("ext.example.com", 86, None, "TCP", "HTTP/1.1"),
        ("nowhere.example.com", 80, None, "", "sniffed"),
        ("up.example.com", 80, None, "HTTP", "HTTP/2"),  # h2UpgradePolicy: UPGRADE
        ("up.example.com", 85, None, "UnsupportedProtocol", "HTTP/2"),  # UPGRADE on sniffed
        ("up.example.com", 81, None, "GRPC", "client"),  # useClientProtocol wins
        ("up.example.com", 80, "plain", "HTTP", "HTTP/1.1"),  # the subset's DO_NOT_UPGRADE
        ("k.default.svc.cluster.local", 9000, None, "GRPC", "HTTP/2"),
        ("k.default.svc.cluster.local", 9001, None, "HTTP2", "HTTP/2"),
        ("k.default.svc.cluster.local", 9002, None, "GRPC-Web", "HTTP/2"),
        ("k.default.svc.cluster.local", 9003, None, "HTTP2", "HTTP/2"),
        ("k.default.svc.cluster.local", 9004, None, "HTTP", "HTTP/1.1"),
        ("k.default.svc.cluster.local", 9005, None, "UnsupportedProtocol", "sniffed"),
        ("k.default.svc.cluster.local", 3306, None, "MySQL", "HTTP/1.1"),
    ],
    ids=[
        "se-http",
        "se-grpc",
        "se-http2",
        "se-grpc-web",
        "se-https-alpn",
        "se-unset",
        "se-tcp",
        "unknown-host",
        "dr-upgrade",
        "dr-upgrade-sniffed",
        "dr-use-client-protocol",
        "subset-do-not-upgrade",
        "k8s-name-prefix-grpc",
        "k8s-name-http2",
        "k8s-name-grpc-web",
        "k8s-app-protocol-h2c",
        "k8s-app-protocol-http",
        "k8s-unnamed",
        "k8s-well-known-port",
    ],
)
def test_upstream_protocol(
    host: str, port: int, subset: str | None, protocol: str, upstream: str
) -> None:
    cluster = registry_of(PROTOCOLS).cluster(host, port, subset)
    assert (cluster.protocol, cluster.upstream) == (protocol, upstream)
