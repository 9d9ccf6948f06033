"""validate/destinationrule.py: a null port-level traffic policy, as Istio's
`validatePortTrafficPolicies` answers it."""

from __future__ import annotations

from meshmirror.diagnostics import format_path
from tests.validate.test_resources import doc, errors, run


def test_null_port_level_setting() -> None:
    spec = """
host: httpbin
trafficPolicy:
  portLevelSettings:
  - null
  - {port: {number: 80}, tls: {mode: SIMPLE}}
"""
    ds = run(doc("DestinationRule", spec))
    assert [(format_path(d.path), d.message) for d in errors(ds)] == [
        ("spec.trafficPolicy.portLevelSettings[0]", "traffic policy may not be null")
    ]
