"""The loader: YAML streams, files and directories -> typed resources + located diagnostics."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path as FsPath
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshmirror.config import documents
from meshmirror.config.documents import MAX_DEPTH, MAX_NODES_PER_DOCUMENT, MAX_NODES_PER_FILE
from meshmirror.config.loader import PathError, load_paths, load_text
from meshmirror.diagnostics import Severity, format_path
from meshmirror.validate.resources import validate_resources

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %s}
spec:
  hosts: [httpbin]
  http:
  - route: [{destination: {host: httpbin}}]
"""


def test_multi_document_stream() -> None:
    r = load_text(VS % "a" + "---\n" + VS % "b", "f.yaml")
    assert r.diagnostics == []
    assert [x.name for x in r.resources] == ["a", "b"]
    assert [(x.source.doc, x.source.line) for x in r.resources] == [(1, 1), (2, 9)]
    assert r.resources[0].namespace == "default"


def test_empty_documents_are_skipped_but_counted() -> None:
    r = load_text("---\n---\n" + VS % "a", "f.yaml")
    assert r.diagnostics == []
    assert r.resources[0].source.doc == 2


def test_kind_list_members_become_resources() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n" + textwrap.indent(
        "- " + (VS % "a").replace("\n", "\n  ").rstrip() + "\n", ""
    )
    r = load_text(text, "list.yaml")
    assert r.diagnostics == []
    (res,) = r.resources
    assert res.base_path == ("items", 0)
    assert res.line_of(("spec", "hosts")) == 8


def test_directory_is_sorted_yaml_files_only(tmp_path: FsPath) -> None:
    (tmp_path / "b.yaml").write_text(VS % "b")
    (tmp_path / "a.yml").write_text(VS % "a")
    (tmp_path / "c.txt").write_text("not yaml at all: [")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text(VS % "d")
    r = load_paths([str(tmp_path)])
    assert [os.path.basename(f) for f in r.files] == ["a.yml", "b.yaml"]
    assert [x.name for x in r.resources] == ["a", "b"]


def test_directory_without_yaml_files_is_a_warning(tmp_path: FsPath) -> None:
    (tmp_path / "notes.txt").write_text("nothing to load")
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    (tmp_path / "gone.yml").symlink_to(tmp_path / "missing.yml")
    r = load_paths([str(tmp_path)])
    assert r.files == [] and r.errors == []
    assert [(d.severity, d.format()) for d in r.diagnostics] == [
        (Severity.WARNING, f"warning: {tmp_path / 'gone.yml'}: skipped: " + BROKEN),
        (Severity.WARNING, f"warning: {tmp_path / 'loop.yaml'}: skipped: " + BROKEN),
        (Severity.WARNING, f"warning: {tmp_path}: no YAML file (*.yaml, *.yml) in this directory"),
    ]


BROKEN = "not a file (a broken symlink or a loop)"


def test_missing_path_is_a_usage_error(tmp_path: FsPath) -> None:
    with pytest.raises(PathError, match="no such file or directory"):
        load_paths([str(tmp_path / "nope.yaml")])


def test_skipped_kind_is_one_info_line() -> None:
    text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: httpbin-v1}\nspec: {}\n"
    r = load_text(text, "d.yaml")
    assert r.resources == []
    (d,) = r.diagnostics
    assert d.severity is Severity.INFO
    assert d.message == "skipped Deployment (apps/v1) httpbin-v1: not a kind meshmirror uses"


def test_unknown_field_suggests_the_close_one() -> None:
    text = (VS % "a").replace("  - route:", "  - mirorPercentage: {value: 5}\n    route:")
    r = load_text(text, "f.yaml")
    (d,) = r.errors
    assert d.message == "unknown field 'mirorPercentage' (did you mean 'mirrorPercentage'?)"
    assert format_path(d.path) == "spec.http[0].mirorPercentage"
    assert d.line == 7


def test_unknown_field_without_close_match_lists_known_fields() -> None:
    text = (VS % "a").replace("  hosts:", "  zzz: 1\n  hosts:")
    (d,) = load_text(text, "f.yaml").errors
    assert d.message.startswith("unknown field 'zzz'; known fields: exportTo, gateways, hosts")


def test_duplicate_key_is_an_error_with_line() -> None:
    text = (VS % "a").replace("  http:", "  hosts: [other]\n  http:")
    r = load_text(text, "f.yaml")
    (d,) = r.errors
    assert d.message == "duplicate key 'hosts'"
    assert d.line == 6
    assert r.resources == []


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        pytest.param("a: !!int foo\n", 1, "invalid scalar 'foo' for tag", id="int-value"),
        pytest.param("a: 1\nb: !!float x\n", 2, "could not convert", id="float-value"),
        pytest.param("a: !!timestamp 2020-99-99\n", 1, "month must be in 1..12", id="timestamp"),
        pytest.param("!!int k: 1\n", 1, "invalid scalar 'k' for tag", id="key"),
    ],
)
def test_explicitly_tagged_scalar_that_does_not_parse_is_a_located_error(
    text: str, line: int, expected: str
) -> None:
    # PyYAML raises plain ValueErrors here, not YAMLErrors: they must still become messages.
    r = load_text(text, "f.yaml")
    (d,) = r.errors
    assert expected in d.message
    assert d.line == line
    assert r.resources == []


