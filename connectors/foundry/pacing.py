"""Client-side pacing: concurrency, requests/min and tokens/min, with adaptive backing-off.

A long backfill should run at the deployment's quota instead of bouncing off it. The service
evaluates a per-minute request quota over 1 s and 10 s windows, so a burst of even a tenth of
a minute's quota is throttled. Requests therefore leave evenly spaced, a little under the
quota (``HEADROOM``); tokens are spaced the same way, and a request's estimate is corrected
once the service says what it billed. A 429 pauses every sender until the wait it names and
halves the concurrency limit, which then grows back by one per limit successes (AIMD).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from types import TracebackType

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

HEADROOM = 0.97
"""Fraction of the quota aimed at: network jitter must not push two requests into one
window's last slot."""
LATE_TOLERANCE = 0.01
"""A request that leaves at most this late keeps its place in the schedule, so the
oversleep of every timer does not add up to lost quota. Well under the 1 s window's slack
(``1 / HEADROOM - 1`` seconds)."""


class _Schedule:
    """Spaces uses of a per-minute quota evenly: each use books when the next may start."""

    def __init__(self, per_minute: float, clock: Clock, headroom: float) -> None:
        self._clock = clock
        self._headroom = headroom
        self.per_minute = per_minute
        self.next_at = -math.inf

    @property
    def interval(self) -> float:
        """Seconds one unit of quota occupies."""
        return 60.0 / (self.per_minute * self._headroom)

    def wait_time(self) -> float:
        return max(0.0, self.next_at - self._clock())

    def take(self, amount: float) -> None:
        now = self._clock()
        late = now - self.next_at
        start = self.next_at if 0 <= late <= LATE_TOLERANCE else max(now, self.next_at)
        self.next_at = start + amount * self.interval

    def correct(self, amount: float) -> None:
        """Book ``amount`` more (or, negative, fewer) units than were taken."""
        self.next_at += amount * self.interval


class Pacer:
    """Admits requests within the configured limits; use ``async with pacer.slot(tokens)``."""

    def __init__(
        self,
        *,
        max_concurrency: int,
        requests_per_minute: int = 0,
        tokens_per_minute: int = 0,
        clock: Clock,
        sleep: Sleep,
        headroom: float = HEADROOM,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.limit = float(max_concurrency)
        self.in_flight = 0
        self._clock = clock
        self._sleep = sleep
        self._headroom = headroom
        self._cond = asyncio.Condition()
        self._rpm = _Schedule(requests_per_minute, clock, headroom) if requests_per_minute else None
        self._tpm = _Schedule(tokens_per_minute, clock, headroom) if tokens_per_minute else None
        self._budget = asyncio.Lock()
        self.paused_until = 0.0
        self.booked = 0
        """Requests that booked their quota and are still under way."""

    @property
    def requests_per_minute(self) -> float:
        return self._rpm.per_minute if self._rpm else 0.0

    @property
    def tokens_per_minute(self) -> float:
        return self._tpm.per_minute if self._tpm else 0.0

    def slot(self, tokens: int) -> _Slot:
        return _Slot(self, tokens)

    def start_delay(self, queued: int) -> float:
        """Seconds until one more request could leave when ``queued`` requests are ahead of
        it that have not booked their quota yet: pauses plus the requests/min schedule.
        What a pool routes on."""
        wait = max(0.0, self.paused_until - self._clock())
        if self._rpm is not None:
            wait = max(wait, self._rpm.wait_time()) + max(0, queued) * self._rpm.interval
        return wait

    async def _acquire(self, tokens: int) -> None:
        await self._admit(tokens)
        self.booked += 1

    async def _admit(self, tokens: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < max(1, math.floor(self.limit)))
            self.in_flight += 1
        try:
            # One waiter at a time books quota, so requests leave in order.
            async with self._budget:
                while True:
                    wait = max(self.paused_until - self._clock(), 0.0)
                    if self._rpm is not None:
                        wait = max(wait, self._rpm.wait_time())
                    if self._tpm is not None:
                        wait = max(wait, self._tpm.wait_time())
                    if wait <= 0:
                        break
                    await self._sleep(wait)
                if self._rpm is not None:
                    self._rpm.take(1)
                if self._tpm is not None:
                    self._tpm.take(tokens)
        except BaseException:
            await self._release()
            raise

    async def _release(self) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def billed(self, estimated: int, actual: int) -> None:
        """The service billed ``actual`` tokens for a request paced as ``estimated``."""
        if self._tpm is not None and actual != estimated:
            self._tpm.correct(actual - estimated)

    def adopt_limits(self, requests_per_minute: int | None, tokens_per_minute: int | None) -> None:
        """Pace to the limits the service reports when none were configured."""
        if self._rpm is None and requests_per_minute and requests_per_minute > 0:
            self._rpm = _Schedule(requests_per_minute, self._clock, self._headroom)
        if self._tpm is None and tokens_per_minute and tokens_per_minute > 0:
            self._tpm = _Schedule(tokens_per_minute, self._clock, self._headroom)

    def on_remaining(
        self,
        requests_left: int | None,
        tokens_left: int | None,
        requests_limit: int | None,
        tokens_limit: int | None,
    ) -> None:
        """Slow down before the quota runs out: once the service says none is left (tokens
        can be overdrawn below zero), wait until what was overdrawn has flowed back."""
        wait = 0.0
        if tokens_left is not None and tokens_left <= 0:
            per_minute = tokens_limit or self.tokens_per_minute
            if per_minute:
                wait = (1 - tokens_left) * 60.0 / per_minute
        if requests_left is not None and requests_left <= 0:
            per_minute = requests_limit or self.requests_per_minute
            if per_minute:
                wait = max(wait, 60.0 / per_minute)
        if wait > 0:
            self.paused_until = max(self.paused_until, self._clock() + wait)

    def on_success(self) -> None:
        if self.limit < self.max_concurrency:
            self.limit = min(float(self.max_concurrency), self.limit + 1.0 / self.limit)

    def on_throttled(self, retry_after: float) -> None:
        """A 429 arrived: pause everyone until ``retry_after`` has passed and back off."""
        self.paused_until = max(self.paused_until, self._clock() + retry_after)
        self.limit = max(1.0, self.limit / 2.0)


class _Slot:
    def __init__(self, pacer: Pacer, tokens: int) -> None:
        self._pacer = pacer
        self._tokens = tokens

    async def __aenter__(self) -> None:
        await self._pacer._acquire(self._tokens)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pacer.booked -= 1
        await self._pacer._release()
