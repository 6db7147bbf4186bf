"""Client-side pacing with an injected clock: the quota is met, not exceeded, and never in a
burst.

The service evaluates a per-minute request quota over 1 s and 10 s windows (Azure OpenAI
quota docs, "rate limits ... evaluated over 1 or 10 second windows"), so requests must leave
evenly spaced rather than a tenth of a minute's quota at once.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from imgrag.connectors.foundry.pacing import HEADROOM, Pacer

from tests.foundry_helpers import FakeTime


async def _run(pacer: Pacer, tokens: list[int], t: FakeTime) -> list[float]:
    starts: list[float] = []

    async def one(n: int) -> None:
        async with pacer.slot(n):
            starts.append(t.now)

    await asyncio.gather(*(one(n) for n in tokens))
    return starts


async def test_requests_leave_evenly_spaced_just_under_the_quota() -> None:
    t = FakeTime()
    pacer = Pacer(max_concurrency=64, requests_per_minute=60, clock=t.clock, sleep=t.sleep)
    starts = await _run(pacer, [1] * 25, t)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # No two requests in one 1 s window: 60 RPM allows one per second.
    assert min(gaps) >= 1.0
    assert gaps == [pytest.approx(1 / HEADROOM)] * 24
    rate = 24 / (starts[-1] - starts[0]) * 60
    assert 0.95 * 60 <= rate <= 60


async def test_tokens_per_minute_are_spent_evenly_and_corrected_by_what_was_billed() -> None:
    t = FakeTime()
    pacer = Pacer(max_concurrency=1, tokens_per_minute=60_000, clock=t.clock, sleep=t.sleep)
    starts = await _run(pacer, [1000] * 10, t)
    spent = [1000] * 10
    # Over any 60 s the tokens started stay within the quota...
    for i, s in enumerate(starts):
        assert sum(n for n, w in zip(spent, starts, strict=True) if s <= w < s + 60) <= 60_000
        assert i == 0 or starts[i] - starts[i - 1] == pytest.approx(1 / HEADROOM)
    # ...and a request billed at 3,000 instead of 1,000 pushes the next one back by 2,000.
    before = t.now
    pacer.billed(1000, 3000)
    [after] = await _run(pacer, [1000], t)
    assert after - before == pytest.approx(3 / HEADROOM)


async def test_limits_reported_by_the_service_are_adopted_and_an_overdraft_waits() -> None:
    t = FakeTime()
    pacer = Pacer(max_concurrency=8, clock=t.clock, sleep=t.sleep)
    pacer.adopt_limits(requests_per_minute=None, tokens_per_minute=6000)
    pacer.on_remaining(None, -499, None, 6000)  # 500 tokens overdrawn: 5 s to flow back
    began = t.now
    [first] = await _run(pacer, [100], t)
    assert first - began == pytest.approx(5.0)
    [second] = await _run(pacer, [100], t)
    assert second - first == pytest.approx(100 * 60 / (6000 * HEADROOM))


async def _peak(pacer: Pacer, n: int) -> int:
    """Run ``n`` senders that each hold their slot until all have tried; the peak in flight."""
    peak = 0
    release = asyncio.Event()
    entered = 0

    async def one() -> None:
        nonlocal peak, entered
        async with pacer.slot(1):
            entered += 1
            peak = max(peak, pacer.in_flight)
            await release.wait()

    tasks = [asyncio.create_task(one()) for _ in range(n)]

    async def settled() -> None:
        while entered < min(n, max(1, int(pacer.limit))):
            await asyncio.sleep(0)

    await asyncio.wait_for(settled(), timeout=5)
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    return peak


async def test_concurrency_limit_and_backoff_after_throttling() -> None:
    t = FakeTime()
    pacer = Pacer(max_concurrency=4, clock=t.clock, sleep=t.sleep)
    assert await _peak(pacer, 10) == 4

    throttled_at = t.now
    pacer.on_throttled(3.0)
    [start] = await _run(pacer, [1], t)
    assert start >= throttled_at + 3.0  # the next sender waited out the Retry-After
    assert await _peak(pacer, 10) == 2  # and concurrency was halved

    for _ in range(10):
        pacer.on_success()
    assert await _peak(pacer, 10) == 4  # grows back to the configured maximum, not beyond
