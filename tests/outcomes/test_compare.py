"""outcomes/compare.py and the modules it assembles: status, headers with ignores, structural
JSON diffs with ignorable pointers, text; secrets never in a result, and the proxy's own changes
to the copy not counted as differences."""

from __future__ import annotations

import json
import struct

import pytest

from meshmirror.outcomes.budget import COMPARE_STEPS, Budget
from meshmirror.outcomes.compare import Comparison, compare_responses, not_compared
from meshmirror.outcomes.compare_inputs import CompareSettings, Side, parse_pointer, steps_for
from meshmirror.outcomes.diff_rules import secret_values

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


# --- secrets and the proxy's own changes ---------------------------------------------------------

AUTH = "Bearer SECRET-TOKEN-123"
COOKIE = "session=COOKIESECRET"
REQUEST = [("Authorization", AUTH), ("Cookie", COOKIE), ("Accept", "*/*")]
# As the addon builds them for mirror_redact_headers=Authorization, Cookie=mask.
REDACTING = CompareSettings.build(redact_headers=["Authorization", "cookie"])
SECRETS = secret_values(REQUEST, REDACTING)


def leaks(result: Comparison) -> list[str]:
    text = json.dumps(result.summary()) + result.short()
    return [s for s in ("SECRET-TOKEN", "COOKIESECRET") if s in text]


def echo(headers: dict[str, object]) -> Side:
    return side({"headers": headers, "url": "http://app/headers"})


PRIMARY_ECHO = {
    "Accept": "*/*",
    "Authorization": AUTH,
    "Cookie": COOKIE,
    "Host": "app:8000",
    "X-Forwarded-For": "10.0.0.1",
}
SHADOW_ECHO = {
    "Accept": "*/*",
    "Cookie": "[redacted]",
    "Host": "app-shadow:8000",
    "X-Forwarded-For": "10.0.0.1, 10.0.0.7",
    "X-Meshmirror-Shadow": "1",
}


def test_the_proxys_own_changes_to_the_copy_are_not_differences() -> None:
    result = compare_responses(echo(PRIMARY_ECHO), echo(SHADOW_ECHO), REDACTING, SECRETS)
    assert result.match, result.summary()


def test_without_the_redaction_settings_they_differ_but_show_no_secret() -> None:
    # Settings that do not know of the redaction (say, a copy made by another proxy): the
    # differences count, and the examples still carry no secret value.
    result = compare_responses(echo(PRIMARY_ECHO), echo(SHADOW_ECHO), DEFAULT)
    assert result.fields == ("body:/headers/Authorization", "body:/headers/Cookie")
    assert result.examples == {
        "body:/headers/Authorization": 'only in primary: "[redacted]"',
        "body:/headers/Cookie": '"[redacted]" != "[redacted]"',
    }
    assert not leaks(result)


@pytest.mark.parametrize(
    ("name", "primary", "shadow", "explained"),
    [
        # Host: the suffix before the port, case-insensitively; nothing else.
        pytest.param("Host", "app:8000", "app-shadow:8000", True, id="host-port"),
        pytest.param("host", "App", "app-SHADOW", True, id="host-case"),
        pytest.param("Host", "[::1]:80", "[::1]-shadow:80", True, id="host-ipv6"),
        pytest.param("Host", ["app"], ["app-shadow"], True, id="host-list"),
        pytest.param("Host", "app", "other-shadow", False, id="host-other"),
        pytest.param("Host", "app", "app", True, id="host-same"),
        pytest.param("Host", "app:8000", "app:8000-shadow", False, id="host-after-port"),
        pytest.param("Host", "app", None, False, id="host-missing"),
        # The marker and X-Request-Id: added on the copy, only ever on the shadow side.
        pytest.param("X-Meshmirror-Shadow", None, "1", True, id="marker-added"),
        pytest.param("X-Meshmirror-Shadow", "1", None, False, id="marker-primary-only"),
        pytest.param("x-request-id", None, "abc", True, id="request-id-added"),
        pytest.param("X-Request-Id", "abc", "abd", False, id="request-id-differs"),
        # X-Forwarded-For is per hop: any difference.
        pytest.param("X-Forwarded-For", "10.0.0.1", "10.9.9.9", True, id="xff-differs"),
        pytest.param("x-forwarded-for", None, ["1.2.3.4"], True, id="xff-added"),
        pytest.param("X-Forwarded-For", "10.0.0.1", None, True, id="xff-removed"),
        # A redacted header: stripped or masked on the copy, present on the primary.
        pytest.param("X-Api-Key", "k-123456", None, True, id="redact-stripped"),
        pytest.param("x-api-key", "k-123456", "[redacted]", True, id="redact-masked"),
        pytest.param("X-Api-Key", "k-123456", ["[redacted]"], True, id="redact-masked-list"),
        pytest.param("X-Api-Key", "k-123456", "k-654321", False, id="redact-other-value"),
        pytest.param("X-Api-Key", None, "[redacted]", False, id="redact-shadow-only"),
        pytest.param("X-Api-Key", {"k": 1}, "[redacted]", True, id="redact-any-shape"),
        # A sensitive header that is not redacted is passed on unchanged: a difference is real.
        pytest.param("Authorization", "Bearer a-1234", None, False, id="auth-not-redacted"),
        # Any other header: never explained.
        pytest.param("Accept", "*/*", None, False, id="other-header"),
    ],
)
def test_which_differences_the_proxy_explains(
    name: str, primary: object, shadow: object, explained: bool
) -> None:
    settings = CompareSettings.build(redact_headers=["X-API-Key"])
    a = {"h": {name: primary}} if primary is not None else {"h": {}}
    b = {"h": {name: shadow}} if shadow is not None else {"h": {}}
    result = compare_responses(side(a), side(b), settings)
    assert result.match is explained, result.summary()
    if not explained:
        assert result.fields == (f"body:/h/{name}",)


