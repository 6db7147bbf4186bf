"""Client-side pacing: concurrency, requests/min and tokens/min, with adaptive backing-off.

A long backfill should run at the deployment's quota instead of bouncing off it. Two token
buckets (requests and tokens) hold ten seconds' worth of quota each, the way Azure spreads a
per-minute quota over shorter windows; a 429 pauses every sender until its Retry-After and
halves the concurrency limit, which then grows back by one per limit successes (AIMD).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from types import TracebackType

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_BURST_SECONDS = 10.0


class _Bucket:
    """A token bucket refilled continuously at ``per_minute / 60`` per second."""

    def __init__(self, per_minute: float, clock: Clock) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * _BURST_SECONDS)
        self.level = self.capacity
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` can be taken (0 when it can be taken now)."""
        self._refill()
        # A request larger than the burst capacity waits for a full bucket, then goes.
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount


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
    ) -> None:
        self.max_concurrency = max_concurrency
        self.limit = float(max_concurrency)
        self.in_flight = 0
        self._clock = clock
        self._sleep = sleep
        self._cond = asyncio.Condition()
        self._rpm = _Bucket(requests_per_minute, clock) if requests_per_minute else None
        self._tpm = _Bucket(tokens_per_minute, clock) if tokens_per_minute else None
        self._budget = asyncio.Lock()
        self.paused_until = 0.0

    def slot(self, tokens: int) -> _Slot:
        return _Slot(self, tokens)

    async def _acquire(self, tokens: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < max(1, math.floor(self.limit)))
            self.in_flight += 1
        try:
            # One waiter at a time takes from the buckets, so requests leave in order.
            async with self._budget:
                while True:
                    wait = max(self.paused_until - self._clock(), 0.0)
                    if self._rpm is not None:
                        wait = max(wait, self._rpm.wait_time(1))
                    if self._tpm is not None:
                        wait = max(wait, self._tpm.wait_time(tokens))
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
        await self._pacer._release()
