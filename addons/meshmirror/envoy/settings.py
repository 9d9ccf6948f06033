"""What the export takes from the proxy's options, and what it refuses or warns about by name.

`meshmirror envoy --set NAME=VALUE` (and `meshmirror run --engine envoy ... -- --set ...`) names
the addon options a meshmirror proxy would be run with; Envoy serves some of them (a different
form of the same thing), and cannot express others. A refusal stops the export; a warning says
what Envoy will not do. The YAML's own meshmirror annotations (comparison) are warned about too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from meshmirror.config.resources import LoadedResource
from meshmirror.mirror.shadow import DEFAULT_SUFFIX

Level = Literal["error", "warning"]

# Options that are meshmirror's own and have no counterpart in Envoy: the copies' machinery,
# inspection and reporting. Envoy's admin stats count its copies instead.
_NOT_EXPORTED = {
    "mirror_timeout": "Envoy's copies use the route's timeout",
    "mirror_max_inflight": "Envoy bounds copies with its cluster circuit breakers",
    "mirror_max_body": "Envoy buffers a copy's body up to its buffer limit",
    "mirror_breaker_failures": "Envoy has no per-mirror breaker of this kind",
    "mirror_breaker_cooldown": "Envoy has no per-mirror breaker of this kind",
    "mirror_sender": "meshmirror's own sender process",
    "mirror_verbosity": "meshmirror's own log lines; Envoy counts copies in its admin stats",
    "mirror_summary_interval": "meshmirror's own summary line",
    "mirror_log": "the outcome log is meshmirror's; Envoy discards shadow responses",
    "mirror_flows": "mirror flows are mitmproxy's",
    "mirror_flows_max": "mirror flows are mitmproxy's",
    "mirror_compare": "the comparison is meshmirror's; Envoy discards shadow responses",
    "mirror_compare_noise": "the comparison is meshmirror's; Envoy discards shadow responses",
    "mirror_metrics": "meshmirror's Prometheus endpoint; Envoy's admin serves /stats/prometheus",
    "mirror_timeline": "meshmirror's own timeline",
    "mirror_replay_sample": "recordings are replayed by mitmproxy only",
    "mirror_reload_interval": "the bootstrap is static: export again and restart Envoy",
    "mirror_seed": "Envoy draws its samples at random; runs do not repeat",
}
# Served by the export itself.
_MAPPED = {"mirror_config", "mirror_gateway", "mirror_default_retries", "mirror_upstream_http2"}
_COMPARE_ANNOTATION = "meshmirror.io/compare"


@dataclass(frozen=True, slots=True)
class Note:
    level: Level
    text: str

    def format(self) -> str:
        return f"{self.level}: {self.text}"


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """The proxy's options as the export serves them."""

    default_retries: bool = False
    upstream_http2: bool = False
    shadow_suffix: bool = True  # mirror_host_suffix "-shadow" (Envoy's); False: ""
    notes: tuple[Note, ...] = field(default=())

    @property
    def refused(self) -> bool:
        return any(n.level == "error" for n in self.notes)


def _bool(value: str) -> bool | None:
    return {"true": True, "false": False}.get(value.strip().lower())


def read_settings(assignments: Sequence[str], *, default_retries: bool = False) -> ExportSettings:
    """`NAME=VALUE` assignments of addon options (as `--set` takes them) -> the settings, with a
    note for each option Envoy serves otherwise or not at all."""
    settings = ExportSettings(default_retries=default_retries)
    notes: list[Note] = []
    for text in assignments:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep:
            notes.append(Note("error", f"--set {text!r}: expected NAME=VALUE"))
            continue
        if name == "mirror_host_suffix":
            if value == DEFAULT_SUFFIX:
                settings = replace(settings, shadow_suffix=True)
            elif value == "":
                settings = replace(settings, shadow_suffix=False)
            else:
                notes.append(
                    Note(
                        "error",
                        f"mirror_host_suffix={value!r}: Envoy appends {DEFAULT_SUFFIX!r} to a "
                        "copy's Host or nothing (disable_shadow_host_suffix_append); no other "
                        "suffix",
                    )
                )
        elif name == "mirror_sampling":
            if value.strip() not in ("", "random"):
                notes.append(
                    Note(
                        "error",
                        f"mirror_sampling={value}: Envoy samples copies at random, not by "
                        "X-Request-Id",
                    )
                )
        elif name == "mirror_methods":
            if value.strip():
                notes.append(
                    Note("error", "mirror_methods: Envoy mirrors every method a route matches")
                )
        elif name == "mirror_redact_headers":
            if value.strip():
                notes.append(
                    Note(
                        "error",
                        "mirror_redact_headers: Envoy copies every header; it cannot strip or "
                        "mask one in copies only",
                    )
                )
        elif name == "mirror_default_retries":
            if value.strip() not in ("off", "istio"):
                notes.append(Note("error", f"mirror_default_retries={value}: off or istio"))
            else:
                settings = replace(settings, default_retries=value.strip() == "istio")
        elif name == "mirror_upstream_http2":
            flag = _bool(value)
            if flag is None:
                notes.append(Note("error", f"mirror_upstream_http2={value}: true or false"))
            else:
                settings = replace(settings, upstream_http2=flag)
        elif name in _NOT_EXPORTED:
            notes.append(Note("warning", f"{name} is not exported: {_NOT_EXPORTED[name]}"))
        elif name in _MAPPED:
            notes.append(Note("warning", f"{name}: give it as the export's own argument"))
        elif name.startswith("mirror_"):
            notes.append(Note("error", f"{name}: not a meshmirror option"))
        # Other names are mitmproxy's own options; Envoy has no use for them.
    return replace(settings, notes=settings.notes + tuple(notes))


def resource_notes(resources: Iterable[LoadedResource]) -> list[Note]:
    """Warnings for the meshmirror annotations in the YAML that Envoy cannot serve."""
    notes: list[Note] = []
    for r in resources:
        annotations = getattr(getattr(r.obj, "metadata", None), "annotations", None) or {}
        names = sorted(a for a in annotations if a.startswith(_COMPARE_ANNOTATION))
        if names:
            notes.append(
                Note(
                    "warning",
                    f"{r.kind} {r.ref}: {', '.join(names)} not exported: the comparison is "
                    "meshmirror's; Envoy discards shadow responses",
                )
            )
    return notes
