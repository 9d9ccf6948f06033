"""Noise learned from a baseline, as Diffy learns it: what differs between two instances of the
same version is noise, not a behavioural change.

A rule with a baseline (`meshmirror.io/compare-baseline: HOST`, a second instance of the
primary's version, reached as one of the rule's mirrors) teaches the model: each time the
baseline's answer is compared with the primary's, every field that differs is counted for the
rule. A field counted `MIN_COUNT` times is noise for that rule; the candidates' comparisons of the
rule then report their mismatches with the noise removed (the raw list stays beside it). At most
`MAX_FIELDS` fields are kept per rule: past it, the least counted go, as they are learned and as a
saved model is loaded. Pure; the model is a plain mapping that can be saved as JSON and loaded by
a later run (`loads` refuses anything else with a ValueError that says why).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from meshmirror.outcomes.compare import Comparison

MIN_COUNT = 3  # baseline comparisons a field must differ in before it is trusted as noise
MAX_FIELDS = 500  # fields kept per rule


class NoiseModel:
    def __init__(self) -> None:
        self.seen: dict[str, Counter[str]] = {}  # rule label -> field -> baseline differences
        self.compared: Counter[str] = Counter()  # rule label -> baseline comparisons

    def learn(self, rule: str, fields: Iterable[str]) -> None:
        """One baseline comparison of `rule` and the fields that differed in it."""
        self.compared[rule] += 1
        counts = self.seen.setdefault(rule, Counter())
        counts.update(fields)
        _trim(counts)

    def noise(self, rule: str) -> frozenset[str]:
        counts = self.seen.get(rule)
        if not counts:
            return frozenset()
        return frozenset(name for name, n in counts.items() if n >= MIN_COUNT)

    def filter(self, rule: str, comparison: Comparison) -> Comparison:
        """`comparison` with the rule's learned noise removed from its fields; `raw_fields` keeps
        what it found. A comparison whose every field is noise matches."""
        noise = self.noise(rule)
        removed = tuple(f for f in comparison.fields if f in noise)
        if not removed:
            return comparison
        kept = tuple(f for f in comparison.fields if f not in noise)
        return dataclasses.replace(
            comparison,
            match=not kept,
            fields=kept,
            examples={k: v for k, v in comparison.examples.items() if k in kept},
            differing=comparison.differing - len(removed),
            raw_fields=comparison.fields,
            noise=removed,
        )

    def snapshot(self) -> dict[str, Any]:
        """Per rule: baseline comparisons and the fields trusted as noise (for mirror.stats)."""
        return {
            rule: {"baseline_compared": self.compared[rule], "noise": sorted(self.noise(rule))}
            for rule in sorted(self.compared)
        }

    def dumps(self) -> str:
        return json.dumps(
            {
                "min_count": MIN_COUNT,
                "rules": {
                    rule: {"compared": self.compared[rule], "fields": dict(self.seen.get(rule, {}))}
                    for rule in sorted(self.compared)
                },
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def loads(cls, text: str) -> NoiseModel:
        """The model `dumps` wrote; ValueError (with the reason) for anything else."""
        try:
            data = json.loads(text)
        except RecursionError:
            raise ValueError("not a meshmirror noise file (JSON nested too deeply)") from None
        model = cls()
        rules = data.get("rules") if isinstance(data, Mapping) else None
        if not isinstance(rules, Mapping):
            raise ValueError("not a meshmirror noise file (no `rules` object)")
        for rule, entry in rules.items():
            fields = entry.get("fields") if isinstance(entry, Mapping) else None
            compared = entry.get("compared", 0) if isinstance(entry, Mapping) else 0
            if not isinstance(fields, Mapping) or not isinstance(compared, int):
                raise ValueError(f"rule {rule!r}: expected {{compared: N, fields: {{...}}}}")
            model.compared[str(rule)] = compared
            counts = Counter({str(k): v for k, v in fields.items() if type(v) is int and v > 0})
            _trim(counts)
            model.seen[str(rule)] = counts
        return model


def _trim(counts: Counter[str]) -> None:
    """Keep the MAX_FIELDS most counted fields (the first seen among equals)."""
    if len(counts) > MAX_FIELDS:
        for name, _ in counts.most_common()[MAX_FIELDS:]:
            del counts[name]
