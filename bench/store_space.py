"""What the embedded store's disk-space guard costs per upsert batch.

Upserts the same batches (1024-d vectors, a typical payload, 32 per batch, as ingest sends
them) into two fresh stores in this process: one as shipped, one with the guard switched
off (free-space check and reservation replaced by no-ops), alternating batch by batch so
both see the same machine load. Also times the reservation pass alone, which runs after each
write only while the disk has less than 1 GiB free.

    python -m bench.store_space [--batches 150]

Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from imgrag.connectors.index import CollectionSpec, Point
from imgrag.connectors.stores import EdgeIndex
from imgrag.connectors.stores import edge_space as space

DIM = 1024
BATCH = 32


def batch(rng: np.random.Generator, start: int) -> list[Point]:
    vectors = rng.standard_normal((BATCH, DIM)).astype(np.float32)
    return [
        Point(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, str(start + i))),
            vector=vectors[i].tolist(),
            payload={
                "path": f"2024/summer/img{start + i}.jpg",
                "folder": "2024/summer",
                "size": 123_456,
                "mtime_ns": 1_700_000_000_000_000_000 + i,
                "sha256": "ab" * 32,
                "embed_key": "cd" * 32,
                "caption": "a dog on the beach at sunset",
            },
        )
        for i in range(BATCH)
    ]


class _Unguarded(EdgeIndex):
    def _make_room(self, need: int) -> None:
        return

    def _reserve(self) -> None:
        return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=150)
    args = parser.parse_args(argv)
    spec = CollectionSpec(name="images", model="bench", dimension=DIM)
    rng = np.random.default_rng(5)
    times: dict[str, list[float]] = {"guarded": [], "unguarded": []}
    with tempfile.TemporaryDirectory() as tmp:
        stores = {
            "guarded": EdgeIndex(Path(tmp) / "a", auto_build=False, settle_seconds=3600),
            "unguarded": _Unguarded(Path(tmp) / "b", auto_build=False, settle_seconds=3600),
        }
        for index in stores.values():
            index.ensure_collection(spec)
        for b in range(args.batches):
            points = batch(rng, b * BATCH)
            order = ("guarded", "unguarded") if b % 2 == 0 else ("unguarded", "guarded")
            for name in order:
                started = time.perf_counter()
                stores[name].upsert(points)
                times[name].append(time.perf_counter() - started)
        shard_dir = Path(tmp) / "a" / "images" / "gen-000001"
        files = sum(len(f) for _, _, f in os.walk(shard_dir))
        passes = []
        for _ in range(50):
            started = time.perf_counter()
            space.reserve(shard_dir)
            passes.append(time.perf_counter() - started)
        for index in stores.values():
            index.close()
    guarded = statistics.median(times["guarded"]) * 1000
    unguarded = statistics.median(times["unguarded"]) * 1000
    result: dict[str, Any] = {
        "batches": args.batches,
        "points_per_batch": BATCH,
        "upsert_batch_ms_p50_guarded": round(guarded, 3),
        "upsert_batch_ms_p50_unguarded": round(unguarded, 3),
        "ratio_guarded_to_unguarded": round(guarded / unguarded, 3),
        "reserve_pass_ms_p50_when_tight": round(statistics.median(passes) * 1000, 3),
        "files_in_shard": files,
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
