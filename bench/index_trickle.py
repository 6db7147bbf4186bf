"""Search latency of the embedded index under a steady trickle of writes (prints JSON).

The issue's case is 50,000 points written one every 0.2-0.5 s (hours). Scaled to minutes:
5,000 points of 1,024 dimensions, one every 20 ms, with the build rule's thresholds scaled
too: ``index_threshold`` 1,000 (default 20,000; a graph needs a quarter of it),
``build_after_seconds`` 5 (default 60), ``settle_seconds`` 2 (the default, never reached
at this rate).

The reference is a second index holding all the points, fully built before the trickle
starts. Every 0.5 s the main thread times 20 searches on each, alternating query by query,
so a window's ratio compares the two at the same moment of a shared machine's load.
``end_full_p50_ms`` is the trickled index once fully built at the end, and
``no_build_p50_ms`` the exact scan the old rule (build only after 2 s of quiet) left under
a trickle, on the same points.

``TRICKLE_POINTS``, ``TRICKLE_INTERVAL`` (seconds), ``TRICKLE_THRESHOLD`` and
``TRICKLE_BUILD_AFTER`` (seconds) change the size, the rate and the two triggers, e.g.
``TRICKLE_POINTS=50000 TRICKLE_THRESHOLD=20000 TRICKLE_BUILD_AFTER=60`` for the issue's
size with the store's default triggers. ``TRICKLE_PRELOAD`` points are written at once
before the trickle (a backfill that the trickle then follows), so the issue's size and
rate fit in half an hour: ``TRICKLE_POINTS=50000 TRICKLE_PRELOAD=45000
TRICKLE_INTERVAL=0.2 TRICKLE_THRESHOLD=20000 TRICKLE_BUILD_AFTER=60``.

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
PRELOAD = int(os.environ.get("TRICKLE_PRELOAD", "0"))
SETTLE = 2.0
SEARCHES = 20
SPEC = CollectionSpec(name="images", model="m", dimension=DIM)


def _points(seed: int) -> list[Point]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((POINTS, DIM)).astype(np.float32)
    return [
        Point(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{n}")), vector=v.tolist(), payload={})
        for n, v in enumerate(vectors)
    ]


def _timed(index: EdgeIndex, query: list[float]) -> float:
    started = time.perf_counter()
    index.search(query, limit=10)
    return (time.perf_counter() - started) * 1000


def _p50(index: EdgeIndex, queries: np.ndarray) -> float:
    return statistics.median(_timed(index, q.tolist()) for q in queries)


def _window(index: EdgeIndex, reference: EdgeIndex, queries: np.ndarray) -> tuple[float, float]:
    """p50 of the trickled index and of the reference, searched alternately."""
    mine, theirs = [], []
    for q in queries[:SEARCHES]:
        vector = q.tolist()
        mine.append(_timed(index, vector))
        theirs.append(_timed(reference, vector))
    return statistics.median(mine), statistics.median(theirs)


def _trickle(index: EdgeIndex, points: list[Point], done: threading.Event) -> None:
    next_at = time.monotonic()
    for p in points:
        next_at += INTERVAL
        index.upsert([p])
        # Paces the source at its rate; nothing waits on this thread but the final join.
        time.sleep(max(0.0, next_at - time.monotonic()))
    done.set()


def _built(path: Path, points: list[Point]) -> EdgeIndex:
    index = EdgeIndex(path, auto_build=False)
    index.ensure_collection(SPEC)
    for start in range(0, len(points), 256):
        index.upsert(points[start : start + 256])
    index.request_index_build()
    index.wait_for_build(timeout=3600)
    return index


def main() -> None:
    points = _points(1)
    queries = np.random.default_rng(2).standard_normal((200, DIM)).astype(np.float32)
    timeline: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        reference = _built(Path(tmp) / "reference", points)
        reference_p50 = _p50(reference, queries)
        index = EdgeIndex(
            Path(tmp) / "trickle",
            index_threshold=THRESHOLD,
            settle_seconds=SETTLE,
            build_after_seconds=BUILD_AFTER,
        )
        index.ensure_collection(SPEC)
        for start in range(0, PRELOAD, 256):
            index.upsert(points[start : min(start + 256, PRELOAD)])
        done = threading.Event()
        trickled = points[PRELOAD:]
        writer = threading.Thread(target=_trickle, args=(index, trickled, done), daemon=True)
        started = time.monotonic()
        writer.start()
        while not done.wait(0.5):
            status = index.status()
            mine, theirs = _window(index, reference, queries)
            timeline.append(
                {
                    "t": round(time.monotonic() - started, 1),
                    "points": status.points,
                    "outside_graph": status.points - status.indexed,
                    "building": status.building,
                    "builds": status.builds,
                    "p50_ms": round(mine, 3),
                    "reference_p50_ms": round(theirs, 3),
                    "ratio": round(mine / theirs, 2),
                }
            )
        writer.join()
        index.wait_for_build(timeout=3600)
        index.request_index_build()
        index.wait_for_build(timeout=3600)
        end_full = _p50(index, queries)
        index.close()
        reference.close()

        # What the old rule leaves under a trickle: no graph, every search an exact scan.
        exact = EdgeIndex(Path(tmp) / "exact", auto_build=False)
        exact.ensure_collection(SPEC)
        for start in range(0, POINTS, 256):
            exact.upsert(points[start : start + 256])
        no_build = _p50(exact, queries)
        exact.close()

    after = [w for w in timeline if w["builds"] >= 1]
    over = [w for w in after if w["ratio"] > 2]
    print(
        json.dumps(
            {
                "points": POINTS,
                "preloaded": PRELOAD,
                "dimension": DIM,
                "interval_ms": INTERVAL * 1000,
                "index_threshold": THRESHOLD,
                "build_after_seconds": BUILD_AFTER,
                "settle_seconds": SETTLE,
                "first_build_done_at_s": after[0]["t"] if after else None,
                "builds": timeline[-1]["builds"] if timeline else 0,
                "max_outside_graph_after_first_build": max(
                    (w["outside_graph"] for w in after), default=None
                ),
                "reference_p50_ms_before": round(reference_p50, 3),
                "end_full_p50_ms": round(end_full, 3),
                "no_build_p50_ms": round(no_build, 3),
                "median_window_ratio_after_first_build": (
                    round(statistics.median(w["ratio"] for w in after), 2) if after else None
                ),
                "worst_window_ratio_after_first_build": max(
                    (w["ratio"] for w in after), default=None
                ),
                "windows_after_first_build": len(after),
                "windows_over_2x": len(over),
                "windows_over_2x_while_building": sum(1 for w in over if w["building"]),
                "windows_over_2x_detail": over[:20],
                "timeline_every_10th": timeline[::10],
                "load_average_1min": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
