"""A backfill through the Foundry client against an emulator that enforces its request quota
over 1 s, 10 s and 60 s windows, as the service does. Prints JSON.

Run 1 (paced): the client knows the quota. Throughput is reported as a fraction of the quota
(the baseline) with the share of requests throttled.
Run 2 (hidden quota, message-only throttle): the client is told nothing; the emulator sends no
``x-ratelimit-*`` and no retry headers, only "Try again in N seconds" with N drawn from 20-40 s.
Every image must still be embedded: throttling costs time, never files.

    .venv/bin/python -m bench.foundry_quota_backfill
"""

from __future__ import annotations

import asyncio
import json
import time

from imgrag import EmbedderError
from imgrag.connectors.config import EmbedderConfig
from imgrag.connectors.embedder import ImageInput
from imgrag.connectors.foundry import FoundryEmbedder
from pydantic import SecretStr

from bench._emulator import distinct_images, emulator_process

KEY = "bench-key"
RPM = 600  # 10 per 1 s window, 100 per 10 s window
PACED_IMAGES = 300  # about 30 s at the quota
THROTTLED_IMAGES = 40
LATENCY_MS = 50


async def _backfill(url: str, n: int, **config: object) -> dict[str, object]:
    emb = FoundryEmbedder(
        EmbedderConfig(
            provider="foundry",
            endpoint=url,
            api_key=SecretStr(KEY),
            model="Cohere-embed-v3-english",
            **config,  # type: ignore[arg-type]
        )
    )
    items = distinct_images(n)
    embedded = failed = 0

    async def one(item: ImageInput) -> None:
        nonlocal embedded, failed
        try:
            await emb.embeddistinct_images([item], "document")
            embedded += 1
        except EmbedderError:
            failed += 1

    start = time.perf_counter()
    await asyncio.gather(*(one(item) for item in items))
    elapsed = time.perf_counter() - start
    usage = emb.usage
    await emb.aclose()
    return {
        "images": n,
        "embedded": embedded,
        "lost": n - embedded,
        "failed": failed,
        "seconds": round(elapsed, 2),
        "requests": usage.requests,
        "throttled": usage.throttled,
        "throttled_fraction": round(usage.throttled / max(1, usage.requests), 4),
        "requests_per_minute": round(embedded / elapsed * 60, 1),
    }


async def main() -> dict[str, object]:
    common = {"api_key": KEY, "backend": "tiny", "latency_ms": LATENCY_MS, "jitter": 0.2}
    with emulator_process(rpm=RPM, **common) as server:
        paced = await _backfill(
            server.url, PACED_IMAGES, requests_per_minute=RPM, max_concurrency=8
        )
    # Achieved rate over the quota; the first request of the run needs no wait.
    achieved = (PACED_IMAGES - 1) / float(paced["seconds"]) * 60
    paced["fraction_of_quota"] = round(achieved / RPM, 3)
    with emulator_process(
        rpm=RPM,
        retry_headers=False,
        ratelimit_headers=False,
        message_wait_s=20,
        message_wait_max_s=40,
        **common,
    ) as server:
        hidden = await _backfill(server.url, THROTTLED_IMAGES, max_concurrency=16)
    return {
        "benchmark": "foundry_quota_backfill",
        "emulator": {
            "model": "Cohere-embed-v3-english",
            "rpm": RPM,
            "windows_s": [1, 10, 60],
            "latency_ms": LATENCY_MS,
        },
        "paced": paced,
        "paced_meets_target": paced["fraction_of_quota"] >= 0.95  # type: ignore[operator]
        and paced["throttled_fraction"] < 0.01,  # type: ignore[operator]
        "message_only_throttle": {**hidden, "message_wait_s": [20, 40]},
        "message_only_throttle_lost_no_file": hidden["lost"] == 0,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=2))
