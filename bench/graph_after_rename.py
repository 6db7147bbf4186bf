"""Search from a fresh process after a folder rename, beside the same index with its graph.

A rename rewrites every point fast (each vector is reused; nothing is embedded), from a
short-lived command. This bench plays that on the store itself, each step in its own
process as a user's commands would run:

1. ``N`` points under ``2024/`` are written and their HNSW graph built (the baseline);
2. a fresh process searches: the p50 **with the graph**;
3. a short-lived writer moves every point to ``2024-trip/`` (new ids, the same vectors,
   in batches of 256 like the ingest) and exits: a build goes on after it (edge_builds.py);
4. a fresh process searches at once, while that build runs: the p50 **during the build**;
5. a fresh process adopts the build, waits for it, and searches: the p50 **after it**.

Prints JSON. ``python -m bench.graph_after_rename [--sizes 10000,100000]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from imgrag.connectors.index import CollectionSpec, Point
from imgrag.connectors.stores import EdgeIndex
from imgrag.pipeline.keys import point_id

from bench.search_latency import graph_up

DIM = 1024
QUERIES = 200
SPEC = CollectionSpec(name="bench", model="tiny", dimension=DIM, provider="tiny")
ROOT = Path(__file__).resolve().parents[1]


def _payload(folder: str, i: int) -> dict[str, object]:
    return {"path": f"{folder}/img{i}.png", "folder": folder, "sha256": f"{i:064x}"}


def write(store: Path, n: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    index = EdgeIndex(store)
    index.ensure_collection(SPEC)
    for start in range(0, n, 1000):
        vectors = rng.standard_normal((min(1000, n - start), DIM)).astype(np.float32)
        index.upsert(
            [
                Point(
                    id=point_id("bench", f"2024/img{i}.png"),
                    vector=v.tolist(),
                    payload=_payload("2024", i),
                )
                for i, v in zip(range(start, start + len(vectors)), vectors, strict=True)
            ]
        )
    t = time.perf_counter()
    graph = graph_up(index)
    index.close()
    return {"graph_build_seconds": round(time.perf_counter() - t, 1), "in_graph": graph.in_graph}


def rename(store: Path, n: int) -> dict[str, object]:
    """The rename's writes: reuse each vector under the new name, drop the old point."""
    index = EdgeIndex(store)
    index.ensure_collection(SPEC)
    t = time.perf_counter()
    for start in range(0, n, 256):
        rows = range(start, min(n, start + 256))
        old = [point_id("bench", f"2024/img{i}.png") for i in rows]
        points = []
        for i, pid in zip(rows, old, strict=True):
            vector = index.vector_by_id(pid)
            assert vector is not None
            points.append(
                Point(
                    id=point_id("bench", f"2024-trip/img{i}.png"),
                    vector=vector,
                    payload=_payload("2024-trip", i),
                )
            )
        index.upsert(points)
        index.delete_ids(old)
    written = time.perf_counter() - t
    t = time.perf_counter()
    index.close()
    return {"write_seconds": round(written, 1), "close_seconds": round(time.perf_counter() - t, 2)}


def search(store: Path, wait: bool) -> dict[str, object]:
    """A fresh process's searches (this runs in the child)."""
    index = EdgeIndex(store)
    index.ensure_collection(SPEC)
    waited = 0.0
    if wait:
        t = time.perf_counter()
        graph_up(index)
        waited = time.perf_counter() - t
    graph = index.graph_status()
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((QUERIES + 10, DIM)).astype(np.float32).tolist()
    samples = []
    for k, q in enumerate(queries):
        t = time.perf_counter()
        index.search(q, limit=10)
        if k >= 10:
            samples.append(time.perf_counter() - t)
    index.close()
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 2),
        "in_graph": graph.in_graph,
        "outside": graph.outside,
        "building": graph.building,
        "waited_for_build_seconds": round(waited, 1),
    }


def _child(step: str, store: Path, n: int) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.graph_after_rename", "--step", step, str(store), str(n)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    found: dict[str, object] = json.loads(proc.stdout)
    return found


def run(n: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        row: dict[str, object] = {"points": n, "written": _child("write", store, n)}
        base = _child("search", store, n)
        row["with_graph"] = base
        row["rename"] = _child("rename", store, n)
        during = _child("search", store, n)
        after = _child("search-after-build", store, n)
        row["fresh_during_build"] = during
        row["fresh_after_build"] = after
        p50 = float(str(base["p50_ms"]))
        row["ratio_during_build_to_graph"] = round(float(str(during["p50_ms"])) / p50, 2)
        row["ratio_after_build_to_graph"] = round(float(str(after["p50_ms"])) / p50, 2)
        return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--step", nargs=3, metavar=("STEP", "STORE", "N"))
    args = parser.parse_args()
    if args.step:
        step, store, n = args.step[0], Path(args.step[1]), int(args.step[2])
        if step == "write":
            out = write(store, n)
        elif step == "rename":
            out = rename(store, n)
        else:
            out = search(store, wait=step == "search-after-build")
        print(json.dumps(out))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(
        json.dumps(
            {
                "benchmark": "graph_after_rename",
                "dimension": DIM,
                "queries": QUERIES,
                "rows": [run(n) for n in sizes],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
