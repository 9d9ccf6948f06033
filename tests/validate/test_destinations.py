"""destinations.py: Istio's rules for route destinations, mirrors and mirror percentages, with
every diagnostic checked whole: severity, path, message and the value it names (none when the
message states it already, as Istio's percentage messages do)."""

from __future__ import annotations

import math
import textwrap

import pytest

from meshmirror.config.loader import load_text
from meshmirror.diagnostics import format_path
from meshmirror.validate.destinations import subset_name_error
from meshmirror.validate.resources import validate_resources

NONE = object()  # the diagnostic names no value
Found = tuple[str, str, str, object]


def diagnostics(spec: str) -> list[Found]:
    """(severity, path, message, value) of each diagnostic of one VirtualService."""
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    text = (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: vs, namespace: default}}\nspec:\n  hosts: [app]\n{body}\n"
    )
    loaded = load_text(text, "t.yaml")
    assert not loaded.errors, [d.format() for d in loaded.errors]
    return [
        (d.severity.name, format_path(d.path), d.message, d.value if d.has_value else NONE)
        for d in validate_resources(loaded.resources)
        if d.severity.name == "ERROR"
    ]


ROUTE = "route: [{destination: {host: b}}]"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            f"http:\n- {ROUTE}\n  mirror: {{host: s}}\n  mirrorPercentage: {{value: .nan}}",
            [
                (
                    "ERROR",
                    "spec.http[0].mirrorPercentage.value",
                    "mirror_percentage must be a number (it has NaN)",
                    NONE,
                )
            ],
            id="nan-percentage",
        ),
        pytest.param(
            f"http:\n- {ROUTE}\n  mirrors:\n"
            "  - {destination: {host: s}, percentage: {value: .nan}}",
            [
                (
                    "ERROR",
                    "spec.http[0].mirrors[0].percentage.value",
                    "mirror percentage must be a number (it has NaN)",
                    NONE,
                )
            ],
            id="nan-mirrors-percentage",
        ),
        pytest.param(
            f"http:\n- {ROUTE}\n  mirror: {{host: s}}\n  mirrorPercentage: {{value: 100.5}}",
            [
                (
                    "ERROR",
                    "spec.http[0].mirrorPercentage.value",
                    "mirror_percentage must have a max value of 100 (it has 100.500000)",
                    NONE,
                )
            ],
            id="over-100",
        ),
        pytest.param(
            f"http:\n- {ROUTE}\n  mirrors:\n"
            "  - {destination: {host: s}, percentage: {value: -0.25}}",
            [
                (
                    "ERROR",
                    "spec.http[0].mirrors[0].percentage.value",
                    "mirror percentage must have a min value of 0 (it has -0.250000)",
                    NONE,
                )
            ],
            id="below-0",
        ),
        pytest.param(
            f"http:\n- {ROUTE}\n  mirrors:\n"
            "  - {destination: {host: s}, percentage: {value: 100}}\n"
            "  - {destination: {host: t}, percentage: {value: 0}}",
            [],
            id="bounds-included",
        ),
        pytest.param(
            "http:\n- route: [{destination: {host: '*'}}]\n  mirror: {host: '*'}",
            [
                ("ERROR", "spec.http[0].mirror.host", "invalid destination host *", "*"),
                (
                    "ERROR",
                    "spec.http[0].route[0].destination.host",
                    "invalid destination host *",
                    "*",
                ),
            ],
            id="star-host",
        ),
        pytest.param(
            "http:\n- route: [{destination: {host: 'a..b'}}]\n"
            "  mirror: {host: x_y, subset: Bad_Subset, port: {number: 70000}}",
            [
                (
                    "ERROR",
                    "spec.http[0].mirror.host",
                    'domain name "x_y" invalid (label "x_y" invalid)',
                    "x_y",
                ),
                (
                    "ERROR",
                    "spec.http[0].mirror.subset",
                    "subset name is invalid: Bad_Subset",
                    "Bad_Subset",
                ),
                (
                    "ERROR",
                    "spec.http[0].mirror.port.number",
                    "port number 70000 must be in the range 1..65535",
                    70000,
                ),
                (
                    "ERROR",
                    "spec.http[0].route[0].destination.host",
                    'domain name "a..b" invalid (label "" invalid)',
                    "a..b",
                ),
            ],
            id="bad-destination-parts",
        ),
        pytest.param(
            "http:\n- route: [{destination: {host: b, subset: v1, port: {number: 8080}}}]",
            [],
            id="good-destination-parts",
        ),
        pytest.param(
            "http:\n- route: [{destination: {host: b, port: {}}}]",
            [
                (
                    "ERROR",
                    "spec.http[0].route[0].destination.port.number",
                    "port number 0 must be in the range 1..65535",
                    0,
                )
            ],
            id="port-without-number",
        ),
        pytest.param(
            "http:\n- route: [{destination: {host: b}, weight: -1}, {destination: {host: c}, "
            "weight: 1}]",
            [
                ("ERROR", "spec.http[0].route[0].weight", "weight -1 < 0", -1),
                ("ERROR", "spec.http[0].route", "total destination weight = 0", NONE),
            ],
            id="negative-weight",
        ),
        pytest.param(
            "http:\n- route: [{destination: {host: b}, weight: 0}, {destination: {host: c}}]",
            [("ERROR", "spec.http[0].route", "total destination weight = 0", NONE)],
            id="all-weights-zero",
        ),
        pytest.param(
            "http:\n- route: [{destination: {host: b}, weight: 0}]", [], id="one-zero-weight"
        ),
        pytest.param(
            "http:\n- route: [{destination: {host: b}, weight: 0}, {destination: {host: c}, "
            "weight: 1}]",
            [],
            id="some-weight",
        ),
        pytest.param(
            "http:\n- route: [null, {weight: 5}]",
            [
                ("ERROR", "spec.http[0].route[0]", "weight may not be nil", NONE),
                ("ERROR", "spec.http[0].route[1]", "destination is required", NONE),
            ],
            id="nil-and-no-destination",
        ),
        pytest.param(
            "http:\n- route: [null, {destination: {host: '*'}, weight: -3}]",
            [
                ("ERROR", "spec.http[0].route[0]", "weight may not be nil", NONE),
                (
                    "ERROR",
                    "spec.http[0].route[1].destination.host",
                    "invalid destination host *",
                    "*",
                ),
                ("ERROR", "spec.http[0].route[1].weight", "weight -3 < 0", -3),
            ],
            id="checks-go-on-after-a-nil",
        ),
        pytest.param(
            "http:\n- route:\n"
            "  - {destination: {host: b}, headers: {request: {set: {':method': GET}}}}",
            [
                (
                    "ERROR",
                    "spec.http[0].route[0].headers.request.set[':method']",
                    'invalid header ":method": header cannot have ":" prefix',
                    ":method",
                )
            ],
            id="destination-header-operations",
        ),
        pytest.param(
            "tcp:\n- route: [{destination: {host: '*'}, weight: -2}, {destination: {host: b}}]",
            [
                (
                    "ERROR",
                    "spec.tcp[0].route[0].destination.host",
                    "invalid destination host *",
                    "*",
                ),
                ("ERROR", "spec.tcp[0].route[0].weight", "weight -2 < 0", -2),
            ],
            id="tcp-route-destinations",
        ),
        pytest.param(
            f"http:\n- {ROUTE}\n  mirrors:\n  - null\n  - {{percentage: {{value: 5}}}}\n"
            "  - {destination: {host: '*'}, percentage: {value: 101}}\n"
            "  - {destination: {host: s, subset: ok}}",
            [
                ("ERROR", "spec.http[0].mirrors[0]", "mirror cannot be null", NONE),
                ("ERROR", "spec.http[0].mirrors[1]", "destination is required for mirrors", NONE),
                (
                    "ERROR",
                    "spec.http[0].mirrors[2].destination.host",
                    "invalid destination host *",
                    "*",
                ),
                (
                    "ERROR",
                    "spec.http[0].mirrors[2].percentage.value",
                    "mirror percentage must have a max value of 100 (it has 101.000000)",
                    NONE,
                ),
            ],
            id="mirrors-entries",
        ),
    ],
)
def test_destination_and_mirror_rules(spec: str, expected: list[Found]) -> None:
    found = diagnostics(spec)
    # NaN is the one value not equal to itself: compare it by name.
    shown = [
        (*f[:3], "nan" if isinstance(f[3], float) and math.isnan(f[3]) else f[3]) for f in found
    ]
    assert sorted(shown, key=repr) == sorted(expected, key=repr)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        pytest.param("", "subset name cannot be empty", id="empty"),
        pytest.param("v1", None, id="label"),
        pytest.param("a_b", "subset name is invalid: a_b", id="underscore"),
        pytest.param("-a", "subset name is invalid: -a", id="leading-dash"),
        pytest.param("a.b", "subset name is invalid: a.b", id="dot"),
    ],
)
def test_subset_names(name: str, error: str | None) -> None:
    assert subset_name_error(name) == error