def test_host_suffix_setting() -> None:
    a, b = side({"Host": "app"}), side({"Host": "app-canary"})
    assert compare_responses(a, b, CompareSettings.build(host_suffix="-canary")).match
    assert not compare_responses(a, b, CompareSettings.build()).match
    # An empty suffix (Istio >= 1.28): the copy keeps the Host, so a changed one is real.
    same = CompareSettings.build(host_suffix="")
    assert compare_responses(side({"Host": "app"}), side({"Host": "app"}), same).match
    assert not compare_responses(side({"Host": "app"}), side({"Host": "app-shadow"}), same).match


def test_a_real_difference_under_a_proxy_changed_name_keeps_its_detail() -> None:
    result = compare_responses(side({"Host": {"a": 1}}), side({"Host": {"a": 2}}), DEFAULT)
    assert result.fields == ("body:/Host/a",) and result.examples == {"body:/Host/a": "1 != 2"}


def test_ignored_pointers_apply_below_header_names() -> None:
    a = side({"headers": {"Cookie": {"session": "abcdef", "lang": "en"}}})
    b = side({"headers": {"Cookie": {"session": "zyxwvu", "lang": "en"}}})
    assert not compare_responses(a, b, DEFAULT).match
    ignoring = CompareSettings.build(ignore_json=["/headers/Cookie/session"])
    assert compare_responses(a, b, ignoring).match


@pytest.mark.parametrize(
    "key", ["Authorization", "AUTHORIZATION", "proxy-authorization", "Set-Cookie", "cookie"]
)
def test_sensitive_keys_are_redacted_at_any_depth_and_case(key: str) -> None:
    a = side({"a": [{"b": {key: "hunter2-abc"}}]})
    b = side({"a": [{"b": {key: "hunter3-xyz"}}]})
    result = compare_responses(a, b, DEFAULT)
    assert result.fields == (f"body:/a/0/b/{key}",)
    assert result.examples == {f"body:/a/0/b/{key}": '"[redacted]" != "[redacted]"'}
    assert "hunter" not in json.dumps(result.summary())


def test_a_sensitive_value_of_any_shape_is_one_redacted_field() -> None:
    a = side({"Cookie": {"session": "one-1111", "theme": "dark"}})
    b = side({"Cookie": {"session": "two-2222"}})
    result = compare_responses(a, b, DEFAULT)
    assert result.fields == ("body:/Cookie",)
    assert result.examples == {"body:/Cookie": '"[redacted]" != "[redacted]"'}


def test_an_object_shown_whole_has_its_sensitive_values_redacted() -> None:
    a = side({"headers": {"Authorization": AUTH, "X-Api-Key": "key-987654", "Accept": "*/*"}})
    b = side({"request_headers": {}})
    settings = CompareSettings.build(redact_headers=["x-api-key"])
    result = compare_responses(a, b, settings)
    assert result.fields == ("body:/headers", "body:/request_headers")
    assert result.examples["body:/headers"] == (
        'only in primary: {"Accept": "*/*", "Authorization": "[redacted]", '
        '"X-Api-Key": "[redacted]"}'
    )
    text = json.dumps(result.summary())
    assert "SECRET" not in text and "key-987654" not in text


def test_secret_values_are_scrubbed_wherever_they_are() -> None:
    # Not under a header-named key: found by value. Also in a field name (a key).
    a = side({"token": "SECRET-TOKEN-123", "raw": f"GET / HTTP/1.1\r\nCookie: {COOKIE}"})
    b = side({"token": None, "raw": "GET / HTTP/1.1", "COOKIESECRET": 1})
    result = compare_responses(a, b, REDACTING, SECRETS)
    assert result.fields == ("body:/[redacted]", "body:/raw", "body:/token")
    assert result.examples["body:/token"] == '"[redacted]" != null'
    assert not leaks(result)


def test_no_prefix_of_a_secret_survives_the_cut_to_length() -> None:
    # The secret straddles the 160th character: scrubbed before the example is cut.
    a = side({"v": "x" * 140 + "SECRET-TOKEN-123" + "y" * 40})
    result = compare_responses(a, side({"v": "z"}), REDACTING, SECRETS)
    example = result.examples["body:/v"]
    assert "SECRET" not in example and "[redacted]" in example
    assert len(example) == 160 and example.endswith("...")
    unscrubbed = compare_responses(a, side({"v": "z"}), REDACTING)
    assert "SECRET-T" in unscrubbed.examples["body:/v"]  # what the scrub protects from


def test_secret_values_of_a_request() -> None:
    headers = [
        ("Authorization", "Bearer tok-12345"),
        ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
        ("Cookie", 'a=1; session="sess-9876"; theme=dark'),
        ("X-Api-Key", "key-55555"),
        ("Accept", "text/html-not-secret"),
    ]
    got = set(secret_values(headers, CompareSettings.build(redact_headers=["X-API-KEY"])))
    assert got == {
        "Bearer tok-12345",
        "tok-12345",
        "Basic dXNlcjpwYXNz",
        "dXNlcjpwYXNz",
        'a=1; session="sess-9876"; theme=dark',
        'session="sess-9876"',
        "sess-9876",
        "theme=dark",
        "dark",
        "key-55555",
    }  # `a=1` and `1`: shorter than 4 characters, not searched for
    assert "key-55555" not in secret_values(headers, DEFAULT)


def text_echo(headers: dict[str, str], extra: str = "") -> Side:
    lines = [f"{k}: {v}" for k, v in sorted(headers.items())]
    return side(raw=("\n".join(lines) + "\n" + extra).encode(), headers=[])


