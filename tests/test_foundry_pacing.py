"""Client-side pacing with an injected clock: the quota is met, not exceeded."""

from __future__ import annotations

import asyncio

from imgrag.connectors.foundry.pacing import Pacer

from tests.foundry_helpers import FakeTime


async def _run(pacer: Pacer, n: int, tokens: int, t: FakeTime) -> list[float]:
    starts: list[float] = []

    async def one() -> None:
        async with pacer.slot(tokens):
            starts.append(t.now)

    await asyncio.gather(*(one() for _ in range(n)))
    return starts


async def test_requests_per_minute_bursts_ten_seconds_then_paces() -> None:
    t = FakeTime()
    pacer = Pacer(max_concurrency=64, requests_per_minute=60, clock=t.clock, sleep=t.sleep)
    starts = await _run(pacer, 25, 1, t)
    began = starts[0]
    offsets = [s - began for s in starts]
    assert offsets[:10] == [0.0] * 10  # ten seconds' worth at once
    # then one per second, never faster than the quota
    assert offsets[10:] == [float(i) for i in range(1, 16)]
    assert max(offsets) == 15.0


async def test_tokens_per_minute_counts_image_tokens() -> None:
    t = FakeTime()
    pacer = Pacer(max_concurrency=8, tokens_per_minute=60_000, clock=t.clock, sleep=t.sleep)
    starts = await _run(pacer, 20, 1000, t)
    offsets = [s - starts[0] for s in starts]
    # 1,000 tokens/s refill, 10,000 burst: 10 at once, then one per second
    assert offsets[9] == 0.0 and offsets[10] == 1.0 and offsets[-1] == 10.0
    # over any window the tokens spent stay within burst + rate * window
    assert 10_000 + 1000 * offsets[-1] >= 20 * 1000


async def test_concurrency_limit_and_backoff_after_throttling() -> None:
    t = FakeTime()
    pacer = Pacer(max_concurrency=4, clock=t.clock, sleep=t.sleep)
    peak = 0
    gate = asyncio.Event()

    async def one() -> None:
        nonlocal peak
        async with pacer.slot(1):
            peak = max(peak, pacer.in_flight)
            await gate.wait()

    tasks = [asyncio.create_task(one()) for _ in range(10)]
    while pacer.in_flight < 4:
        await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    assert peak == 4

    pacer.on_throttled(3.0)
    assert pacer.limit == 2.0
    starts = await _run(pacer, 1, 1, t)
    assert starts[0] >= t.now - 0.001 and t.sleeps[-1] == 3.0  # everyone waited for Retry-After
    for _ in range(10):
        pacer.on_success()
    assert pacer.limit == 4.0  # grows back to the configured maximum, not beyond
