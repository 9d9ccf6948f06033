"""validate/serviceentry.py against Istio's `ValidateServiceEntry`, case by case.

Cases named `TestValidateServiceEntries/...` are that Go test's cases (istio/istio
pkg/config/validation/validation_test.go) in YAML; the Go test only says valid / warning, so
the messages expected here are the ones `ValidateServiceEntry` builds for them (validation.go).
The other cases pin a branch of validation.go that no Go case reaches.
"""

from __future__ import annotations

import textwrap

import pytest

from meshmirror.config.loader import load_text
from meshmirror.diagnostics import Severity, format_path
from meshmirror.validate.resources import validate_resources

GO = "TestValidateServiceEntries/"
HTTP_PORTS = (
    "ports: [{number: 80, protocol: http, name: http-valid1}, "
    "{number: 8080, protocol: http, name: http-valid2}]"
)

Finding = tuple[str, str, str]  # (severity, path, message)


def findings(spec: str, labels: str = "") -> list[Finding]:
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    meta = "metadata: {name: se, namespace: default" + (f", labels: {labels}" if labels else "")
    text = f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n{meta}}}\nspec:\n{body}\n"
    loaded = load_text(text, "se.yaml")
    assert not loaded.errors, [d.format() for d in loaded.errors]
    # Istio's findings: meshmirror's own notes (INFO: what it serves) are tested on their own.
    return [
        (d.severity.value, format_path(d.path), d.message)
        for d in validate_resources(loaded.resources)
        if d.severity is not Severity.INFO
    ]


@pytest.mark.parametrize(
    ("protocol", "note"),
    [
        ("TCP", True),
        ("MONGO", True),
        ("TLS", True),
        ("HTTP", False),
        ("HTTPS", False),
        ("GRPC", False),
        ("HTTP2", False),
        ("GRPC-WEB", False),
    ],
)
def test_ports_meshmirror_does_not_serve_are_noted(protocol: str, note: bool) -> None:
    text = (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\n"
        "spec:\n  hosts: [a.example.com]\n  addresses: [10.0.0.1]\n  resolution: STATIC\n"
        f"  ports: [{{number: 80, name: p, protocol: {protocol}}}]\n"
        "  endpoints: [{address: 10.0.0.2}]\n"
    )
    loaded = load_text(text, "se.yaml")
    infos = [d for d in validate_resources(loaded.resources) if d.severity is Severity.INFO]
    if note:
        assert [format_path(d.path) for d in infos] == ["spec.ports[0].protocol"]
        assert "parsed but not served by meshmirror" in infos[0].message
    else:
        assert infos == []


def err(path: str, message: str) -> Finding:
    return (Severity.ERROR.value, path, message)


def warn(path: str, message: str) -> Finding:
    return (Severity.WARNING.value, path, message)


TCP_NO_ADDRESS = (
    "addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation "
    "is not enabled"
)
DYNAMIC_PROTOCOLS = (
    "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type DYNAMIC_DNS"
)

