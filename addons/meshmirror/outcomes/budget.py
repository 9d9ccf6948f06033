"""The cost bound of one comparison: a budget of steps, spent as the comparison goes.

A mirror under test chooses its answers, so it can choose the costliest ones to compare (two
250 KiB texts with the same lines in another order took difflib 4 s). Every part of a
comparison whose work can grow faster than its input (aligning lines, looking for secrets in
examples) or that walks the input (a JSON tree) spends from one `Budget`; the step that would
overdraw it raises `TooCostly`, and the copy is then reported `not compared: too costly`.
A step is about one Python-level operation (a line compared, a JSON node visited), so a budget
of N steps costs a few hundred nanoseconds times N at most, whatever the bodies hold.
"""

from __future__ import annotations

#: Steps one comparison may take. With bodies up to the default mirror_compare_max_body
#: (256 KiB), walking both JSON trees takes at most about 260,000 steps; a text diff of bodies
#: that differ in a few places takes a few thousand.
COMPARE_STEPS = 1_000_000


class TooCostly(Exception):
    """The comparison would take more steps than its budget allows."""


class Budget:
    __slots__ = ("left",)

    def __init__(self, steps: int = COMPARE_STEPS) -> None:
        self.left = steps

    def spend(self, steps: int = 1) -> None:
        """Take `steps` from the budget; TooCostly when there are not that many left."""
        self.left -= steps
        if self.left < 0:
            raise TooCostly