def test_text_echo_with_only_the_proxys_changes_matches() -> None:
    a, b = text_echo(PRIMARY_ECHO), text_echo(SHADOW_ECHO)
    assert compare_responses(a, b, REDACTING, SECRETS).match
    # `Name=value` lines (a CGI-style echo) too.
    eq = side(raw=b"HOST=app\nCOOKIE=session=x-1\n", headers=[])
    copy = side(raw=b"HOST=app-shadow\nCOOKIE=[redacted]\n", headers=[])
    assert compare_responses(eq, copy, REDACTING).match


def test_text_lines_with_secrets_or_sensitive_headers_are_redacted() -> None:
    a = text_echo(PRIMARY_ECHO, "token SECRET-TOKEN-123 accepted\n")
    b = text_echo(SHADOW_ECHO)
    result = compare_responses(a, b, REDACTING, SECRETS)
    assert result.fields == ("body",) and result.examples == {"body": "-[redacted]"}
    # Not redacted on the copy, so the differing Authorization line is a real difference:
    # shown as [redacted] by its name, whatever the value (the secrets are not even known here).
    c = text_echo({"Authorization": "Bearer old-1", "Accept": "a"})
    d = text_echo({"Authorization": "Bearer new-2", "Accept": "b"})
    result = compare_responses(c, d, DEFAULT)
    assert result.examples == {"body": "-Accept: a | -[redacted]"}
    assert "old-1" not in json.dumps(result.summary())
    e = side(raw=b'{"Cookie": "x-1"\n', headers=[])  # not JSON: a text line, quoted name
    f = side(raw=b'{"Cookie": "x-2"\n', headers=[])
    assert compare_responses(e, f, DEFAULT).examples == {"body": "-[redacted] | +[redacted]"}


def test_text_differences_beside_explained_ones_still_count() -> None:
    a = text_echo({**PRIMARY_ECHO, "X-Version": "1"})
    b = text_echo({**SHADOW_ECHO, "X-Version": "2"})
    result = compare_responses(a, b, REDACTING, SECRETS)
    assert result.examples == {"body": "-X-Version: 1 | +X-Version: 2"}


def test_values_under_sensitive_keys_are_secrets_everywhere_in_the_result() -> None:
    # No request secrets given: the body's own sensitive values (and the token inside) are
    # scrubbed wherever else they show, e.g. a field that repeats them.
    a = side({"headers": {"Authorization": "Bearer body-token-77"}, "echo": "body-token-77 ok"})
    b = side({"headers": {"Authorization": "Bearer body-token-77"}, "echo": "no"})
    result = compare_responses(a, b, DEFAULT)
    assert result.examples == {"body:/echo": '"[redacted] ok" != "no"'}
    c = side(raw=b"Set-Cookie: sid=cookie-4242\nsaw cookie-4242\n", headers=[])
    d = side(raw=b"Set-Cookie: sid=cookie-4242\nsaw nothing\n", headers=[])
    assert compare_responses(c, d, DEFAULT).examples == {"body": "-[redacted] | +saw nothing"}


@pytest.mark.parametrize("depth", [900, 5000])
def test_deeply_nested_json_is_a_difference_not_an_exception(depth: int) -> None:
    deep_a = b"[" * depth + b"1" + b"]" * depth
    deep_b = b"[" * depth + b"2" + b"]" * depth
    result = compare_responses(
        Side(200, [], deep_a), Side(200, [], deep_b), CompareSettings.build()
    )
    assert not result.match
    assert len(result.fields) == 1 and result.fields[0].startswith("body"), result.fields[0][:40]


# --- the result's shape --------------------------------------------------------------------------


def test_summary_and_short_form() -> None:
    same = compare_responses(side({"a": 1}), side({"a": 1}), DEFAULT)
    assert same.summary() == {"match": True} and same.short() == "match"
    differ = compare_responses(side({"a": 1}, status=200), side({"a": 2}, status=503), DEFAULT)
    assert differ.summary() == {
        "match": False,
        "fields": ["status", "body:/a"],
        "differing": 2,
        "examples": {"status": "200 != 503", "body:/a": "1 != 2"},
    }
    noted = compare_responses(side({"a": 1}), Side(200, H, None), DEFAULT)
    assert noted.summary() == {"match": True, "note": "body not compared: shadow body unavailable"}


@pytest.mark.parametrize(
    ("count", "short"),
    [
        pytest.param(1, "mismatch: body:/k0", id="one"),
        pytest.param(5, "mismatch: body:/k0, body:/k1, body:/k2, body:/k3, body:/k4", id="five"),
        pytest.param(
            6,
            "mismatch: body:/k0, body:/k1, body:/k2, body:/k3, body:/k4 (+1 more)",
            id="six",
        ),
        pytest.param(
            9,
            "mismatch: body:/k0, body:/k1, body:/k2, body:/k3, body:/k4 (+4 more)",
            id="nine",
        ),
    ],
)
def test_the_short_form_names_five_fields(count: int, short: str) -> None:
    a = side({f"k{i}": i for i in range(count)})
    b = side({f"k{i}": -1 for i in range(count)})
    assert compare_responses(a, b, DEFAULT).short() == short


