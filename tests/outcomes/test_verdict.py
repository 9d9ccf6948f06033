"""`--fail-on` conditions: parsing, evaluation per rule and mirror, the JUnit file."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from meshmirror.outcomes.report import GroupStats
from meshmirror.outcomes.verdict import (
    Condition,
    ConditionError,
    evaluate,
    figure_of,
    junit_xml,
    parse_condition,
    verdict_lines,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mismatch_rate > 1%", Condition("mismatch_rate > 1%", "mismatch_rate", ">", 0.01)),
        (
            "shadow_error_rate>=0.005",
            Condition("shadow_error_rate>=0.005", "shadow_error_rate", ">=", 0.005),
        ),
        ("shadow_p99 > 250ms", Condition("shadow_p99 > 250ms", "shadow_p99", ">", 0.25)),
        ("primary_p50 <= 2s", Condition("primary_p50 <= 2s", "primary_p50", "<=", 2.0)),
        (
            "shadow_p99 > 2x primary_p99",
            Condition("shadow_p99 > 2x primary_p99", "shadow_p99", ">", 2.0, "primary_p99"),
        ),
        ("sampled < 100", Condition("sampled < 100", "sampled", "<", 100.0)),
    ],
)
def test_conditions_parse(text: str, expected: Condition) -> None:
    assert parse_condition(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("mismatch_rate", "expected FIGURE OP VALUE"),
        ("latency > 1", "unknown figure 'latency'"),
        ("shadow_p99 > 250", "a latency needs ms or s"),
        ("mismatch_rate > 5ms", "a rate is a fraction or a percentage"),
        ("sampled > 5%", "a count, without a unit"),
        ("shadow_p99 > 2x mismatch_rate", "compare a latency with a latency"),
        ("mismatch_rate > lots", "is not a number"),
    ],
)
def test_bad_conditions_say_why(text: str, why: str) -> None:
    with pytest.raises(ConditionError, match=why):
        parse_condition(text)


def group(**kw: object) -> GroupStats:
    g = GroupStats("default/app[0]", "outbound|80||shadow.local")
    for k, v in kw.items():
        setattr(g, k, v)
    return g


def test_figures_of_a_group() -> None:
    g = group(
        sampled=200,
        sent=190,
        failed=Counter({"timeout": 10}),
        shadow_status=Counter({"200": 180, "503": 10}),
        compared=100,
        mismatched=3,
        shadow_latency=[float(i) for i in range(1, 101)],  # ms
        primary_latency=[10.0] * 100,
    )
    assert figure_of(g, "mismatch_rate") == 0.03
    assert figure_of(g, "failed_rate") == 0.05
    assert figure_of(g, "shadow_error_rate") == 0.1  # 10 failed + 10 shadow 5xx over 200
    assert figure_of(g, "shadow_p99") == 0.099
    assert figure_of(g, "primary_p50") == 0.01
    assert figure_of(g, "sampled") == 200
    assert figure_of(group(), "mismatch_rate") is None  # nothing compared
    assert figure_of(group(), "grpc_error_rate") is None  # no gRPC call copied
    assert figure_of(group(grpc_sampled=50, grpc_errors=2), "grpc_error_rate") == 0.04
    [ok] = [c for c in [parse_condition("grpc_error_rate > 1%")]]
    assert (ok.figure, ok.value) == ("grpc_error_rate", 0.01)


def test_a_condition_fails_when_it_holds_and_is_unknown_without_data() -> None:
    g = group(sampled=10, compared=10, mismatched=2, shadow_latency=[30.0], primary_latency=[10.0])
    conditions = [
        parse_condition("mismatch_rate > 10%"),  # 20%: holds, fails the verdict
        parse_condition("mismatch_rate > 25%"),  # does not hold
        parse_condition("shadow_p99 > 2x primary_p99"),  # 30ms > 20ms: holds
        parse_condition("shadow_p99 > 4x primary_p99"),  # 30ms > 40ms: no
    ]
    verdict = evaluate([g, group(sampled=5)], conditions)
    assert [f.holds for f in verdict.findings[:4]] == [True, False, True, False]
    assert verdict.findings[0].text() == "mismatch_rate > 10%: 20.00% > 10.00%"
    assert verdict.findings[2].text() == "shadow_p99 > 2x primary_p99: 30.0ms > 20.0ms"
    # The second group compared nothing and timed nothing: unknown, not failed.
    assert [f.holds for f in verdict.findings[4:]] == [False] * 4
    assert verdict.findings[4].text() == "mismatch_rate > 10%: unknown (no data)"
    assert len(verdict.failed) == 2


def test_min_samples_sets_a_group_aside() -> None:
    verdict = evaluate([group(sampled=3), group(sampled=300)], [], min_samples=100)
    assert verdict.too_few == [("default/app[0]", "outbound|80||shadow.local", 3)]


def test_junit_has_a_case_per_rule_and_mirror_and_a_failure_per_condition_held() -> None:
    bad = group(sampled=10, compared=10, mismatched=5)
    good = GroupStats("default/other[0]", "outbound|80||other.local", sampled=10, compared=10)
    conditions = [parse_condition("mismatch_rate > 1%"), parse_condition("shadow_p99 > 1s")]
    root = ET.fromstring(junit_xml(evaluate([bad, good], conditions)))
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    cases = {c.get("classname"): c for c in root.iter("testcase")}
    (failure,) = cases["default/app[0]"].findall("failure")
    assert failure.get("message") == "mismatch_rate > 1%: 50.00% > 1.00%"
    assert cases["default/other[0]"].findall("failure") == []
    assert "shadow_p99 > 1s: unknown (no data)" in (
        cases["default/other[0]"].findtext("system-out") or ""
    )


def test_junit_is_xml_whatever_the_names_hold_and_verdict_lines_are_escaped() -> None:
    evil = GroupStats("default/app[0:a\x1b\x00\ufffe]", "out\x01|80||x", sampled=1, compared=1)
    evil.mismatched = 1
    verdict = evaluate([evil], [parse_condition("mismatch_rate > 1%")])
    root = ET.fromstring(junit_xml(verdict))
    (case,) = root.iter("testcase")
    assert case.get("classname") == "default/app[0:a\\x1b\\x00\\ufffe]"
    assert case.get("name") == "out\\x01|80||x"
    ((state, line),) = verdict_lines(verdict)
    assert state == "FAIL" and line.startswith("default/app[0:a\\x1b\\x00\\ufffe] -> out\\x01")
