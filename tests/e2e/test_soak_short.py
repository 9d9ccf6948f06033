"""A short soak (about 20 s): scripts/soak.py must report flat resources and full accounting."""

from __future__ import annotations

import subprocess
import sys

from tests.support.mitmdump import ROOT


def test_short_soak_is_flat_and_fully_accounted() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "soak.py"),
            "--seconds",
            "20",
            "--sample-every",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert "soak: PASS" in out
    assert out.count("  ok       outbound|80||") == 6
    assert "MISMATCH" not in out


def test_short_hostile_soak_keeps_the_primary_and_prints_nothing_raw() -> None:
    """`--hostile`: a candidate that turns to bombs, costly diffs and escape sequences at
    half-time; the soak checks the primary's p99, the comparisons and the output itself."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "soak.py"),
            "--seconds",
            "20",
            "--sample-every",
            "2",
            "--hostile",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert "soak: PASS" in out and "the candidate turns hostile" in out
    assert "raw control characters in mitmdump's output: 0" in out
    assert out.count("  ok       outbound|80||") == 7