@pytest.mark.parametrize(
    ("a", "b", "fields", "examples", "note"),
    [
        pytest.param(
            side({"a": 1}, headers=[*H, ("X-Old", "1")]),
            side({"a": 1}),
            ("header:x-old",),
            {"header:x-old": "only in primary"},
            "",
            id="header-only-in-primary",
        ),
        pytest.param(
            Side(200, H, None),
            side({"a": 1}),
            (),
            {},
            "body not compared: primary body unavailable",
            id="primary-body-unavailable",
        ),
        pytest.param(
            side(raw=b"abcdefgh"),
            side(raw=b"abXd", truncated=True),
            ("body",),
            {"body": "bodies differ within the captured prefix"},
            "body not compared: only a prefix was captured",
            id="prefix-differs",
        ),
        pytest.param(
            side(raw=b"abcd", truncated=True),
            side(raw=b"abcdefgh"),
            (),
            {},
            "body not compared: only a prefix was captured",
            id="primary-prefix-agrees",
        ),
        pytest.param(
            side(raw=b"<html>"),
            side({"a": 1}),
            ("body",),
            {"body": "JSON in shadow only"},
            "",
            id="json-in-shadow-only",
        ),
        pytest.param(
            side(raw=b"1"), side(raw=b"2"), ("body:/",), {"body:/": "1 != 2"}, "", id="json-root"
        ),
        pytest.param(
            side(raw=b" true "),
            side(raw=b"null"),
            ("body:/",),
            {"body:/": "true != null"},
            "",
            id="json-literals",
        ),
        pytest.param(
            side(raw=b"-1"), side(raw=b"-2"), ("body:/",), {"body:/": "-1 != -2"}, "", id="neg"
        ),
        pytest.param(
            side({"a": "é"}),
            side({"a": "e"}),
            ("body:/a",),
            {"body:/a": '"é" != "e"'},
            "",
            id="examples-keep-non-ascii",
        ),
        pytest.param(
            side({"a~b": 1}),
            side({"a~b": 2}),
            ("body:/a~0b",),
            {"body:/a~0b": "1 != 2"},
            "",
            id="tilde-escaped-in-the-pointer",
        ),
        pytest.param(
            side({"a": 1}),
            side({"a": 1, "n": {"x": [2]}}),
            ("body:/n",),
            {"body:/n": 'only in shadow: {"x": [2]}'},
            "",
            id="key-only-in-shadow",
        ),
        pytest.param(
            side({"l": [1, 2, {"k": 3}]}),
            side({"l": [1, 2]}),
            ("body:/l/2",),
            {"body:/l/2": 'only in primary: {"k": 3}'},
            "",
            id="shorter-shadow-list",
        ),
        pytest.param(
            side({"l": [1]}),
            side({"l": [1, "two"]}),
            ("body:/l/1",),
            {"body:/l/1": 'only in shadow: "two"'},
            "",
            id="longer-shadow-list",
        ),
        pytest.param(
            side({"l": [1]}),
            side({"l": {"0": 1}}),
            ("body:/l",),
            {"body:/l": '[1] != {"0": 1}'},
            "",
            id="list-against-object",
        ),
        pytest.param(
            side({"l": "ab"}),
            side({"l": ["a", "b"]}),
            ("body:/l",),
            {"body:/l": '"ab" != ["a", "b"]'},
            "",
            id="string-against-list",
        ),
    ],
)
def test_fields_examples_and_notes(
    a: Side, b: Side, fields: tuple[str, ...], examples: dict[str, str], note: str
) -> None:
    result = compare_responses(a, b, DEFAULT)
    assert (result.fields, dict(result.examples), result.note) == (fields, examples, note)


@pytest.mark.parametrize(
    ("a", "b", "fields", "examples", "note"),
    [
        pytest.param(
            side(raw=b"x" * 11),
            side(raw=b"x" * 5),
            ("body",),
            {"body": "11 bytes != 5 bytes"},
            "body over 10 bytes: compared by size and hash",
            id="one-side-over-the-cap",
        ),
        pytest.param(
            side(raw=b"x" * 5),
            side(raw=b"x" * 12),
            ("body",),
            {"body": "5 bytes != 12 bytes"},
            "body over 10 bytes: compared by size and hash",
            id="shadow-over-the-cap",
        ),
        pytest.param(
            side(raw=b"aaaa\nbbbbb"),
            side(raw=b"aaaa\nccccc"),
            ("body",),
            {"body": "-bbbbb | +ccccc"},
            "",
            id="exactly-the-cap-is-compared-in-full",
        ),
    ],
)
def test_bodies_over_the_cap_are_compared_by_size_and_hash(
    a: Side, b: Side, fields: tuple[str, ...], examples: dict[str, str], note: str
) -> None:
    result = compare_responses(a, b, CompareSettings.build(max_body=10))
    assert (result.fields, dict(result.examples), result.note) == (fields, examples, note)


def test_an_example_of_exactly_the_bound_is_kept_whole() -> None:
    a = side({"a": "x" * 76})
    b = side({"a": "y" * 76})
    example = compare_responses(a, b, DEFAULT).examples["body:/a"]
    assert example == f'"{"x" * 76}" != "{"y" * 76}"' and len(example) == 160
    longer = compare_responses(side({"a": "x" * 77}), side({"a": "y" * 77}), DEFAULT)
    assert len(longer.examples["body:/a"]) == 160 and longer.examples["body:/a"].endswith("...")


def test_ignored_pointers_skip_list_items_and_leave_other_paths() -> None:
    settings = CompareSettings.build(ignore_json=["/l/0", "/x"])
    a = side({"l": [1, 2], "m": {"n": 1}})
    b = side({"l": [9, 3], "m": {"n": 2}})
    assert compare_responses(a, b, settings).fields == ("body:/l/1", "body:/m/n")


