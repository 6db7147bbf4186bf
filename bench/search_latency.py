"""Search latency without the remote embedding call, at 10k and 100k points, directly and
through the daemon's local API (a separate process serving the same app). Prints JSON."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from imgrag.connectors.config import StoreConfig
from imgrag.connectors.index import CollectionSpec, GraphStatus, Index, Point
from imgrag.connectors.paths import StatePaths
from imgrag.connectors.stores import EdgeIndex, open_index
from imgrag.pipeline.keys import point_id
from qdrant_client.http import models as qm

DIM = 1024
QUERIES = 200
SIZES = (10_000, 100_000)
SPEC = CollectionSpec(name="bench", model="tiny", dimension=DIM, provider="tiny")

_SERVER = """
import sys
from pathlib import Path
import uvicorn
from imgrag.connectors.config import StoreConfig
from imgrag.connectors.tiny import TinyEmbedder
from imgrag.pipeline.api import create_api
from imgrag.pipeline.config import Settings
from imgrag.pipeline.core import Core
from imgrag.pipeline.door import LocalDoor
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.runtime import Runtime
from bench.search_latency import SPEC

core = Core.build(Settings(state_dir=Path(sys.argv[1]), store=StoreConfig(collection="bench")))
index = core.open_index()
index.ensure_collection(SPEC)
door = LocalDoor(core, runtime=Runtime(core, TinyEmbedder(1024), index, core.open_journal()))
app = create_api(door, Metrics(door.status_now))
config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
uvicorn.Server(config).run()
"""


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 2),
    }


def build(state: Path, n: int, rng: np.random.Generator) -> list[str]:
    index = open_index(StoreConfig(collection="bench"), StatePaths.under(state))
    index.ensure_collection(SPEC)
    ids: list[str] = []
    for start in range(0, n, 1000):
        vectors = rng.standard_normal((min(1000, n - start), DIM)).astype(np.float32)
        points = []
        for k, vec in enumerate(vectors):
            i = start + k
            pid = point_id("bench", f"f{i % 100}/img{i}.png")
            ids.append(pid)
            points.append(
                Point(
                    id=pid,
                    vector=vec.tolist(),
                    payload={
                        "path": f"f{i % 100}/img{i}.png",
                        "folder": f"f{i % 100}",
                        "sha256": f"{i:064x}",
                        "size": i,
                        "mtime_ns": i,
                        "embed_key": f"k{i}",
                        "tags": ["even" if i % 2 else "odd"],
                    },
                )
            )
        index.upsert(points)
    graph_up(index)
    index.close()
    return ids


def graph_up(index: Index) -> GraphStatus:
    """Measure the steady state: every point in the HNSW graph (edge builds it in a child
    process). The threshold may have started a build already, which a request does not
    replace: wait for whatever runs, then build again until the graph covers the points."""
    for _ in range(5):
        graph = index.graph_status()
        if graph.outside <= graph.points // 100 and not graph.building:
            return graph
        if isinstance(index, EdgeIndex):
            index.request_index_build()  # False while one runs: then it is waited for
            if not index.wait_for_build(timeout=1800):
                raise RuntimeError("the HNSW build did not finish in 30 minutes")
    raise RuntimeError(f"the graph covers only {graph.in_graph} of {graph.points} points")


async def direct(state: Path, ids: list[str], rng: np.random.Generator) -> dict[str, object]:
    """The store's search as the service calls it (in a worker thread), given the vector."""
    from imgrag.pipeline.filters import build_filter

    index = open_index(StoreConfig(collection="bench"), StatePaths.under(state))
    index.ensure_collection(SPEC)
    graph = graph_up(index)  # what is measured is the graph, not a scan of the tail
    folder = build_filter({"folder": "f7"})

    async def search(vector: list[float], flt: qm.Filter | None = None) -> None:
        await asyncio.to_thread(lambda: index.search(vector, limit=10, filter=flt))

    queries = rng.standard_normal((QUERIES, DIM)).astype(np.float32).tolist()
    for q in queries[:10]:  # warm up (and let a background index build finish)
        await search(q)
    plain, filtered = [], []
    for q in queries:
        t = time.perf_counter()
        await search(q)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        await search(q, folder)
        filtered.append(time.perf_counter() - t)
    index.close()
    return {
        "no_filter": percentiles(plain),
        "folder_filter": percentiles(filtered),
        "graph": {"points": graph.points, "in_graph": graph.in_graph},
    }


def wait_serving(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Return once the API server at ``url`` answers ``/health``; fail if it exits first."""
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(f"{url}/health", timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the API server did not start") from None
            time.sleep(0.1)


def through_api(state: Path, ids: list[str]) -> dict[str, object]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(state), str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, proc)
        samples: list[float] = []
        with httpx.Client(base_url=url, timeout=30) as http:
            for i in range(min(len(ids), QUERIES + 10)):
                path = f"f{i % 100}/img{i}.png"
                t = time.perf_counter()
                r = http.post("/search", json={"similar_to": path, "limit": 10})
                r.raise_for_status()
                if i >= 10:
                    samples.append(time.perf_counter() - t)
        return {"similar_to_no_filter": percentiles(samples)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> dict[str, object]:
    rng = np.random.default_rng(0)
    out: dict[str, object] = {"benchmark": "search_latency", "dimension": DIM, "queries": QUERIES}
    for n in SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp)
            t = time.perf_counter()
            ids = build(state, n, rng)
            build_s = time.perf_counter() - t
            out[f"points_{n}"] = {
                "build_seconds": round(build_s, 1),
                "direct": asyncio.run(direct(state, ids, rng)),
                "daemon_api": through_api(state, ids),
            }
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
