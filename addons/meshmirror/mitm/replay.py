"""Pacing for recordings (`mitmdump -nr session.mitm`): how fast recorded requests go to mirrors.

mitmproxy's readfile loads recorded flows one at a time and awaits every hook of each, so an
async hook that waits before the mirror runs slows the reading itself: that is the pacing. The
wait has two parts: the rate (`mirror_replay_rate`) and room in the writer (never more copies in
flight than `mirror_max_inflight`, so a replay waits instead of dropping copies as overflow).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReplayRate:
    per_second: float = 0.0  # > 0: at most this many recorded requests per second
    speed: float = 0.0  # > 0: follow the recording's own timing, this many times faster

    @property
    def unlimited(self) -> bool:
        return self.per_second <= 0 and self.speed <= 0


def parse_replay_rate(text: str) -> ReplayRate:
    """`""` unlimited; `"50"` 50 requests/s; `"x1"` the recording's timing; `"x2"` twice as
    fast; `"x0.5"` half speed. Raises ValueError."""
    t = text.strip().lower()
    if not t or t in ("0", "unlimited"):
        return ReplayRate()
    try:
        if t.startswith("x"):
            speed = float(t[1:])
            if not speed > 0:
                raise ValueError
            return ReplayRate(speed=speed)
        rate = float(t)
        if not rate > 0:
            raise ValueError
        return ReplayRate(per_second=rate)
    except ValueError:
        raise ValueError(
            "expected requests per second (e.g. 50), or x<factor> to follow the recording's "
            "timing (x1, x2, x0.5); empty for unlimited"
        ) from None


class ReplayPacer:
    def __init__(self, rate: ReplayRate, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._next = 0.0  # per_second: earliest time for the next request
        self._origin: tuple[float, float] | None = None  # speed: (recorded t0, wall t0)

    def delay(self, recorded_at: float) -> float:
        """Seconds to wait before the request recorded at `recorded_at` (epoch) may go."""
        now = self._clock()
        if self.rate.per_second > 0:
            at = max(now, self._next)
            self._next = at + 1.0 / self.rate.per_second
            return at - now
        if self.rate.speed > 0:
            if self._origin is None:
                self._origin = (recorded_at, now)
            rec0, wall0 = self._origin
            at = wall0 + max(0.0, recorded_at - rec0) / self.rate.speed
            return max(0.0, at - now)
        return 0.0

    async def wait(
        self, recorded_at: float, room: Callable[[], bool], deadline: float = 60.0
    ) -> None:
        d = self.delay(recorded_at)
        if d > 0:
            await asyncio.sleep(d)
        # Bounded concurrency: wait (briefly, by polling) for the writer to have room.
        end = self._clock() + deadline
        while not room() and self._clock() < end:
            await asyncio.sleep(0.005)
