"""Which lines changed between two texts, within a budget of steps.

`changed_lines(a, b, budget)` returns the removed (`-`) and added (`+`) lines, in the order a
unified diff without context shows them: hunk by hunk, each hunk's removed lines before its
added ones. The common head and tail are skipped in one pass; the lines between are aligned
by a shortest edit script: with the longest-common-subsequence table when the two middles'
product is small (one side a few lines: a page against `ok`), else with Myers' algorithm, whose
cost grows with the lines times the number of edits. Either way the steps are paid from the
budget, so two texts that differ everywhere (the same lines shuffled) run out of it quickly
instead of taking seconds: `TooCostly` (outcomes/budget.py).
"""

from __future__ import annotations

import array
from collections.abc import Sequence

from meshmirror.outcomes.budget import Budget


def changed_lines(a: Sequence[str], b: Sequence[str], budget: Budget) -> list[tuple[str, str]]:
    """(`-` or `+`, line) for each line removed from `a` or added in `b` (see the module)."""
    n, m = len(a), len(b)
    head = 0
    while head < n and head < m and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < n - head and tail < m - head and a[n - 1 - tail] == b[m - 1 - tail]:
        tail += 1
    budget.spend(head + tail + 1)
    a, b = a[head : n - tail], b[head : m - tail]
    if len(a) * len(b) <= min(budget.left, _TABLE_CELLS):
        edits = _table_script(a, b, budget)
    else:
        edits = _edit_script(a, b, budget)
    return _hunks(edits)


_TABLE_CELLS = 1 << 20  # the largest table built (bytes of memory: 4 per cell)


def _table_script(
    a: Sequence[str], b: Sequence[str], budget: Budget
) -> list[tuple[int, int, str, str]]:
    """A shortest edit script from the table of longest common suffixes (len(a) * len(b)
    steps): cheap when one side has few lines, however many the other has."""
    n, m = len(a), len(b)
    budget.spend(n * m)
    width = m + 1
    table = array.array("i", bytes(4 * (n + 1) * width))  # table[i*width+j]: LCS of a[i:], b[j:]
    for i in range(n - 1, -1, -1):
        row, below = i * width, (i + 1) * width
        for j in range(m - 1, -1, -1):
            if a[i] == b[j]:
                table[row + j] = table[below + j + 1] + 1
            else:
                table[row + j] = max(table[below + j], table[row + j + 1])
    edits: list[tuple[int, int, str, str]] = []
    i = j = 0
    while i < n or j < m:
        if i < n and j < m and a[i] == b[j]:
            i, j = i + 1, j + 1
        elif j < m and (i == n or table[i * width + j + 1] >= table[(i + 1) * width + j]):
            edits.append((i, j, "+", b[j]))
            j += 1
        else:
            edits.append((i, j, "-", a[i]))
            i += 1
    return edits


def _edit_script(
    a: Sequence[str], b: Sequence[str], budget: Budget
) -> list[tuple[int, int, str, str]]:
    """Myers' greedy shortest edit script: (position in a, position in b, `-`/`+`, line)."""
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return [(i, 0, "-", line) for i, line in enumerate(a)] + [
            (n, j, "+", line) for j, line in enumerate(b)
        ]
    offset = n + m + 1
    v = [0] * (2 * offset + 1)
    trace: list[list[int]] = []
    for d in range(n + m + 1):
        budget.spend(d + 1)
        for k in range(-d, d + 1, 2):
            if k == -d or (k != d and v[offset + k - 1] < v[offset + k + 1]):
                x = v[offset + k + 1]  # down: a line of b inserted
            else:
                x = v[offset + k - 1] + 1  # right: a line of a deleted
            y = x - k
            start = x
            while x < n and y < m and a[x] == b[y]:
                x += 1
                y += 1
            if x > start:
                budget.spend(x - start)
            v[offset + k] = x
            if x >= n and y >= m:
                trace.append(v[offset - d : offset + d + 1])
                return _backtrack(a, b, trace)
        trace.append(v[offset - d : offset + d + 1])
    raise AssertionError("unreachable: d = n + m always reaches the end")  # pragma: no cover


def _backtrack(
    a: Sequence[str], b: Sequence[str], trace: list[list[int]]
) -> list[tuple[int, int, str, str]]:
    x, y = len(a), len(b)
    edits: list[tuple[int, int, str, str]] = []
    for d in range(len(trace) - 1, 0, -1):
        prev = trace[d - 1]  # diagonals -(d-1)..(d-1), at index k + d - 1
        k = x - y
        down = k == -d or (k != d and prev[k - 1 + d - 1] < prev[k + 1 + d - 1])
        prev_k = k + 1 if down else k - 1
        prev_x = prev[prev_k + d - 1]
        prev_y = prev_x - prev_k
        if down:
            edits.append((prev_x, prev_y, "+", b[prev_y]))
        else:
            edits.append((prev_x, prev_y, "-", a[prev_x]))
        x, y = prev_x, prev_y
    edits.reverse()
    return edits


def _hunks(edits: list[tuple[int, int, str, str]]) -> list[tuple[str, str]]:
    """Edits grouped into hunks (no unchanged line between them), removals first in each."""
    out: list[tuple[str, str]] = []
    hunk: list[tuple[int, int, str, str]] = []
    for edit in edits:
        if hunk:
            x, y, op, _ = hunk[-1]
            nx, ny = (x + 1, y) if op == "-" else (x, y + 1)
            if (edit[0], edit[1]) != (nx, ny):
                out += _flush(hunk)
                hunk = []
        hunk.append(edit)
    out += _flush(hunk)
    return out


def _flush(hunk: list[tuple[int, int, str, str]]) -> list[tuple[str, str]]:
    return [(op, line) for _, _, op, line in hunk if op == "-"] + [
        (op, line) for _, _, op, line in hunk if op == "+"
    ]