CASES = [
    # --- DNS: without endpoints the hosts themselves are resolved --------------------------
    pytest.param(
        f"""
        hosts: ["*.google.com"]
        {HTTP_PORTS}
        endpoints:
        - {{address: lon.google.com, ports: {{http-valid1: 8080}}}}
        - {{address: in.google.com, ports: {{http-valid2: 9080}}}}
        resolution: DNS
        """,
        "",
        [],
        id=GO + "discovery type DNS",
    ),
    pytest.param(
        f"""
        hosts: ["*.google.com"]
        {HTTP_PORTS}
        resolution: DNS
        """,
        "",
        [
            err(
                "spec.hosts[0]",
                "hosts must be FQDN or contain only prefix wildcards if no endpoints are provided "
                'for resolution mode DNS, domain name "*.google.com" invalid (label "*" invalid)',
            )
        ],
        id=GO + "discovery type DNS, non-FQDN host",
    ),
    pytest.param(
        f"""
        hosts: [google.com]
        {HTTP_PORTS}
        resolution: DNS
        """,
        "",
        [],
        id=GO + "discovery type DNS, no endpoints",
    ),
    pytest.param(
        f"""
        hosts: ["*.a.example", "*.b.example"]
        {HTTP_PORTS}
        resolution: DNS_ROUND_ROBIN
        """,
        "",
        [
            # Istio stops at the first host that is not an FQDN.
            err(
                "spec.hosts[0]",
                "hosts must be FQDN or contain only prefix wildcards if no endpoints are provided "
                'for resolution mode DNS_ROUND_ROBIN, domain name "*.a.example" invalid '
                '(label "*" invalid)',
            )
        ],
        id="dns-no-endpoints-reports-the-first-wildcard-host",
    ),
    # --- DYNAMIC_DNS ----------------------------------------------------------------------
    pytest.param(
        f"""
        hosts: ["*.google.com"]
        {HTTP_PORTS}
        resolution: DYNAMIC_DNS
        """,
        "",
        [],
        id=GO + "discovery type DYNAMIC_DNS",
    ),
    pytest.param(
        """
        hosts: ["*.google.com"]
        addresses: []
        ports:
        - {number: 80, protocol: http, name: http-valid1}
        - {number: 81, protocol: TCP, name: tcp-valid1}
        resolution: DYNAMIC_DNS
        """,
        "",
        # No "addresses are required" warning: Istio auto-allocates one (its default).
        [err("spec.ports[1].protocol", DYNAMIC_PROTOCOLS)],
        id=GO + "discovery type DYNAMIC_DNS, unsupported TCP protocol",
    ),
    pytest.param(
        """
        hosts: ["*.svc.cluster.local"]
        addresses: []
        ports: [{number: 9090, protocol: GRPC, name: grpc}]
        resolution: DYNAMIC_DNS
        """,
        "",
        [],
        id=GO + "discovery type DYNAMIC_DNS, GRPC protocol",
    ),
    pytest.param(
        """
        hosts: [google.com]
        addresses: []
        ports: [{number: 80, protocol: http, name: http-valid}]
        resolution: DYNAMIC_DNS
        """,
        "",
        [err("spec.hosts[0]", "host must be wildcarded for resolution mode DYNAMIC_DNS")],
        id=GO + "discovery type DYNAMIC_DNS, FQDN host",
    ),
    pytest.param(
        """
        hosts: ["*.google.com"]
        addresses: []
        ports: [{number: 80, protocol: http, name: http-valid1}]
        endpoints: [{address: in.google.com, ports: {http-valid1: 9080}}]
        resolution: DYNAMIC_DNS
        """,
        "",
        [
            err(
                "spec.endpoints",
                "endpoints cannot be set for resolution type DYNAMIC_DNS. Destination IP address "
                "determined from hostsfield values",
            )
        ],
        id=GO + "discovery type DYNAMIC_DNS, endpoints set",
    ),
    pytest.param(
        f"""
        hosts: ["*.google.com"]
        addresses: [10.10.10.10]
        {HTTP_PORTS}
        resolution: DYNAMIC_DNS
        """,
        "",
        [
            err(
                "spec.addresses",
                "addresses cannot be set for resolution type DYNAMIC_DNS. HTTP route domains will "
                "only be generatedfrom the hosts field values",
            )
        ],
        id=GO + "discovery type DYNAMIC_DNS, IP address set",
    ),
    pytest.param(
        """
        hosts: []
        addresses: []
        ports: [{number: 80, protocol: http, name: http-valid1}]
        resolution: DYNAMIC_DNS
        """,
        "",
        [
            err("spec.hosts", "service entry must have at least one host"),
            err(
                "spec.hosts",
                "at least one wildcard host must be provided for resolution type DYNAMIC_DNS",
            ),
        ],
        id=GO + "discovery type DYNAMIC_DNS, empty hosts",
    ),
    pytest.param(
        """
        hosts: ["*.google.com", "*.amazon.com"]
        addresses: []
        ports: [{number: 80, protocol: http, name: http-valid1}]
        resolution: DYNAMIC_DNS
        """,
        "",
        [],
        id=GO + "discovery type DYNAMIC_DNS, multiple wildcarded hosts",
    ),
    pytest.param(
        """
        hosts: ["*.google.com"]
        addresses: []
        ports: [{number: 80, protocol: http, name: http-valid1}]
        resolution: DYNAMIC_DNS
        location: MESH_INTERNAL
        """,
        "",
        [],
        id=GO + "discovery type DYNAMIC_DNS, internal mesh location",
    ),
    pytest.param(
        """
        hosts: ["*.google.com"]
        addresses: []
        ports: [{number: 80, protocol: http, name: http-valid1}]
        resolution: DYNAMIC_DNS
        location: MESH_INTERNAL
        """,
        "{istio.io/use-waypoint: my-waypoint}",
        [
            err(
                "spec.location",
                "location MESH_INTERNAL with resolution type DYNAMIC_DNS is not supported when "
                "using waypoints",
            )
        ],
        id=GO + "discovery type DYNAMIC_DNS, MESH_INTERNAL with waypoint (invalid)",
    ),
    pytest.param(
        """
        hosts: ["*.google.com"]
        ports: [{number: 80, protocol: http, name: http-valid1}]
        resolution: DYNAMIC_DNS
        location: MESH_INTERNAL
        """,
        "{istio.io/use-waypoint: none}",
        [],
        id="dynamic-dns-mesh-internal-with-waypoint-none",
    ),
    pytest.param(
        """
        hosts: ["*.google.com", "*foo.example.com"]
        ports: [{number: 80, protocol: http, name: http-valid1}]
        resolution: DYNAMIC_DNS
        """,
        "",
        # ValidatePartialWildCard is skipped for DYNAMIC_DNS: the request's own name resolves.
        [],
        id="dynamic-dns-partial-wildcard-not-warned",
    ),
    # --- null ports -----------------------------------------------------------------------
    pytest.param(
        """
        hosts: ["*.google.com"]
        location: MESH_EXTERNAL
        ports: [null]
        resolution: DYNAMIC_DNS
        """,
        "",
        [
            err("spec.ports[0]", "service entry port may not be null"),
            err("spec.ports[0]", "port cannot be nil"),
        ],
        id=GO + "discovery type DYNAMIC_DNS, nil port",
    ),
    pytest.param(
        """
        hosts: [google.com]
        ports: [null]
        resolution: NONE
        """,
        "",
        [err("spec.ports[0]", "service entry port may not be null")],
        id=GO + "nil port in ports array",
    ),
    pytest.param(
        """
        hosts: [google.com]
        addresses: [1.2.3.4]
        ports: [null]
        resolution: DNS
        """,
        "",
        [
            err("spec.ports[0]", "service entry port may not be null"),
            err("spec.ports[0]", "ports cannot be nil"),
        ],
        id=GO + "discovery type DNS with addresses, nil port",
    ),
    pytest.param(
        """
        hosts: [a.example, b.example]
        ports: [null, {number: 80, protocol: http, name: http}]
        resolution: DNS
        """,
        "",
        [
            err("spec.ports[0]", "service entry port may not be null"),
            err("spec.ports[0]", "ports cannot be nil"),  # the several-hosts check
        ],
        id="several-hosts-nil-port",
    ),
    pytest.param(
        """
        hosts: [google.com]
        ports: [{number: 80, protocol: http, name: http}]
        endpoints: [null, {address: 1.1.1.1}]
        resolution: STATIC
        """,
        "",
        [err("spec.endpoints[0]", "endpoint cannot be nil")],
        id="static-nil-endpoint",
    ),
    pytest.param(
        """
        hosts: [google.com]
        ports: [{number: 80, protocol: http, name: http}]
        endpoints: [null]
        resolution: DNS
        """,
        "",
        [err("spec.endpoints[0]", "endpoint cannot be nil")],
        id="dns-nil-endpoint",
    ),
    # --- warnings Istio gives, and only those -----------------------------------------------
    pytest.param(
        """
        hosts: [google.com]
        addresses: []
        ports:
        - {number: 80, protocol: http, name: http-valid1}
        - {number: 8080, name: http-valid2}
        resolution: NONE
        """,
        "",
        [warn("spec.ports[1]", TCP_NO_ADDRESS)],
        id=GO + "protocol unset for addresses empty",
    ),
    pytest.param(
        """
        hosts: [google.com]
        addresses: []
        ports:
        - {number: 80, protocol: http, name: http-valid1}
        - {number: 81, protocol: TCP, name: tcp-valid1}
        resolution: NONE
        """,
        "",
        [warn("spec.ports[1]", TCP_NO_ADDRESS)],
        id=GO + "protocol is TCP for addresses empty",
    ),
    pytest.param(
        """
        hosts: [google.com]
        ports: [{number: 81, protocol: TCP, name: tcp}]
        resolution: DNS
        """,
        "",
        [],  # an address is auto-allocated
        id="dns-tcp-without-addresses-is-auto-allocated",
    ),
    pytest.param(
        """
        hosts: [google.com]
        ports: [{number: 81, protocol: TCP, name: tcp}]
        resolution: DNS
        """,
        '{networking.istio.io/enable-autoallocate-ip: "false"}',
        [warn("spec.ports[0]", TCP_NO_ADDRESS)],
        id="dns-tcp-auto-allocation-opted-out",
    ),
    pytest.param(
        """
        hosts: [google.com]
        workloadSelector: {labels: {"": bar}}
        ports: [{number: 80, protocol: http, name: http-valid1}]
        """,
        "",
        # The selector's error alone: no resolution-NONE warning beside it.
        [err("spec.workloadSelector.labels", 'empty key is not supported in selector: "=bar"')],
        id=GO + "bad selector key",
    ),
    pytest.param(
        """
        hosts: ["*"]
        workloadSelector: {labels: {app: "a*"}}
        ports: [{number: 0, protocol: http, name: BAD}]
        """,
        "",
        [
            err(
                "spec.workloadSelector.labels.app",
                'wildcard is not supported in selector: "app=a*"',
            )
        ],
        id="bad-selector-is-reported-alone",
    ),
    pytest.param(
        """
        hosts: [google.com]
        workloadSelector: {labels: {foo: bar}}
        ports: [{number: 80, protocol: http, name: http-valid1}]
        """,
        "",
        [
            warn(
                "spec.workloadSelector",
                "workloadSelector should not be set when resolution mode is NONE",
            )
        ],
        id=GO + "selector",
    ),
    pytest.param(
        """
        hosts: [google.com]
        workloadSelector: {labels: {foo: bar}}
        ports: [{number: 80, protocol: http, name: http-valid1}]
        resolution: DNS
        """,
        "",
        [],
        id=GO + "selector and resolution DNS",
    ),
    pytest.param(
        """
        hosts: ["*.nytimes.com", "*washingtonpost.com"]
        addresses: []
        ports: [{number: 443, protocol: HTTPS, name: https-nytimes}]
        endpoints: []
        resolution: NONE
        """,
        "",
        [warn("spec.hosts[1]", 'partial wildcard "*washingtonpost.com" not allowed')],
        id=GO + "partial wildcard hosts",
    ),
]


@pytest.mark.parametrize(("spec", "labels", "expected"), CASES)
def test_service_entry(spec: str, labels: str, expected: list[Finding]) -> None:
    assert findings(spec, labels) == expected