@pytest.mark.parametrize(
    ("primary", "shadow", "explained"),
    [
        pytest.param("[::1]:8080", "[::1]-shadow:8080", True, id="ipv6-with-port"),
        pytest.param("[::1]x]", "[::1]-shadowx]", True, id="suffix-after-the-first-bracket"),
        pytest.param("[::1]x]", "[::1]x]-shadow", False, id="not-after-the-last-bracket"),
        pytest.param("[::1", "[::1-shadow", True, id="unclosed-bracket"),
        pytest.param("app:x", "app:x-shadow", True, id="non-numeric-port-is-name"),
        pytest.param("app:x", "app-shadow:x", False, id="no-port-to-keep"),
        pytest.param("a:b:80", "a:b:80-shadow", True, id="two-colons-no-port"),
        pytest.param("a:b:80", "a:b-shadow:80", False, id="two-colons-not-split"),
        pytest.param(":80", ":80-shadow", True, id="no-name-before-port"),
    ],
)
def test_the_shadow_host_is_recognised_as_the_proxy_builds_it(
    primary: str, shadow: str, explained: bool
) -> None:
    result = compare_responses(side({"Host": primary}), side({"Host": shadow}), DEFAULT)
    assert result.match is explained


def test_a_proxy_changed_header_on_one_side_only_is_shown() -> None:
    result = compare_responses(
        side({"h": {"X-Request-Id": "abc"}}), side({"h": {"Host": "app-shadow"}}), DEFAULT
    )
    assert dict(result.examples) == {
        "body:/h/Host": 'only in shadow: "app-shadow"',
        "body:/h/X-Request-Id": 'only in primary: "abc"',
    }


def test_sensitive_values_too_short_to_be_secrets_are_still_redacted_by_key() -> None:
    a = side({"extra": {"Cookie": "a=1", "n": 1}, "list": [{"COOKIE": "b"}]})
    b = side({})
    assert dict(compare_responses(a, b, DEFAULT).examples) == {
        "body:/extra": 'only in primary: {"Cookie": "[redacted]", "n": 1}',
        "body:/list": 'only in primary: [{"COOKIE": "[redacted]"}]',
    }


@pytest.mark.parametrize("where", ["primary", "shadow"])
def test_secrets_under_sensitive_keys_of_either_side_are_scrubbed(where: str) -> None:
    with_secret = {"h": {"Cookie": ["sid=list-secret-1"]}, "echo": "saw list-secret-1"}
    without = {"h": {}, "echo": "saw nothing"}
    a, b = (with_secret, without) if where == "primary" else (without, with_secret)
    text = json.dumps(compare_responses(side(a), side(b), DEFAULT).summary())
    assert "list-secret-1" not in text and "[redacted]" in text


@pytest.mark.parametrize(
    ("secrets", "echo", "example"),
    [
        pytest.param(["abcd"], "x abcd", '"x [redacted]" != "y"', id="four-characters"),
        pytest.param(["abc"], "x abc", '"x abc" != "y"', id="three-are-not-searched"),
        pytest.param(
            ["tok-9", "bearer-tok-9"],
            "bearer-tok-9!",
            '"[redacted]!" != "y"',
            id="longest-first",
        ),
        pytest.param(['pä"ss1'], 'pä"ss1', '"[redacted]" != "y"', id="as-json-shows-it"),
    ],
)
def test_secrets_are_replaced_whole(secrets: list[str], echo: str, example: str) -> None:
    result = compare_responses(side({"e": echo}), side({"e": "y"}), DEFAULT, secrets)
    assert result.examples == {"body:/e": example}


def test_secret_fragments_of_authorization_and_cookies() -> None:
    headers = [
        ("Authorization", 'Digest username="u", realm="r1"'),
        ("Cookie", 'tok=abc=def; s="Xval1234X"'),
    ]
    assert set(secret_values(headers, DEFAULT)) == {
        'Digest username="u", realm="r1"',
        'username="u", realm="r1"',
        'tok=abc=def; s="Xval1234X"',
        "tok=abc=def",
        "abc=def",
        's="Xval1234X"',
        "Xval1234X",
    }


def test_text_that_is_not_utf8_is_compared_as_replaced_text() -> None:
    result = compare_responses(side(raw=b"a\xff\nb"), side(raw=b"a\xff\nc"), DEFAULT)
    assert result.examples == {"body": "-b | +c"}
    result = compare_responses(side(raw=b"v\xfe1"), side(raw=b"v2"), DEFAULT)
    assert result.examples == {"body": "-v\ufffd1 | +v2"}


def test_json_too_deep_to_walk_is_one_difference_with_a_reason() -> None:
    # Keys that name a header the proxy changes cost two frames per level to walk, so the walk
    # runs out of stack long before the parser does.
    depth = 600
    a = b'{"host": ' * depth + b"1" + b"}" * depth
    b = b'{"host": ' * depth + b"2" + b"}" * depth
    result = compare_responses(Side(200, [], a), Side(200, [], b), DEFAULT)
    assert (result.fields, dict(result.examples)) == (
        ("body",),
        {"body": "JSON nested too deep to compare"},
    )


@pytest.mark.parametrize(
    ("comparison", "expected"),
    [
        (
            Comparison(True, ()),
            {"match": True},
        ),
        (
            Comparison(False, ("body:/price",), {"body:/price": "1 != 2"}, differing=1),
            {
                "match": False,
                "fields": ["body:/price"],
                "differing": 1,
                "examples": {"body:/price": "1 != 2"},
            },
        ),
        (
            # Noise removed, a real change left: both lists are kept.
            Comparison(
                False,
                ("body:/price",),
                {"body:/price": "1 != 2"},
                differing=1,
                raw_fields=("body:/ts", "body:/price"),
                noise=("body:/ts",),
            ),
            {
                "match": False,
                "fields": ["body:/price"],
                "differing": 1,
                "examples": {"body:/price": "1 != 2"},
                "raw_fields": ["body:/ts", "body:/price"],
                "noise": ["body:/ts"],
            },
        ),
        (
            # Only noise differed: a match, with what was removed beside it.
            Comparison(True, (), raw_fields=("body:/ts",), noise=("body:/ts",), note="n"),
            {"match": True, "raw_fields": ["body:/ts"], "noise": ["body:/ts"], "note": "n"},
        ),
    ],
    ids=["match", "mismatch", "noise-and-change", "only-noise"],
)
def test_the_summary_records_fields_and_the_noise_removed(
    comparison: Comparison, expected: dict[str, object]
) -> None:
    assert comparison.summary() == expected


