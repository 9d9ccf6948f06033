"""The circuit breaker with a fake clock: closed -> open -> half-open -> closed/open."""

from __future__ import annotations

import pytest

from meshmirror.mirror.breaker import CircuitBreaker, Transition


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(failures: int = 3, cooldown: float = 10.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(failures, cooldown, clock), clock


def fail(b: CircuitBreaker, n: int, cluster: str = "c") -> list[str]:
    out = []
    for _ in range(n):
        assert b.allow(cluster)[0]
        t = b.record(cluster, False)
        if t is not None:
            out.append(t.new)
    return out


def test_opens_after_n_consecutive_failures_only() -> None:
    b, _ = make(3)
    fail(b, 2)
    assert b.record("c", True) is None  # a success resets the count
    assert fail(b, 2) == []
    assert b.state("c") == "closed"
    assert fail(b, 1) == ["open"]
    assert b.state("c") == "open"
    assert b.allow("c") == (False, None)
    assert b.snapshot()["c"]["rejected"] == 1


def test_half_open_lets_exactly_one_probe_and_success_closes() -> None:
    b, clock = make(2, cooldown=10)
    fail(b, 2)
    clock.now += 9.9
    assert not b.allow("c")[0]
    clock.now += 0.2
    allowed, t = b.allow("c")
    assert allowed and t is not None and (t.old, t.new) == ("open", "half_open")
    assert not b.allow("c")[0]  # the probe is out: the rest still fail fast
    t = b.record("c", True)
    assert t is not None and t.new == "closed" and "probe answered" in t.format()
    assert b.allow("c") == (True, None)
    assert b.snapshot()["c"]["consecutive_failures"] == 0


def test_failed_probe_reopens_for_a_new_cooldown() -> None:
    b, clock = make(1, cooldown=5)
    fail(b, 1)
    clock.now += 5
    assert b.allow("c")[0]
    t = b.record("c", False)
    assert t is not None and (t.old, t.new) == ("half_open", "open")
    clock.now += 4
    assert not b.allow("c")[0]
    clock.now += 1
    assert b.allow("c")[0]
    assert b.snapshot()["c"]["opened"] == 2


def test_results_arriving_while_open_do_not_change_it() -> None:
    b, clock = make(1)
    fail(b, 1)
    assert b.record("c", True) is None
    assert b.state("c") == "open"


@pytest.mark.parametrize("neutral", ["cancelled", "released"])
def test_cancelled_or_unsent_probe_frees_the_slot(neutral: str) -> None:
    b, clock = make(1, cooldown=1)
    fail(b, 1)
    clock.now += 1
    assert b.allow("c")[0]
    if neutral == "cancelled":
        assert b.record("c", None) is None
    else:
        b.release("c")
    assert b.state("c") == "half_open"
    assert b.allow("c")[0]  # a new probe may go


def test_clusters_are_independent_and_zero_disables() -> None:
    b, _ = make(1)
    fail(b, 1, "a")
    assert b.state("a") == "open" and b.allow("b")[0]
    off, _ = make(0)
    fail(off, 50)
    assert off.state("c") == "closed" and off.snapshot() == {}


def test_rejects_negative_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(-1, 1, Clock())
    with pytest.raises(ValueError):
        CircuitBreaker(1, -1, Clock())


def test_settings_are_checked_with_their_names() -> None:
    with pytest.raises(ValueError, match=r"^failures must be >= 0$"):
        CircuitBreaker(-1, 1, Clock())
    with pytest.raises(ValueError, match=r"^cooldown must be >= 0$"):
        CircuitBreaker(1, -0.5, Clock())
    b = CircuitBreaker(1, 0, Clock())  # no cool-down: the next copy is the probe
    fail(b, 1)
    assert b.allow("c")[0] and b.state("c") == "half_open"


def test_every_transition_is_reported_with_its_reason() -> None:
    b, clock = make(2, cooldown=2.5)
    assert fail(b, 1) == []
    b.allow("c")
    opened = b.record("c", False)
    assert opened == Transition(
        "c", "closed", "open", "2 consecutive failures; failing fast for 2.5s"
    )
    assert opened.format() == (
        "mirror circuit closed -> open cluster=c (2 consecutive failures; failing fast for 2.5s)"
    )
    clock.now += 2.5
    assert b.allow("c") == (True, Transition("c", "open", "half_open", "cool-down over; one probe"))
    assert b.record("c", False) == Transition("c", "half_open", "open", "probe failed")
    clock.now += 2.5
    b.allow("c")
    assert b.record("c", True) == Transition("c", "half_open", "closed", "probe answered")
    assert b.state("c") == "closed"


def test_rejected_copies_are_counted_one_by_one() -> None:
    b, clock = make(1, cooldown=10)
    fail(b, 1)
    for _ in range(3):
        assert b.allow("c") == (False, None)
    clock.now += 10
    assert b.allow("c")[0]  # the probe
    assert b.allow("c") == (False, None)
    assert b.snapshot() == {
        "c": {"state": "half_open", "consecutive_failures": 1, "opened": 1, "rejected": 4}
    }


def test_late_results_while_open_neither_extend_nor_end_the_cooldown() -> None:
    b, clock = make(2, cooldown=10)
    fail(b, 2)
    clock.now += 6
    for ok in (False, False, True, None):
        assert b.record("c", ok) is None  # copies that were in flight when it opened
    assert b.state("c") == "open"
    clock.now += 4  # ten seconds after it opened, whatever arrived since
    assert b.allow("c") == (True, Transition("c", "open", "half_open", "cool-down over; one probe"))
    assert b.snapshot()["c"] == {
        "state": "half_open",
        "consecutive_failures": 2,
        "opened": 1,
        "rejected": 0,
    }


def test_a_released_probe_slot_admits_exactly_one_new_probe() -> None:
    b, clock = make(1, cooldown=1)
    fail(b, 1)
    clock.now += 1
    assert b.allow("c")[0]
    b.release("c")
    assert b.allow("c") == (True, None)
    assert b.allow("c") == (False, None)


def test_release_and_neutral_results_of_unknown_or_closed_clusters_do_nothing() -> None:
    b, _ = make(1)
    b.release("never-seen")
    assert b.record("never-seen", None) is None and b.record("never-seen", True) is None
    assert b.snapshot() == {}
    fail(b, 1, "other")
    assert b.snapshot() == {
        "other": {"state": "open", "consecutive_failures": 1, "opened": 1, "rejected": 0}
    }
