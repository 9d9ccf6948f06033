"""The README is part of the product: its reference lists every option with its real default,
its table of contents every section, and it links nothing outside the repository."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from meshmirror.mitm.inspection_options import INSPECTION_OPTIONS
from meshmirror.mitm.options import OPTIONS
from meshmirror.outcomes.log import FIELDS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `(mirror_\w+)` \| ([^|]*) \|", re.M)


def test_every_option_is_in_the_options_table_with_its_default() -> None:
    rows = {name: default.strip() for name, default in ROW.findall(README)}
    specs = {spec.name: spec for spec in (*OPTIONS, *INSPECTION_OPTIONS)}
    assert sorted(rows) == sorted(specs)
    for name, spec in specs.items():
        shown = rows[name]
        if spec.default in ("", None, []):
            assert not shown.startswith("`") or shown in ("``", "`[]`"), (name, shown)
        elif isinstance(spec.default, list):
            assert all(str(v) in shown for v in spec.default), (name, shown)
        else:
            value = str(spec.default).lower() if isinstance(spec.default, bool) else spec.default
            assert shown == f"`{value}`", (name, shown)


def test_the_table_of_contents_names_every_section() -> None:
    sections = re.findall(r"^## (.+)$", README, re.M)
    linked = set(re.findall(r"\]\(#([a-z0-9-]+)\)", README))
    for title in sections:
        anchor = re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")
        assert anchor in linked, title


def test_no_link_leaves_the_repository() -> None:
    assert not re.findall(r"\]\((?:https?:)?//", README)


# Where the README's commands write: an option's value or a flag's argument (placeholders such as
# DIR, FILE or OUT.html are names to choose, not files the commands write).
WRITES = re.compile(
    r"(?:mirror_log|mirror_timeline|mirror_compare_noise|mirror_record|hardump)=([^\s`')\]]+)"
    r"|--(?:junit|html|write-config) ([^\s`')\]]+)|\s-w ([^\s`')\]]+)"
)


def test_what_the_readmes_commands_write_in_the_checkout_is_ignored_by_git() -> None:
    root = Path(__file__).resolve().parents[1]
    inside = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=root, capture_output=True, text=True
    )
    if inside.returncode != 0:
        pytest.skip("not a git checkout: nothing to leave untracked")
    written = {next(g for g in m.groups() if g) for m in WRITES.finditer(README)}
    written = {w for w in written if not w.split(".")[0].rstrip("/").isupper()}
    assert {"outcomes.jsonl", "verdict.xml", "mesh/"} <= written, written
    for path in sorted(written):
        check = subprocess.run(
            ["git", "check-ignore", "--no-index", "-q", path], cwd=root, capture_output=True
        )
        assert check.returncode == 0, f"{path} (written by a README command) is not git-ignored"


def test_the_outcome_logs_fields_are_the_ones_it_writes() -> None:
    listed = re.search(r"works, and in ASCII .+?\. Fields: (.+?)\(", README, re.S)
    assert listed, "the outcome log's field list"
    assert re.findall(r"`(\w+)`", listed.group(1)) == list(FIELDS)
    example = re.search(r'^(\{"time":.+?\})\n```', README, re.M | re.S)
    assert example, "the outcome log's example line"
    assert list(json.loads(example.group(1).replace("\n", ""))) == list(FIELDS)