# --- bounds --------------------------------------------------------------------------------------


def test_a_comparison_over_its_budget_is_not_compared() -> None:
    a = side(raw="\n".join(f"line {i}" for i in range(400)).encode())
    b = side(raw="\n".join(f"line {i}" for i in reversed(range(400))).encode())
    costly = compare_responses(a, b, DEFAULT, budget=Budget(1_000))
    assert costly == not_compared("too_costly")
    assert costly.summary() == {"not_compared": "too_costly", "note": "too costly"}
    assert costly.short() == "not compared: too costly" and not costly.match
    done = compare_responses(a, b, DEFAULT, budget=Budget(1_000_000))
    assert done.fields == ("body",)


def test_a_body_over_the_limit_after_decoding_is_not_compared() -> None:
    over = Side(200, H, b"\0" * 10, over_limit=True)
    result = compare_responses(side({"a": 1}), over, CompareSettings.build(max_body=10))
    assert result.summary() == {
        "not_compared": "body_over_limit",
        "note": "body over 10 bytes after decoding",
    }


def test_a_prefix_with_a_known_size_differs_by_size() -> None:
    whole = side(raw=b"abcd")
    prefix = Side(200, H, b"abcd", True, size=9)
    assert compare_responses(whole, prefix, DEFAULT).examples == {"body": "4 bytes != 9 bytes"}


def test_an_undecodable_body_says_why_it_was_not_compared() -> None:
    broken = Side(200, H, None, unavailable="cannot decode gzip: bad header")
    result = compare_responses(side({"a": 1}), broken, DEFAULT)
    assert (
        result.note == "body not compared: shadow body unavailable (cannot decode gzip: bad header)"
    )


def test_steps_grow_with_the_largest_body_compared() -> None:
    assert steps_for(100_000) == COMPARE_STEPS and steps_for(1 << 20) == 4 << 20


def test_not_compared_results_and_their_short_form() -> None:
    assert not_compared("too_costly") == Comparison(
        False, (), not_compared="too_costly", note="too costly"
    )
    assert not_compared("body_over_limit").note == "body over 0 bytes after decoding"
    assert not_compared("error", detail="KeyError: x").note == "comparison failed (KeyError: x)"
    # Field names are shown escaped in the short form, spaces kept.
    spaced = Comparison(False, ("body:/first name", "body:/a\x1bb"), differing=2)
    assert spaced.short() == "mismatch: body:/first name, body:/a\\x1bb"


def test_a_field_name_is_cut_to_512_characters() -> None:
    a, b = side({"k" * 600: 1}), side({"k" * 600: 2})
    (name,) = compare_responses(a, b, DEFAULT).fields
    assert len(name) == 512 and name == "body:/" + "k" * (512 - 6 - 3) + "..."
    exact = "k" * (512 - 6)
    (kept,) = compare_responses(side({exact: 1}), side({exact: 2}), DEFAULT).fields
    assert kept == "body:/" + exact


def test_an_unavailable_primary_body_says_why() -> None:
    broken = Side(200, H, None, unavailable="cannot decode br: bad")
    result = compare_responses(broken, side({"a": 1}), DEFAULT)
    assert result.note == "body not compared: primary body unavailable (cannot decode br: bad)"


def test_long_secrets_are_redacted_up_to_the_cut_however_much_shorter_they_get() -> None:
    secret = "S" * 100  # 100 characters each shown as the 10 of [redacted]
    a = side({"v": secret * 20})
    result = compare_responses(a, side({"v": 1}), DEFAULT, secrets=[secret])
    example = result.examples["body:/v"]
    assert "S" not in example and example.endswith("...") and len(example) == 160


