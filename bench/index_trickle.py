"""Search latency of the embedded index under a steady trickle of writes (prints JSON).

The issue's case is 50,000 points written one every 0.2-0.5 s (hours). Scaled to minutes:
5,000 points of 1,024 dimensions, one every 20 ms, with the build rule's thresholds scaled
too: ``index_threshold`` 1,000 (default 20,000; a graph needs a quarter of it),
``build_after_seconds`` 5 (default 60), ``settle_seconds`` 2 (the default, never reached
at this rate). Every 0.5 s the main thread times 20 searches; the reference is the p50 of
the same collection once fully built, and ``no_build_p50_ms`` is the exact scan the old
rule (build only after 2 s of quiet) leaves under a trickle, measured on the same points.

``TRICKLE_POINTS``, ``TRICKLE_INTERVAL`` (seconds), ``TRICKLE_THRESHOLD`` and
``TRICKLE_BUILD_AFTER`` (seconds) change the size, the rate and the two triggers, e.g.
``TRICKLE_POINTS=50000 TRICKLE_THRESHOLD=20000 TRICKLE_BUILD_AFTER=60`` for the issue's
size with the store's default triggers.

Usage: ``python -m bench.index_trickle``
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from imgrag.connectors.index import CollectionSpec, Point
from imgrag.connectors.stores.edge import EdgeIndex

DIM = 1024
POINTS = int(os.environ.get("TRICKLE_POINTS", "5000"))
INTERVAL = float(os.environ.get("TRICKLE_INTERVAL", "0.02"))
THRESHOLD = int(os.environ.get("TRICKLE_THRESHOLD", "1000"))
BUILD_AFTER = float(os.environ.get("TRICKLE_BUILD_AFTER", "5"))
SETTLE = 2.0
SEARCHES = 20


def _points(seed: int) -> list[Point]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((POINTS, DIM)).astype(np.float32)
    return [
        Point(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{n}")), vector=v.tolist(), payload={})
        for n, v in enumerate(vectors)
    ]


def _p50(index: EdgeIndex, queries: np.ndarray, count: int) -> float:
    times = []
    for q in queries[:count]:
        started = time.perf_counter()
        index.search(q.tolist(), limit=10)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _trickle(index: EdgeIndex, points: list[Point], done: threading.Event) -> None:
    next_at = time.monotonic()
    for p in points:
        next_at += INTERVAL
        index.upsert([p])
        # Paces the source at its rate; nothing waits on this thread but the final join.
        time.sleep(max(0.0, next_at - time.monotonic()))
    done.set()


def main() -> None:
    points = _points(1)
    queries = np.random.default_rng(2).standard_normal((200, DIM)).astype(np.float32)
    timeline: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        index = EdgeIndex(
            Path(tmp) / "trickle",
            index_threshold=THRESHOLD,
            settle_seconds=SETTLE,
            build_after_seconds=BUILD_AFTER,
        )
        index.ensure_collection(CollectionSpec(name="images", model="m", dimension=DIM))
        done = threading.Event()
        writer = threading.Thread(target=_trickle, args=(index, points, done), daemon=True)
        started = time.monotonic()
        writer.start()
        while not done.wait(0.5):
            status = index.status()
            timeline.append(
                {
                    "t": round(time.monotonic() - started, 1),
                    "points": status.points,
                    "outside_graph": status.points - status.indexed,
                    "building": status.building,
                    "builds": status.builds,
                    "p50_ms": round(_p50(index, queries, SEARCHES), 3),
                }
            )
        writer.join()
        index.wait_for_build(timeout=600)
        index.request_index_build()
        index.wait_for_build(timeout=600)
        full = _p50(index, queries, len(queries))
        index.close()

        # What the old rule leaves under a trickle: no graph, every search an exact scan.
        exact = EdgeIndex(Path(tmp) / "exact", auto_build=False)
        exact.ensure_collection(CollectionSpec(name="images", model="m", dimension=DIM))
        for start in range(0, POINTS, 256):
            exact.upsert(points[start : start + 256])
        no_build = _p50(exact, queries, len(queries))
        exact.close()

    after = [w for w in timeline if w["builds"] >= 1]
    first = after[0]["t"] if after else None
    worst = max((w["p50_ms"] for w in after), default=None)
    print(
        json.dumps(
            {
                "points": POINTS,
                "dimension": DIM,
                "interval_ms": INTERVAL * 1000,
                "index_threshold": THRESHOLD,
                "build_after_seconds": BUILD_AFTER,
                "settle_seconds": SETTLE,
                "first_build_done_at_s": first,
                "builds": timeline[-1]["builds"] if timeline else 0,
                "max_outside_graph_after_first_build": max(
                    (w["outside_graph"] for w in after), default=None
                ),
                "full_index_p50_ms": round(full, 3),
                "no_build_p50_ms": round(no_build, 3),
                "worst_window_p50_after_first_build_ms": worst,
                "median_window_p50_after_first_build_ms": (
                    round(statistics.median(w["p50_ms"] for w in after), 3) if after else None
                ),
                "worst_ratio_to_full": round(worst / full, 2) if worst else None,
                "windows_after_first_build": len(after),
                "windows_over_2x_full": sum(1 for w in after if w["p50_ms"] > 2 * full),
                "windows_over_2x_while_building": sum(
                    1 for w in after if w["p50_ms"] > 2 * full and w["building"]
                ),
                "timeline_every_10th": timeline[::10],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
