"""A backfill through a pool of three deployments, each an emulator process with its own
requests/min quota enforced over 1 s and 10 s windows. Prints JSON.

Phases: all three serve; the second is stopped (nothing may be lost, throughput should
settle at the two remaining quotas); it is started again on the same port (the pool must
probe it and use it again). The timeline gives per-second completions per deployment.

    .venv/bin/python -m bench.foundry_pool
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from contextlib import ExitStack
from urllib.parse import urlsplit

from imgrag import EmbedderError
from imgrag.connectors.config import DeploymentConfig, EmbedderConfig
from imgrag.connectors.embedder import ImageInput
from imgrag.connectors.foundry import FoundryPool
from PIL import Image
from pydantic import SecretStr

from bench._emulator import emulator_process

KEY = "bench-key"
RPMS = [300, 600, 900]  # 5, 10 and 15 requests per second; 30 in all
LATENCY_MS = 50
STOP_AT = 40.0
RESTART_AT = 90.0
END_AT = 150.0
WARMUP = 5.0
SETTLE = 10.0
"""Seconds after a change before its steady rate is measured."""


def _image(i: int) -> ImageInput:
    img = Image.new("RGB", (64, 48), ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return ImageInput(buf.getvalue())


def _rate(timeline: list[list[int]], start: float, end: float) -> float:
    """Completions per minute over whole seconds [start, end)."""
    rows = timeline[int(start) : int(end)]
    return sum(sum(r) for r in rows) / max(1, len(rows)) * 60


async def _run(stack: ExitStack) -> dict[str, object]:
    common = {"api_key": KEY, "backend": "tiny", "latency_ms": LATENCY_MS, "jitter": 0.2}
    windows = {"rate_windows": [1.0, 10.0]}
    victim = ExitStack()  # the second deployment, stopped mid-run
    servers = [
        (victim if i == 1 else stack).enter_context(emulator_process(rpm=r, **common, **windows))
        for i, r in enumerate(RPMS)
    ]
    port = urlsplit(servers[1].url).port
    pool = FoundryPool(
        EmbedderConfig(
            provider="foundry",
            api_key=SecretStr(KEY),
            max_concurrency=8,
            deployments=[
                DeploymentConfig(name=f"d{i}", endpoint=s.url, requests_per_minute=rpm)
                for i, (s, rpm) in enumerate(zip(servers, RPMS, strict=True))
            ],
        )
    )
    await pool.probe()
    submitted = embedded = failed = 0
    started = time.monotonic()
    stop = asyncio.Event()

    async def worker(w: int) -> None:
        nonlocal submitted, embedded, failed
        i = w
        while not stop.is_set():
            submitted += 1
            try:
                await pool.embed_images([_image(i)], "document")
                embedded += 1
            except EmbedderError:
                failed += 1
            i += 100

    timeline: list[list[int]] = []
    health: list[list[bool]] = []

    async def sample() -> None:
        last = [0, 0, 0]
        tick = started
        while not stop.is_set():
            tick += 1.0
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            now = [d.images for d in pool.usage.deployments]
            timeline.append([a - b for a, b in zip(now, last, strict=True)])
            health.append([d.healthy for d in pool.usage.deployments])
            last = now

    workers = [asyncio.create_task(worker(w)) for w in range(pool.info.recommended_concurrency)]
    sampler = asyncio.create_task(sample())
    await asyncio.sleep(STOP_AT)
    stopped_at = time.monotonic() - started
    # Starting and stopping processes block: in a thread, so the pool keeps working.
    await asyncio.to_thread(victim.close)  # the second deployment goes away mid-run
    await asyncio.sleep(RESTART_AT - (time.monotonic() - started))
    back = await asyncio.to_thread(
        stack.enter_context, emulator_process(rpm=RPMS[1], port=port, **common, **windows)
    )
    await asyncio.sleep(END_AT - (time.monotonic() - started))
    stop.set()
    await asyncio.gather(*workers, sampler)
    usage = pool.usage
    await pool.aclose()
    returned_at = next((t for t, h in enumerate(health) if t >= RESTART_AT and h[1]), None)
    total = sum(RPMS)
    remaining = total - RPMS[1]
    all_rate = _rate(timeline, WARMUP, STOP_AT)
    down_rate = _rate(timeline, STOP_AT + SETTLE, RESTART_AT)
    after = (returned_at or END_AT) + SETTLE
    back_rate = _rate(timeline, after, END_AT - 1)
    return {
        "benchmark": "foundry_pool",
        "emulators": {
            "rpm": RPMS,
            "windows_s": [1, 10],
            "latency_ms": LATENCY_MS,
            "restarted_url": back.url,
        },
        "phases_s": {"stop": round(stopped_at, 1), "restart": RESTART_AT, "end": END_AT},
        "submitted": submitted,
        "embedded": embedded,
        "failed": failed,
        "lost": submitted - embedded,
        "all_three": {
            "rpm": round(all_rate, 1),
            "fraction_of_summed_quota": round(all_rate / total, 3),
        },
        "one_stopped": {
            "rpm": round(down_rate, 1),
            "fraction_of_remaining_quota": round(down_rate / remaining, 3),
            "stopped_deployment_rpm": round(
                sum(r[1] for r in timeline[int(STOP_AT + SETTLE) : int(RESTART_AT)])
                * 60
                / max(1, int(RESTART_AT) - int(STOP_AT + SETTLE)),
                1,
            ),
        },
        "restarted": {
            "back_in_service_after_s": None if returned_at is None else returned_at - RESTART_AT,
            "rpm": round(back_rate, 1),
            "fraction_of_summed_quota": round(back_rate / total, 3),
            "restarted_deployment_rpm": round(
                sum(r[1] for r in timeline[int(after) : int(END_AT - 1)])
                * 60
                / max(1, int(END_AT - 1) - int(after)),
                1,
            ),
        },
        "throttled": usage.throttled,
        "deployments": [d.model_dump() for d in usage.deployments],
        "meets_target": all_rate / total >= 0.9 and submitted == embedded,
        "timeline_per_second": timeline,
    }


async def main() -> dict[str, object]:
    with ExitStack() as stack:
        return await _run(stack)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
