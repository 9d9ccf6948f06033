"""Circuit breaker per mirror cluster (pure; the clock is injected).

A mirror that keeps failing costs a socket, a task and up to `mirror_timeout` per copy. After
`failures` consecutive failed copies the cluster *opens*: copies are dropped at once
(`dropped: circuit_open`) for `cooldown` seconds. Then one probe copy is let through
(*half-open*); its success closes the circuit, its failure opens it for another cool-down.

What counts: a copy that got no answer (`failed`, any class except `cancelled`) is a failure; a
copy the mirror answered is a success whatever the status (a 500 still proves the mirror is up
and answering quickly). Cancelled copies (shutdown, writer reconfigured) are neutral.
Results of copies that were already in flight when the circuit opened do not change an open
circuit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change, for the addon's log line."""

    cluster: str
    old: State
    new: State
    reason: str

    def format(self) -> str:
        return f"mirror circuit {self.old} -> {self.new} cluster={self.cluster} ({self.reason})"


@dataclass(slots=True)
class _Circuit:
    state: State = "closed"
    consecutive: int = 0
    opened_at: float = 0.0
    probe_out: bool = False
    opens: int = 0
    rejected: int = 0


class CircuitBreaker:
    """Consecutive-failure breaker; `failures` 0 disables it (every copy allowed)."""

    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float]) -> None:
        if failures < 0:
            raise ValueError("failures must be >= 0")
        if cooldown < 0:
            raise ValueError("cooldown must be >= 0")
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    @property
    def enabled(self) -> bool:
        return self.failures > 0

    def state(self, cluster: str) -> State:
        c = self._circuits.get(cluster)
        return "closed" if c is None else c.state

    def allow(self, cluster: str) -> tuple[bool, Transition | None]:
        """May a copy for `cluster` be sent now? A half-open circuit lets exactly one probe
        through; a caller that then does not send it must call `release`."""
        if not self.enabled:
            return True, None
        c = self._circuits.get(cluster)
        if c is None or c.state == "closed":
            return True, None
        if c.state == "open":
            if self._clock() - c.opened_at < self.cooldown:
                c.rejected += 1
                return False, None
            c.state = "half_open"
            c.probe_out = True
            return True, Transition(cluster, "open", "half_open", "cool-down over; one probe")
        if c.probe_out:  # half-open, the probe is still out
            c.rejected += 1
            return False, None
        c.probe_out = True
        return True, None

    def release(self, cluster: str) -> None:
        """An allowed copy was not sent after all (e.g. dropped for overflow)."""
        c = self._circuits.get(cluster)
        if c is not None and c.state == "half_open":
            c.probe_out = False

    def record(self, cluster: str, ok: bool | None) -> Transition | None:
        """The result of a sent copy: True answered, False failed, None neutral (cancelled)."""
        if not self.enabled:
            return None
        c = self._circuits.get(cluster)
        if c is None:
            if ok is not False:
                return None
            c = self._circuits[cluster] = _Circuit()
        if ok is None:
            if c.state == "half_open":
                c.probe_out = False
            return None
        if c.state == "open":
            return None
        if c.state == "half_open":
            if ok:
                c.state, c.consecutive, c.probe_out = "closed", 0, False
                return Transition(cluster, "half_open", "closed", "probe answered")
            self._open(c)
            return Transition(cluster, "half_open", "open", "probe failed")
        if ok:
            c.consecutive = 0
            return None
        c.consecutive += 1
        if c.consecutive >= self.failures:
            self._open(c)
            return Transition(
                cluster,
                "closed",
                "open",
                f"{c.consecutive} consecutive failures; failing fast for {self.cooldown:g}s",
            )
        return None

    def _open(self, c: _Circuit) -> None:
        c.state = "open"
        c.opened_at = self._clock()
        c.probe_out = False
        c.opens += 1

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Per cluster: state, consecutive failures, times opened, copies rejected."""
        return {
            name: {
                "state": c.state,
                "consecutive_failures": c.consecutive,
                "opened": c.opens,
                "rejected": c.rejected,
            }
            for name, c in sorted(self._circuits.items())
        }
