"""replay.py: the mirror_replay_rate syntax and the pacing arithmetic (fake clock)."""

from __future__ import annotations

import pytest

from meshmirror.mitm.replay import ReplayPacer, ReplayRate, parse_replay_rate


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("", ReplayRate()),
        ("0", ReplayRate()),
        ("50", ReplayRate(per_second=50)),
        ("2.5", ReplayRate(per_second=2.5)),
        ("x1", ReplayRate(speed=1)),
        ("X2", ReplayRate(speed=2)),
        ("x0.5", ReplayRate(speed=0.5)),
    ],
)
def test_parse(text: str, rate: ReplayRate) -> None:
    assert parse_replay_rate(text) == rate


@pytest.mark.parametrize("text", ["-1", "x0", "x", "fast", "10/s"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="requests per second"):
        parse_replay_rate(text)


def test_rate_spaces_requests_evenly() -> None:
    now = [100.0]
    pacer = ReplayPacer(ReplayRate(per_second=10), clock=lambda: now[0])
    assert [pacer.delay(0) for _ in range(3)] == pytest.approx([0.0, 0.1, 0.2])
    now[0] = 105.0  # idle for a while: no burst is owed
    assert pacer.delay(0) == 0.0


def test_speed_follows_the_recording_scaled() -> None:
    now = [0.0]
    pacer = ReplayPacer(ReplayRate(speed=2), clock=lambda: now[0])
    assert pacer.delay(1000.0) == 0.0  # the first request sets the origin
    assert pacer.delay(1004.0) == pytest.approx(2.0)  # 4 s later in the recording, at 2x
    now[0] = 3.0
    assert pacer.delay(1004.0) == 0.0  # already late: go at once
    assert ReplayPacer(ReplayRate()).delay(5.0) == 0.0
