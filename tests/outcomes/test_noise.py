"""Noise learned from a baseline: counted per rule, trusted after MIN_COUNT differences, removed
from candidates' mismatches with the raw list kept, bounded, saved and loaded."""

from __future__ import annotations

import json

import pytest

from meshmirror.outcomes.compare import Comparison
from meshmirror.outcomes.noise import MAX_FIELDS, MIN_COUNT, NoiseModel

RULE = "default/app[0]"


def mismatch(*fields: str) -> Comparison:
    return Comparison(False, fields, {f: f"{f}: a != b" for f in fields}, differing=len(fields))


def test_a_field_is_noise_once_the_baseline_differed_in_it_min_count_times() -> None:
    model = NoiseModel()
    for _ in range(MIN_COUNT - 1):
        model.learn(RULE, ["body:/ts"])
    assert model.noise(RULE) == frozenset()
    model.learn(RULE, ["body:/ts", "body:/rare"])
    assert model.noise(RULE) == {"body:/ts"}
    assert model.noise("default/other[0]") == frozenset()  # per rule


def test_the_candidates_mismatch_keeps_its_real_change_and_its_raw_fields() -> None:
    model = NoiseModel()
    for _ in range(MIN_COUNT):
        model.learn(RULE, ["body:/ts"])
    filtered = model.filter(RULE, mismatch("body:/ts", "body:/price"))
    assert (filtered.match, filtered.fields, filtered.differing) == (False, ("body:/price",), 1)
    assert filtered.raw_fields == ("body:/ts", "body:/price")
    assert filtered.noise == ("body:/ts",)
    assert set(filtered.examples) == {"body:/price"}
    assert filtered.summary()["raw_fields"] == ["body:/ts", "body:/price"]
    only_noise = model.filter(RULE, mismatch("body:/ts"))
    assert only_noise.match and only_noise.fields == ()
    untouched = mismatch("body:/price")
    assert model.filter(RULE, untouched) is untouched


def test_the_fields_kept_per_rule_are_bounded() -> None:
    model = NoiseModel()
    model.learn(RULE, ["body:/keep"] * 1)
    model.learn(RULE, ["body:/keep"])
    model.learn(RULE, [f"body:/f{i}" for i in range(MAX_FIELDS + 50)])
    assert len(model.seen[RULE]) <= MAX_FIELDS
    assert "body:/keep" in model.seen[RULE]  # the most counted survive


def test_a_model_is_saved_and_loaded() -> None:
    model = NoiseModel()
    for _ in range(MIN_COUNT):
        model.learn(RULE, ["body:/ts"])
    back = NoiseModel.loads(model.dumps())
    assert back.noise(RULE) == {"body:/ts"}
    assert back.snapshot() == {RULE: {"baseline_compared": MIN_COUNT, "noise": ["body:/ts"]}}


@pytest.mark.parametrize("text", ['{"foo": 1}', "[]", '{"rules": {"r": {"fields": 3}}}'])
def test_a_file_that_is_not_a_noise_model_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        NoiseModel.loads(text)


def test_a_saved_model_over_the_cap_is_trimmed_as_it_is_loaded() -> None:
    fields = {f"body:/f{i}": i + 1 for i in range(MAX_FIELDS + 100)}
    text = json.dumps({"rules": {RULE: {"compared": 1, "fields": fields}}})
    model = NoiseModel.loads(text)
    kept = model.seen[RULE]
    assert len(kept) == MAX_FIELDS and min(kept.values()) == 101


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 200_000, "nested too deeply"),
        ("[1, 2]", "no `rules` object"),
        ('{"rules": {"r": {"compared": "x", "fields": {}}}}', "expected {compared"),
    ],
    ids=["deep", "not-an-object", "bad-entry"],
)
def test_what_is_not_a_noise_file_is_a_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NoiseModel.loads(text)