def test_yaml_syntax_error_has_line_and_column() -> None:
    r = load_text("apiVersion: v1\nkind: [unclosed\n", "bad.yaml")
    (d,) = r.errors
    assert d.message.startswith("YAML syntax error, column ")
    assert d.source is not None and d.source.file == "bad.yaml" and d.source.line == 3


def test_alias_bomb_is_capped() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    r = load_text("\n".join(lines) + "\n", "bomb.yaml")
    (d,) = r.errors
    assert f"more than {MAX_NODES_PER_DOCUMENT} YAML nodes" in d.message


def widget(i: int, nodes: int) -> str:
    """A document of a kind meshmirror skips that builds to about `nodes` YAML nodes through
    aliases (each `*a` expands to the 1001 nodes of `a`)."""
    uses = ", ".join(["*a"] * (nodes // 1001))
    return (
        f"apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w{i}}}\n"
        f"a: &a [{', '.join(['x'] * 1000)}]\nb: [{uses}]\n"
    )


def test_alias_expansions_are_capped_per_file_across_documents() -> None:
    per_doc = MAX_NODES_PER_DOCUMENT * 9 // 10  # each document alone is allowed
    n = MAX_NODES_PER_FILE // per_doc + 2
    text = "---\n".join(widget(i, per_doc) for i in range(n))
    assert len(text) < 30_000
    r = load_text(text, "widgets.yaml")
    (d,) = r.errors
    crossing = MAX_NODES_PER_FILE // per_doc + 1
    assert d.source is not None and (d.source.file, d.source.doc) == ("widgets.yaml", crossing)
    assert f"documents 1-{crossing} build more than {MAX_NODES_PER_FILE} YAML nodes" in d.message
    assert d.line is not None and d.path and d.path[0] == "b"
    # The documents before it were read (one info line each); none after it.
    assert [x.source.doc for x in r.diagnostics if x.severity is Severity.INFO] == list(
        range(1, crossing)
    )
    # Under the file cap the same documents load.
    ok = load_text("---\n".join(widget(i, per_doc) for i in range(crossing - 1)), "w.yaml")
    assert ok.errors == []


@pytest.mark.parametrize("opener", ["[", "{a: ", "- "], ids=["flow-seq", "flow-map", "block"])
def test_deep_nesting_is_a_located_error(opener: str) -> None:
    depth = 990 if opener != "- " else 300  # libyaml's flow limit is 1000 levels
    if opener == "- ":
        body = "".join("  " * i + "- \n" for i in range(depth)) + "  " * depth + "- x\n"
        text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\ndata:\n" + body
    else:
        close = {"[": "]", "{a: ": "}"}[opener]
        head = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\ndata: "
        text = f"{head}{opener * depth}1{close * depth}\n"
    r = load_text(text, "deep.yaml")
    (d,) = r.errors
    assert f"more than {MAX_DEPTH} levels of mappings and sequences" in d.message
    assert d.source is not None and (d.source.file, d.source.doc) == ("deep.yaml", 1)
    assert d.path[0] == "data" and len(d.path) <= 6
    assert d.format().startswith("deep.yaml:")


def test_nesting_is_refused_one_level_past_the_limit() -> None:
    def nested(levels: int) -> str:
        # The document is level 0, `data`'s outermost list level 1.
        head = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: "
        return head + "[" * levels + "]" * levels + "\n"

    assert load_text(nested(MAX_DEPTH), "ok.yaml").errors == []
    assert len(load_text(nested(MAX_DEPTH + 1), "deep.yaml").errors) == 1


def test_a_composer_that_recurses_per_level_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # PyYAML without libyaml composes recursively: RecursionError is caught at the parse boundary.
    monkeypatch.setattr(documents, "_SafeLoader", yaml.SafeLoader)
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: " + "[" * 5000
    text += "]" * 5000 + "\n"
    (d,) = load_text(text, "deep.yaml").errors
    assert "nested too deeply to read" in d.message
    assert d.source is not None and (d.source.file, d.source.doc) == ("deep.yaml", 1)


@pytest.mark.parametrize(
    ("text", "got"),
    [("- a\n- b\n", "sequence"), ("hello\n", "string"), ("42\n", "int")],
    ids=["sequence", "string", "int"],
)
def test_non_mapping_document(text: str, got: str) -> None:
    (d,) = load_text(text, "f.yaml").errors
    assert d.message == "a document must be a mapping with apiVersion and kind"
    assert d.value == got


def test_wrong_api_version() -> None:
    text = (VS % "a").replace("networking.istio.io/v1", "networking.istio.io/v2")
    (d,) = load_text(text, "f.yaml").errors
    assert d.message.startswith("unsupported apiVersion for VirtualService; use one of ")
    assert "networking.istio.io/v1alpha3" in d.message
    assert d.value == "networking.istio.io/v2"
    assert format_path(d.path) == "apiVersion"


@pytest.mark.parametrize(
    ("text", "message", "path"),
    [
        ("apiVersion: v1\nmetadata: {name: a}\n", "kind is required", "kind"),
        ("kind: Service\nmetadata: {name: a}\n", "apiVersion is required", "apiVersion"),
        (
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nspec: {}\n",
            "metadata.name is required",
            "metadata.name",
        ),
        (
            (VS % "a").replace("http:", "http: 5\n  tcp:"),
            "input should be a valid list",
            "spec.http",
        ),
    ],
    ids=["no-kind", "no-api-version", "no-name", "wrong-type"],
)
def test_required_parts(text: str, message: str, path: str) -> None:
    ds = load_text(text, "f.yaml").errors
    assert any(d.message == message and format_path(d.path) == path for d in ds), ds


def test_numbers_are_strict() -> None:
    text = (VS % "a").replace(
        "  - route:", "  - mirror: {host: s}\n    mirrorPercentage: {value: '50'}\n    route:"
    )
    (d,) = load_text(text, "f.yaml").errors
    assert format_path(d.path) == "spec.http[0].mirrorPercentage.value"
    assert d.value == "50"


def test_null_fields_count_as_absent() -> None:
    text = (VS % "a").replace("  - route:", "  - mirror: null\n    route:")
    r = load_text(text, "f.yaml")
    assert r.diagnostics == []


# --- properties: nothing raises, every error is located -----------------------------------------

FIELD_NAMES = [
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "spec",
    "hosts",
    "gateways",
    "http",
    "match",
    "uri",
    "prefix",
    "exact",
    "regex",
    "headers",
    "withoutHeaders",
    "queryParams",
    "route",
    "destination",
    "host",
    "subset",
    "port",
    "number",
    "weight",
    "mirror",
    "mirrors",
    "mirrorPercentage",
    "mirrorPercent",
    "percentage",
    "value",
    "timeout",
    "retries",
    "attempts",
    "redirect",
    "directResponse",
    "status",
    "fault",
    "delay",
    "abort",
    "rewrite",
    "items",
    "subsets",
    "trafficPolicy",
    "connectionPool",
    "tcp",
    "endpoints",
    "address",
    "ports",
    "resolution",
    "servers",
    "protocol",
    "targetPort",
    "labels",
    "exportTo",
    "delegate",
    "tls",
]
KINDS = [
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1alpha3", "DestinationRule"),
    ("networking.istio.io/v1beta1", "ServiceEntry"),
    ("networking.istio.io/v1", "WorkloadEntry"),
    ("networking.istio.io/v1", "Gateway"),
    ("v1", "Service"),
    ("v1", "List"),
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "*", "a", "httpbin", "5s", "0.5ms", "(", "%", "::", "GET", "STATIC"]),
    st.text(max_size=12),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), inner, max_size=5),
    ),
    max_leaves=30,
)