def test_deep_paths_and_long_texts_cost_more_steps() -> None:
    def spent(a: bytes, b: bytes, secrets: tuple[str, ...] = ()) -> int:
        budget = Budget(10_000_000)
        compare_responses(side(raw=a), side(raw=b), DEFAULT, secrets, budget=budget)
        return 10_000_000 - budget.left

    leaves = 200
    shallow = spent(json.dumps([0] * leaves).encode(), json.dumps([1] * leaves).encode())
    nest = 200
    deep_a = "[" * nest + json.dumps([0] * leaves) + "]" * nest
    deep_b = "[" * nest + json.dumps([1] * leaves) + "]" * nest
    deep = spent(deep_a.encode(), deep_b.encode())
    assert deep - shallow >= leaves * (nest // 32)  # each leaf pays for its path
    few = tuple(f"secret-{i}" for i in range(20))
    short_text = spent(b"a\nb", b"a\nc", few)
    long_text = spent(b"a\n" + b"x" * 8192, b"a\n" + b"y" * 8192, few)
    assert long_text - short_text >= len(few) * 2 * 8  # the examples are scrubbed per KiB


def test_every_line_and_header_is_paid_for() -> None:
    def spent(a: Side, b: Side) -> int:
        budget = Budget(10_000_000)
        compare_responses(a, b, DEFAULT, budget=budget)
        return 10_000_000 - budget.left

    lines = b"\n".join(b"l%d" % i for i in range(5000))
    assert spent(side(raw=b"x"), side(raw=lines)) >= 3 * 5000  # read, aligned, listed
    many = [(f"x-h{i}", "v") for i in range(1000)]
    per_header = 1 + len(DEFAULT.ignore_headers) // 8
    assert spent(side(raw=b"x", headers=many), side(raw=b"x", headers=many)) >= (
        2 * 1000 * per_header
    )


# --- gRPC: status, message and protobuf messages without a schema ------------------------------

GRPC_H = [("content-type", "application/grpc")]


def pb_string(number: int, text: str) -> bytes:
    data = text.encode()
    return bytes([number << 3 | 2, len(data)]) + data


def pb_varint(number: int, value: int) -> bytes:
    return bytes([number << 3, value])


def grpc_side(*messages: bytes, status: str = "0", message: str = "") -> Side:
    body = b"".join(struct.pack(">BI", 0, len(m)) + m for m in messages)
    trailers = [("grpc-status", status)] + ([("grpc-message", message)] if message else [])
    return Side(200, GRPC_H, body, trailers=trailers)


def test_grpc_answers_are_compared_by_status_message_and_decoded_fields() -> None:
    reply = pb_string(1, "Hello world") + pb_varint(2, 7) + pb_string(3, "x") + pb_string(3, "y")
    nested = pb_string(2, "inner")
    same = compare_responses(grpc_side(reply), grpc_side(reply), DEFAULT)
    assert same.match
    changed = pb_string(1, "Hi world") + pb_varint(2, 7) + pb_string(3, "x") + pb_string(3, "z")
    result = compare_responses(
        grpc_side(reply, bytes([4 << 3 | 2, len(nested)]) + nested),
        grpc_side(changed, bytes([4 << 3 | 2, len(nested) + 2]) + nested + pb_varint(1, 5)),
        DEFAULT,
    )
    assert result.fields == ("body:/message/0/1", "body:/message/0/3/1", "body:/message/1/4/1")
    assert result.examples["body:/message/0/1"] == '"Hello world" != "Hi world"'
    assert result.examples["body:/message/1/4/1"] == "only in shadow: 5"


def test_grpc_status_and_message_differences_name_them() -> None:
    result = compare_responses(
        grpc_side(status="0"),
        grpc_side(status="3", message="bad%20price"),
        DEFAULT,
    )
    assert result.fields == ("grpc-status", "grpc-message")
    assert result.examples["grpc-status"] == "0 (OK) != 3 (INVALID_ARGUMENT)"
    assert result.examples["grpc-message"] == '"" != "bad price"'


def test_a_trailers_only_answer_is_read_from_its_headers_and_ignores_apply() -> None:
    only = Side(200, [*GRPC_H, ("grpc-status", "14")], b"")
    full = grpc_side(pb_varint(1, 1), status="14")
    assert compare_responses(only, only, DEFAULT).match
    result = compare_responses(only, full, DEFAULT)
    assert result.fields == ("body:/message/0",)  # a message only the shadow sent
    ignoring = CompareSettings.build(ignore_json=("/message/*/1",))
    a, b = grpc_side(pb_varint(1, 1), pb_varint(2, 1)), grpc_side(pb_varint(1, 2), pb_varint(2, 1))
    assert compare_responses(a, b, ignoring).match


def test_grpc_bodies_that_are_not_messages_or_too_costly() -> None:
    bad = Side(200, GRPC_H, b"\x00\x00\x00\x00\x09short", trailers=[("grpc-status", "0")])
    result = compare_responses(grpc_side(pb_varint(1, 1)), bad, DEFAULT)
    assert result.fields == ("body",)
    assert result.examples["body"] == "not gRPC messages: truncated message"
    many = pb_varint(1, 1) * 200
    costly = compare_responses(
        grpc_side(many), grpc_side(many + b"\x08\x02"), DEFAULT, budget=Budget(50)
    )
    assert costly.not_compared == "too_costly"


def grpc_body(*messages: tuple[int, bytes]) -> bytes:
    """A gRPC body of (flag, payload) messages: flag 1 is a compressed one."""
    return b"".join(struct.pack(">BI", flag, len(m)) + m for flag, m in messages)


def test_grpc_header_differences_are_named_like_other_headers() -> None:
    a = Side(
        200, [*GRPC_H, ("x-version", "1"), ("x-old", "1")], b"", trailers=[("grpc-status", "0")]
    )
    b = Side(
        200, [*GRPC_H, ("X-Version", "2"), ("x-new", "1")], b"", trailers=[("grpc-status", "0")]
    )
    result = compare_responses(a, b, DEFAULT)
    assert result.fields == ("header:x-new", "header:x-old", "header:x-version")
    assert result.examples == {
        "header:x-new": "only in shadow",
        "header:x-old": "only in primary",
        "header:x-version": "value differs",
    }


def test_a_missing_grpc_status_is_none_and_the_trailers_come_before_the_headers() -> None:
    none = Side(200, GRPC_H, b"")
    result = compare_responses(grpc_side(status="14"), none, DEFAULT)
    assert result.fields == ("grpc-status",)
    assert result.examples["grpc-status"] == "14 (UNAVAILABLE) != none"
    assert compare_responses(none, grpc_side(), DEFAULT).examples["grpc-status"] == "none != 0 (OK)"
    # A status in the headers too (a proxy's guess) yields to the trailers' own.
    both = Side(
        200,
        [*GRPC_H, ("grpc-status", "0"), ("grpc-message", "fine")],
        b"",
        trailers=[("Grpc-Status", "14"), ("Grpc-Message", "down")],
    )
    assert compare_responses(both, grpc_side(status="14", message="down"), DEFAULT).match


def test_the_primary_grpc_message_is_percent_decoded_too() -> None:
    same = compare_responses(
        grpc_side(status="5", message="no%20stock"),
        grpc_side(status="5", message="no stock"),
        DEFAULT,
    )
    assert same.match
    result = compare_responses(
        grpc_side(status="5", message="no%20stock%21"),
        grpc_side(status="5", message="no stock"),
        DEFAULT,
    )
    assert result.fields == ("grpc-message",)
    assert result.examples["grpc-message"] == '"no stock!" != "no stock"'


def test_a_grpc_answer_and_a_plain_one_are_compared_as_plain_answers() -> None:
    # An error page instead of a gRPC answer (a proxy in front of the mirror): no gRPC status
    # is read from it, its body is compared as text.
    page = Side(503, [("content-type", "text/plain")], b"upstream connect error")
    result = compare_responses(grpc_side(pb_varint(1, 1)), page, DEFAULT)
    assert result.fields == ("status", "header:content-type", "body")
    assert result.examples["header:content-type"] == "value differs"
    assert result.examples["body"].endswith("| +upstream connect error")


def test_grpc_messages_are_not_compared_when_a_body_is_missing_or_a_prefix() -> None:
    note = "messages not compared: a body is unavailable or only a prefix"
    full = grpc_side(pb_varint(1, 1))
    status = [("grpc-status", "0")]
    missing = Side(200, GRPC_H, None, unavailable="copy failed", trailers=status)
    prefix = Side(200, GRPC_H, full.body, body_truncated=True, trailers=status)
    for a, b in ((full, missing), (missing, full), (prefix, full), (full, prefix)):
        result = compare_responses(a, b, DEFAULT)
        assert (result.match, result.fields, result.note) == (True, (), note)
    neither = compare_responses(missing, missing, DEFAULT)
    assert (neither.match, neither.note) == (True, "")


def test_compressed_and_non_protobuf_grpc_messages_are_compared_as_hex() -> None:
    def answer(*messages: tuple[int, bytes]) -> Side:
        return Side(200, GRPC_H, grpc_body(*messages), trailers=[("grpc-status", "0")])

    # Flag 1: compressed, so not decoded; a message after it still is.
    result = compare_responses(
        answer((1, pb_varint(1, 1)), (0, pb_varint(1, 1))),
        answer((1, pb_varint(1, 2)), (0, pb_varint(1, 2))),
        DEFAULT,
    )
    assert result.fields == ("body:/message/0", "body:/message/1/1")
    assert result.examples["body:/message/0"] == '"compressed:0x0801" != "compressed:0x0802"'
    # Bytes that are no protobuf message (a truncated varint), and again one after them.
    result = compare_responses(
        answer((0, b"\xff\xff"), (0, pb_varint(1, 1))),
        answer((0, b"\xff\xfe"), (0, pb_varint(1, 2))),
        DEFAULT,
    )
    assert result.fields == ("body:/message/0", "body:/message/1/1")
    assert result.examples["body:/message/0"] == '"0xffff" != "0xfffe"'
    assert result.examples["body:/message/1/1"] == "1 != 2"


def test_grpc_messages_are_paid_for_by_size_and_by_the_fields_decoded() -> None:
    def spent(a: Side, b: Side) -> int:
        budget = Budget(10_000_000)
        compare_responses(a, b, DEFAULT, budget=budget)
        return 10_000_000 - budget.left

    size = 16_000  # not protobuf (wire type 7): a step to decode, the rest paid by size
    big_a, big_b = b"\x0f" + b"a" * (size - 1), b"\x0f" + b"b" * (size - 1)
    assert spent(grpc_side(big_a), grpc_side(big_b)) >= 2 * size // 16
    fields = 4000
    many = pb_varint(1, 1) * fields  # 2 bytes a field: decoding costs more than the size
    decoded = spent(grpc_side(many, pb_varint(2, 1)), grpc_side(many, pb_varint(2, 2)))
    assert decoded >= 2 * fields + fields  # decoded on each side, then walked once


def test_a_path_pays_a_step_per_32_tokens_and_a_header_per_8_ignore_patterns() -> None:
    def spent(a: Side, b: Side, settings: CompareSettings = DEFAULT) -> int:
        budget = Budget(10_000_000)
        compare_responses(a, b, settings, budget=budget)
        return 10_000_000 - budget.left

    # Equal leaves are walked too (only the key "x" differs): 64 tokens to each deep leaf.
    leaves, nest = 1000, 62
    flat = json.dumps([0] * leaves)
    deep = "[" * nest + flat + "]" * nest
    shallow_cost = spent(
        side(raw=b'{"x":1,"d":%s}' % flat.encode()), side(raw=b'{"x":2,"d":%s}' % flat.encode())
    )
    deep_cost = spent(
        side(raw=b'{"x":1,"d":%s}' % deep.encode()), side(raw=b'{"x":2,"d":%s}' % deep.encode())
    )
    assert deep_cost - shallow_cost >= leaves * ((nest + 2) // 32)
    many = [(f"x-h{i}", "v") for i in range(1000)]
    settings = CompareSettings.build(extra_headers=[f"x-skip-{i}" for i in range(5)])
    assert len(settings.ignore_headers) == 24
    assert spent(side(raw=b"x", headers=many), side(raw=b"x", headers=many), settings) >= (
        2 * 1000 * (1 + 24 // 8)
    )


def test_a_grpc_comparison_fits_a_budget_of_its_cost_and_not_one_step_less() -> None:
    a, b = grpc_side(pb_varint(1, 1)), grpc_side(pb_varint(1, 2))
    # With the whole body ignored (the pointer ""), decoding the last message is the last step.
    for settings in (DEFAULT, CompareSettings(ignore_json=("",))):
        budget = Budget(10_000)
        expected = compare_responses(a, b, settings, budget=budget)
        cost = 10_000 - budget.left
        assert compare_responses(a, b, settings, budget=Budget(cost)) == expected
        short = compare_responses(a, b, settings, budget=Budget(cost - 1))
        assert short.not_compared == "too_costly"
