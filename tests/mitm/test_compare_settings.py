"""Comparison settings from the options: the copy's redactions and Host suffix reach them, for
the global settings and for every VirtualService's own (annotations) alike."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from meshmirror.mirror.sender import ProcessWriter
from meshmirror.mitm.addon import Mirror
from meshmirror.mitm.compare_rules import RuleCompare, compile_compare_rules
from meshmirror.outcomes.compare_inputs import CompareSettings


def virtual_service(annotations: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(
        kind="VirtualService",
        ref="default/app",
        source="cfg.yaml",
        obj=SimpleNamespace(metadata=SimpleNamespace(annotations=annotations)),
    )


def test_annotations_keep_the_redactions_and_the_host_suffix() -> None:
    base = RuleCompare(
        False,
        CompareSettings.build(
            ["x-a"], ["/a"], 1024, redact_headers=["X-Api-Key"], host_suffix="-canary"
        ),
    )
    vs = virtual_service(
        {
            "meshmirror.io/compare": "true",
            "meshmirror.io/compare-ignore-json": "/b",
            "meshmirror.io/compare-ignore-headers": "X-B",
        }
    )
    rule = compile_compare_rules([vs], base)["default/app"]  # type: ignore[list-item]
    assert rule.enabled
    s = rule.settings
    assert s.redact_headers == ("x-api-key",) and s.host_suffix == "-canary"
    assert s.ignore_json == ("/a", "/b") and s.ignore_headers[-2:] == ("x-a", "x-b")
    assert s.max_body == 1024


def test_the_options_of_the_copy_reach_the_comparison(caplog: pytest.LogCaptureFixture) -> None:
    # Not async: with no running loop, no sender process is started.
    m = Mirror()
    with taddons.context(Proxyserver(), m) as tctx:
        settings = m.inspection.compare_default.settings
        assert (settings.redact_headers, settings.host_suffix) == ((), "-shadow")
        tctx.configure(
            m,
            mirror_redact_headers=["Authorization", "Cookie=mask"],
            mirror_host_suffix="-canary",
        )
        settings = m.inspection.compare_default.settings
        assert settings.redact_headers == ("authorization", "cookie")
        assert settings.host_suffix == "-canary"
        assert "authorization" in settings.sensitive_headers()
        # At startup a bad value is logged, once (Mirror reports it, not the comparison too),
        # never raised into a traceback.
        tctx.configure(m, mirror_redact_headers=["Bad Name"])
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "mirror_redact_headers" in errors[0], errors
        m._running = True  # run time (mitmproxy's console `set`): raised, and rolled back
        with pytest.raises(exceptions.OptionsError, match="mirror_redact_headers"):
            tctx.configure(m, mirror_redact_headers=["Bad Name"])
        writer = m.fanout.writer
        assert not isinstance(writer, ProcessWriter) or writer.pid is None
