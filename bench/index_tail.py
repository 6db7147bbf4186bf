"""What points outside the HNSW graph cost a search of the embedded index (prints JSON).

``TAIL_POINTS`` points of 1,024 dimensions (default 20,000) are written and their graph
built; then tails of new points are written without a build, and after each the p50 of
200 searches is measured. ``exact_p50_ms`` is the same points before any graph. This is
what the build triggers trade: how long new points may wait outside a graph.

Usage: ``python -m bench.index_tail`` (``TAIL_POINTS=50000`` for the issue's size)
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from imgrag.connectors.index import CollectionSpec, Point
from imgrag.connectors.stores.edge import EdgeIndex

DIM = 1024
POINTS = int(os.environ.get("TAIL_POINTS", "20000"))
TAILS = (250, 500, 1_000, 2_000, 5_000, 10_000)


def _points(rng: np.random.Generator, start: int, stop: int) -> list[Point]:
    vectors = rng.standard_normal((stop - start, DIM)).astype(np.float32)
    return [
        Point(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{start + n}")), vector=v.tolist(), payload={}
        )
        for n, v in enumerate(vectors)
    ]


def _p50(index: EdgeIndex, queries: np.ndarray) -> float:
    times = []
    for q in queries:
        started = time.perf_counter()
        index.search(q.tolist(), limit=10)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def main() -> None:
    rng = np.random.default_rng(1)
    queries = np.random.default_rng(2).standard_normal((200, DIM)).astype(np.float32)
    out: dict[str, object] = {"points": POINTS, "dimension": DIM}
    with tempfile.TemporaryDirectory() as tmp:
        index = EdgeIndex(Path(tmp) / "store", auto_build=False)
        index.ensure_collection(CollectionSpec(name="images", model="m", dimension=DIM))
        for start in range(0, POINTS, 1000):
            index.upsert(_points(rng, start, min(POINTS, start + 1000)))
        out["exact_p50_ms"] = _p50(index, queries)
        started = time.monotonic()
        index.request_index_build()
        index.wait_for_build(3600)
        out["build_seconds"] = round(time.monotonic() - started, 1)
        out["indexed"] = index.status().indexed
        out["built_p50_ms"] = _p50(index, queries)
        have = POINTS
        tails = {}
        for tail in TAILS:
            index.upsert(_points(rng, have, POINTS + tail))
            have = POINTS + tail
            tails[str(tail)] = _p50(index, queries)
        out["p50_ms_with_tail_outside_graph"] = tails
        index.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
