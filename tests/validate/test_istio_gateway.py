"""validate/istio_gateway.py: a null server, as Istio's `ValidateGateway` answers it (both of
its passes over the servers name it: validateServer, then the port-name check)."""

from __future__ import annotations

from meshmirror.diagnostics import format_path
from tests.validate.test_resources import doc, errors, run


def test_null_server_gets_both_of_istios_messages() -> None:
    spec = """
selector: {istio: ingressgateway}
servers:
- null
- {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}
"""
    ds = run(doc("Gateway", spec, name="gw"))
    assert [(format_path(d.path), d.message) for d in errors(ds)] == [
        ("spec.servers[0]", "cannot have nil server"),
        ("spec.servers[0]", "server may not be nil"),
    ]
