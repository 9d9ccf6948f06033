"""Which copies are compared, and how: the global settings refined per VirtualService.

Comparison is configured globally (`mirror_compare`, `mirror_compare_ignore_headers`,
`mirror_compare_ignore_json`) and per VirtualService through annotations, read when the config
is loaded:
    meshmirror.io/compare: "true" | "false"                      overrides mirror_compare
    meshmirror.io/compare-ignore-json: "/origin,/items/*/id"     added to the global pointers
    meshmirror.io/compare-ignore-headers: "x-version,x-cache"    added to the global names
    meshmirror.io/compare-baseline: "httpbin-v1-b"              the mirror host that is a second
        instance of the primary's version: what differs between it and the primary is learned
        as noise and removed from the other mirrors' mismatches (outcomes/noise.py)

Pure and free of mitmproxy: a bad annotation is a `ValueError` that names the file, the
VirtualService and the annotation; the addon (inspection.py) turns it into `OptionsError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from meshmirror.config.resources import LoadedResource
from meshmirror.outcomes.compare_inputs import CompareSettings

ANNOTATION_COMPARE = "meshmirror.io/compare"
ANNOTATION_IGNORE_JSON = "meshmirror.io/compare-ignore-json"
ANNOTATION_IGNORE_HEADERS = "meshmirror.io/compare-ignore-headers"
ANNOTATION_BASELINE = "meshmirror.io/compare-baseline"


@dataclass(frozen=True, slots=True)
class RuleCompare:
    enabled: bool
    settings: CompareSettings
    baseline: str | None = None  # the baseline mirror's host, as the annotation names it

    def is_baseline(self, cluster: str) -> bool:
        """Whether the mirror cluster (`outbound|PORT|SUBSET|FQDN`) is the baseline: its FQDN is
        the annotated host, or that short name expanded (`name.namespace.svc...`)."""
        if not self.baseline:
            return False
        fqdn = cluster.rpartition("|")[2]
        return fqdn == self.baseline or fqdn.startswith(self.baseline + ".")


def compile_compare_rules(
    resources: Sequence[LoadedResource], base: RuleCompare
) -> dict[str, RuleCompare]:
    """Comparison per VirtualService ref, for those with meshmirror.io/ annotations.

    The others use `base` (the global options). Raises ValueError for an annotation whose JSON
    pointers do not parse."""
    rules: dict[str, RuleCompare] = {}
    for r in resources:
        if r.kind != "VirtualService":
            continue
        ann = r.obj.metadata.annotations or {}
        if not any(k.startswith("meshmirror.io/") for k in ann):
            continue
        flag = ann.get(ANNOTATION_COMPARE, "").strip().lower()
        enabled = base.enabled if not flag else flag in ("true", "1", "yes", "on")
        pointers = base.settings.ignore_json + tuple(
            p.strip() for p in ann.get(ANNOTATION_IGNORE_JSON, "").split(",") if p.strip()
        )
        headers = base.settings.ignore_headers + tuple(
            h.strip().lower()
            for h in ann.get(ANNOTATION_IGNORE_HEADERS, "").split(",")
            if h.strip()
        )
        try:
            settings = CompareSettings.build((), pointers, base.settings.max_body)
        except ValueError as e:
            raise ValueError(
                f"{r.source}: VirtualService {r.ref}: {ANNOTATION_IGNORE_JSON}: {e}"
            ) from e
        # The redacted headers and the Host suffix are the global options' (base), always.
        rules[r.ref] = RuleCompare(
            enabled,
            dataclasses.replace(
                base.settings, ignore_headers=headers, ignore_json=settings.ignore_json
            ),
            ann.get(ANNOTATION_BASELINE, "").strip() or None,
        )
    return rules
