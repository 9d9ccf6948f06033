"""compare.py: status, headers with ignores, structural JSON diffs with ignorable pointers, text."""

from __future__ import annotations

import json

import pytest

from meshmirror.outcomes.compare import CompareSettings, Side, compare_responses, parse_pointer

H = [("Content-Type", "application/json")]


def side(
    body: object = None,
    status: int = 200,
    headers: list[tuple[str, str]] | None = None,
    raw: bytes | None = None,
    truncated: bool = False,
) -> Side:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    return Side(status, headers if headers is not None else H, data, truncated)


DEFAULT = CompareSettings.build()


@pytest.mark.parametrize(
    ("a", "b", "settings", "fields"),
    [
        pytest.param(side({"a": 1}), side({"a": 1}), DEFAULT, (), id="identical"),
        pytest.param(
            side(raw=b'{"a":1,"b":2}'),
            side(raw=b'{ "b": 2, "a": 1 }'),
            DEFAULT,
            (),
            id="json-key-order-and-spacing",
        ),
        pytest.param(side({"a": 1}), side({"a": 1}, status=500), DEFAULT, ("status",), id="status"),
        pytest.param(side({"a": 1}), side({"a": 2}), DEFAULT, ("body:/a",), id="json-value"),
        pytest.param(side({"a": 1}), side({"a": True}), DEFAULT, ("body:/a",), id="1-is-not-true"),
        pytest.param(
            side({"a": {"b": [1, 2]}}),
            side({"a": {"b": [1, 3, 4]}}),
            DEFAULT,
            ("body:/a/b/1", "body:/a/b/2"),
            id="nested-array",
        ),
        pytest.param(
            side({"a": 1, "x": 1}),
            side({"a": 1, "y": 1}),
            DEFAULT,
            ("body:/x", "body:/y"),
            id="keys-one-side",
        ),
        pytest.param(
            side({"origin": "1.2.3.4", "a": 1}),
            side({"origin": "5.6.7.8", "a": 1}),
            CompareSettings.build(ignore_json=["/origin"]),
            (),
            id="ignored-pointer",
        ),
        pytest.param(
            side({"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]}),
            side({"items": [{"id": 9, "v": "a"}, {"id": 8, "v": "c"}]}),
            CompareSettings.build(ignore_json=["/items/*/id"]),
            ("body:/items/1/v",),
            id="wildcard-pointer",
        ),
        pytest.param(
            side({"a/b": 1}), side({"a/b": 2}), DEFAULT, ("body:/a~1b",), id="pointer-escaping"
        ),
        pytest.param(
            side({"a/b": 1, "c": 1}),
            side({"a/b": 2, "c": 1}),
            CompareSettings.build(ignore_json=["/a~1b"]),
            (),
            id="escaped-ignore",
        ),
    ],
)
def test_json_and_status(
    a: Side, b: Side, settings: CompareSettings, fields: tuple[str, ...]
) -> None:
    result = compare_responses(a, b, settings)
    assert result.fields == fields
    assert result.match is (not fields)
    assert result.differing == len(fields)


def test_default_header_ignores_and_extra_ones() -> None:
    a = side(
        {},
        headers=[
            ("Date", "Mon"),
            ("Server", "a"),
            ("X-Request-Id", "1"),
            ("X-Envoy-Upstream-Service-Time", "3"),
            ("Content-Length", "2"),
            ("X-Version", "1"),
            ("Content-Type", "application/json"),
        ],
    )
    b = side(
        {},
        headers=[
            ("date", "Tue"),
            ("server", "b"),
            ("x-request-id", "2"),
            ("x-envoy-upstream-service-time", "9"),
            ("X-Version", "2"),
            ("content-type", "application/json"),
            ("X-New", "s3cret"),
        ],
    )
    result = compare_responses(a, b, DEFAULT)
    assert result.fields == ("header:x-new", "header:x-version")
    assert result.examples == {
        "header:x-new": "only in shadow",
        "header:x-version": "value differs",
    }
    # Header values never appear: they may be secrets.
    assert "s3cret" not in json.dumps(result.summary())
    ignoring = CompareSettings.build(extra_headers=["X-Version", "x-n*"])
    assert compare_responses(a, b, ignoring).match


def test_text_body_diff_example() -> None:
    a = side(raw=b"line one\nversion: 1\nend\n", headers=[])
    b = side(raw=b"line one\nversion: 2\nend\n", headers=[])
    result = compare_responses(a, b, DEFAULT)
    assert result.fields == ("body",)
    assert result.examples["body"] == "-version: 1 | +version: 2"


def test_json_against_text_is_a_body_difference() -> None:
    result = compare_responses(side({"a": 1}), side(raw=b"<html>", headers=H), DEFAULT)
    assert result.fields == ("body",)
    assert result.examples["body"] == "JSON in primary only"


def test_size_cap_compares_by_hash() -> None:
    small = CompareSettings.build(max_body=10)
    same = compare_responses(side(raw=b"x" * 50), side(raw=b"x" * 50), small)
    assert same.match and "size and hash" in same.note
    diff = compare_responses(side(raw=b"x" * 50), side(raw=b"x" * 49 + b"y"), small)
    assert diff.fields == ("body",) and diff.examples["body"] == "same size, different bytes"


def test_truncated_shadow_body_compares_the_prefix_only() -> None:
    a = side(raw=b"abcdefgh")
    ok = compare_responses(a, side(raw=b"abcd", truncated=True), DEFAULT)
    assert ok.match and "prefix" in ok.note
    bad = compare_responses(a, side(raw=b"abXd", truncated=True), DEFAULT)
    assert bad.fields == ("body",)


def test_missing_body_is_noted_not_counted() -> None:
    result = compare_responses(side({"a": 1}), Side(200, H, None), DEFAULT)
    assert result.match and "unavailable" in result.note


def test_many_differences_are_capped_but_counted() -> None:
    a = side({f"k{i}": i for i in range(80)})
    b = side({f"k{i}": -i - 1 for i in range(80)})
    result = compare_responses(a, b, DEFAULT)
    assert len(result.fields) == 50 and result.differing == 50
    assert result.short().startswith("mismatch: body:/k0") and "more" in result.short()


@pytest.mark.parametrize(
    ("pointer", "tokens"),
    [("", ()), ("/a", ("a",)), ("/a~1b/~0c", ("a/b", "~c")), ("/items/*/id", ("items", "*", "id"))],
)
def test_parse_pointer(pointer: str, tokens: tuple[str, ...]) -> None:
    assert parse_pointer(pointer) == tokens


def test_bad_pointer_is_rejected() -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        CompareSettings.build(ignore_json=["origin"])