def _check(text: str) -> None:
    r = load_text(text, "prop.yaml")
    diagnostics = r.diagnostics + validate_resources(r.resources)
    for d in diagnostics:
        d.format()
        if d.severity is Severity.ERROR:
            assert d.source is not None, d


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_random_text_never_raises(text: str) -> None:
    _check(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KINDS), values, values)
def test_random_documents_never_raise(kind: tuple[str, str], spec: Any, extra: Any) -> None:
    api, k = kind
    body: dict[str, Any] = {"apiVersion": api, "kind": k, "metadata": {"name": "x"}, "spec": spec}
    if k == "List":
        body = {"apiVersion": api, "kind": k, "items": [spec, extra]}
    _check(yaml.safe_dump(body, allow_unicode=True) + "---\n" + yaml.safe_dump(extra))


TAGS = ["!!int", "!!float", "!!bool", "!!null", "!!timestamp", "!!binary", "!!str", "!!set"]
TAGS += ["!!omap", "!!pairs", "!!seq", "!!map", "!!python/object", "!custom"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["spec", "metadata", "hosts", "x", "kind"]),
            st.sampled_from(TAGS),
            st.text(st.characters(codec="ascii", exclude_characters="\n\r#"), max_size=12),
            st.booleans(),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_explicit_tags_never_raise(lines: list[tuple[str, str, str, bool]]) -> None:
    # Explicit tags reach PyYAML's constructors, which raise plain Python errors (ValueError,
    # TypeError, ...) for values they cannot build; the loader must turn every one into a message.
    text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
    for key, tag, value, on_key in lines:
        quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        text += f"{tag} {quoted}: 1\n" if on_key else f"{key}: {tag} {quoted}\n"
    _check(text)
