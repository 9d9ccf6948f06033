"""The changed lines of two texts: a shortest edit script, hunk by hunk, within a budget."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshmirror.outcomes.budget import Budget, TooCostly
from meshmirror.outcomes.textdiff import changed_lines


def lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b):
            prev, row[j + 1] = row[j + 1], prev + 1 if x == y else max(row[j + 1], row[j])
    return row[-1]


@given(
    st.lists(st.sampled_from("abcd"), max_size=14), st.lists(st.sampled_from("abcd"), max_size=14)
)
def test_the_changes_are_a_shortest_edit_script(a: list[str], b: list[str]) -> None:
    changes = changed_lines(a, b, Budget())
    removed = Counter(line for op, line in changes if op == "-")
    added = Counter(line for op, line in changes if op == "+")
    assert removed <= Counter(a) and added <= Counter(b)
    # What is kept of each side is the same lines, and as many as their longest common run.
    assert Counter(a) - removed == Counter(b) - added
    assert sum(removed.values()) + sum(added.values()) == len(a) + len(b) - 2 * lcs(a, b)


def test_hunks_show_their_removed_lines_first() -> None:
    a = ["head", "v: 1", "w: 1", "same", "x", "tail"]
    b = ["head", "v: 2", "same", "y", "z", "tail"]
    assert changed_lines(a, b, Budget()) == [
        ("-", "v: 1"),
        ("-", "w: 1"),
        ("+", "v: 2"),
        ("-", "x"),
        ("+", "y"),
        ("+", "z"),
    ]


def test_a_shuffle_runs_out_of_budget_and_a_few_changes_do_not() -> None:
    lines = [f"line {i % 100:02d}" for i in range(32_000)]
    shuffled = lines[:]
    random.Random(1).shuffle(shuffled)
    with pytest.raises(TooCostly):
        changed_lines(lines, shuffled, Budget())
    edited = lines[:]
    edited[10_000] = "changed"
    assert changed_lines(lines, edited, Budget()) == [("-", "line 00"), ("+", "changed")]


def test_a_page_against_a_few_lines_is_aligned_cheaply() -> None:
    page = [f"line {i % 100:02d}" for i in range(32_000)]
    budget = Budget(100_000)
    changes = changed_lines(page, ["line 00", "ok"], budget)
    assert changes[0] == ("-", "line 01") and changes[-1] == ("+", "ok")
    assert len(changes) == 32_000 - 1 + 1 and budget.left > 0
