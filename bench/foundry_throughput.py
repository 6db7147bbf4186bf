"""Images/s through the Foundry client against the emulator at 100 ms latency, one image per
request (Cohere-embed-v3 profile), for concurrency 1, 8 and 32. Prints JSON."""

from __future__ import annotations

import asyncio
import json
import time

from imgrag.connectors.config import EmbedderConfig
from imgrag.connectors.foundry import FoundryEmbedder
from pydantic import SecretStr

from bench._emulator import EmulatorProcess, distinct_images, emulator_process

LATENCY_MS = 100
CONCURRENCY = (1, 8, 32)


async def _run(server: EmulatorProcess, concurrency: int, n: int) -> dict[str, float]:
    url = server.url
    emb = FoundryEmbedder(
        EmbedderConfig(
            provider="foundry",
            endpoint=url,
            api_key=SecretStr("bench-key"),
            max_concurrency=concurrency,
        )
    )
    items = distinct_images(n)
    await emb.embeddistinct_images(items[:concurrency], "document")  # warm connections
    start, cpu_start, server_start = time.perf_counter(), time.process_time(), server.cpu_seconds()
    out = await emb.embeddistinct_images(items, "document")
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    server_cpu = server.cpu_seconds() - server_start
    await emb.aclose()
    assert len(out) == n
    ips = n / elapsed
    ceiling = concurrency * 1000 / LATENCY_MS
    return {
        "concurrency": concurrency,
        "images": n,
        "seconds": round(elapsed, 3),
        "images_per_s": round(ips, 1),
        "ceiling_images_per_s": ceiling,
        "fraction_of_ceiling": round(ips / ceiling, 3),
        "client_cpu_ms_per_image": round(cpu * 1000 / n, 2),
        "emulator_cpu_ms_per_image": round(server_cpu * 1000 / n, 2),
        "requests": emb.usage.requests,
        "retries": emb.usage.retries,
    }


async def main() -> dict[str, object]:
    runs = []
    with emulator_process(
        api_key="bench-key", backend="tiny", latency_ms=LATENCY_MS, jitter=0.1
    ) as server:
        for c in CONCURRENCY:
            runs.append(await _run(server, c, max(30, c * 20)))
    baseline = runs[0]["images_per_s"]
    for r in runs:
        r["speedup_vs_concurrency_1"] = round(r["images_per_s"] / baseline, 2)
    return {
        "benchmark": "foundry_client_throughput",
        "emulator": {"model": "Cohere-embed-v3-english", "latency_ms": LATENCY_MS, "jitter": 0.1},
        "runs": runs,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=2))
