"""Index benchmark: the embedded store (qdrant-edge) beside qdrant-client's local mode.

For each size: upsert points/s, search p50/p95 with and without a filter, reopen time and
peak RSS, and for edge the background HNSW build time and recall@10 of HNSW against exact
search. Each load and each reopen runs in its own process so peak RSS belongs to one engine.

    python -m bench.index_bench [--sizes 10000,100000] [--kinds edge,local] [--queries 100]

Prints JSON on stdout; progress on stderr. Takes several minutes at 100k (the HNSW build
and local mode's reopen dominate).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client.http import models as qm

DIM = 1024
CLUSTERS = 256
FOLDERS = 10
BATCH = 256
SEED = 11
TARGETS = {"search_p50_ms": 5.0, "reopen_s": 1.0, "recall_at_10": 0.95}
VECTORS = (
    "clustered random 1024-d vectors (256 gaussian clusters); queries are noisy copies of "
    "stored points, like augmented duplicates. Real embeddings were not used: LocalEmbedder "
    "imports but makes 384-d vectors, and the bundled photo gallery is a few dozen images, "
    "too few for a 100k index."
)


def dataset(n: int) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    centers = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    labels = rng.integers(0, CLUSTERS, n)
    data = centers[labels] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def queries(data: np.ndarray, count: int) -> np.ndarray:
    rng = np.random.default_rng(SEED + 1)
    picks = rng.integers(0, len(data), count)
    q = data[picks] + 0.02 * rng.standard_normal((count, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def payload(i: int) -> dict[str, Any]:
    folder = f"f{i % FOLDERS}"
    return {
        "path": f"{folder}/{i}.jpg",
        "folder": folder,
        "size": 100_000 + i,
        "mtime_ns": 1_700_000_000_000_000_000 + i,
        "sha256": f"{i:064x}",
        "embed_key": f"k{i}",
    }


def point_id(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, str(i)))


def open_store(kind: str, directory: Path, n: int) -> Any:
    from imgrag.connectors.config import StoreConfig
    from imgrag.connectors.index import CollectionSpec
    from imgrag.connectors.stores import EdgeIndex, QdrantIndex

    index: Any
    if kind == "edge":
        # Builds are started by the bench (not the threshold) so exact search is measured too.
        index = EdgeIndex(directory, auto_build=False)
    else:
        index = QdrantIndex(StoreConfig(kind="qdrant"), location=directory)
    index.ensure_collection(CollectionSpec(name="bench", model="bench-model", dimension=DIM))
    return index


def timed_searches(index: Any, qs: np.ndarray, flt: qm.Filter | None) -> dict[str, Any]:
    lat, ids = [], []
    for q in qs:
        vector = q.tolist()
        t = time.perf_counter()
        hits = index.search(vector, limit=10, filter=flt)
        lat.append((time.perf_counter() - t) * 1000)
        ids.append([h.id for h in hits])
    return {
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "ids": ids,
    }


def exact_top10(data: np.ndarray, qs: np.ndarray, mask: np.ndarray | None) -> list[list[str]]:
    scores = qs @ data.T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :10]
    return [[point_id(int(i)) for i in row] for row in top]


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return round(
        float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])), 4
    )


def searches(index: Any, data: np.ndarray, qs: np.ndarray) -> dict[str, Any]:
    flt = qm.Filter(must=[qm.FieldCondition(key="folder", match=qm.MatchValue(value="f3"))])
    mask = np.array([i % FOLDERS == 3 for i in range(len(data))])
    plain = timed_searches(index, qs, None)
    filtered = timed_searches(index, qs, flt)
    out = {
        "search": {k: v for k, v in plain.items() if k != "ids"},
        "search_filtered": {k: v for k, v in filtered.items() if k != "ids"},
        "recall_at_10": recall(plain.pop("ids"), exact_top10(data, qs, None)),
        "recall_at_10_filtered": recall(filtered.pop("ids"), exact_top10(data, qs, mask)),
    }
    return out


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def worker_load(kind: str, n: int, directory: Path, nq: int) -> dict[str, Any]:
    from imgrag.connectors.index import Point

    data = dataset(n)
    qs = queries(data, nq)
    # The reopen worker reads its queries from here, so its peak RSS is the engine's alone.
    np.save(directory.parent / "queries.npy", qs)
    index = open_store(kind, directory, n)
    t = time.perf_counter()
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        index.upsert(
            [
                Point(id=point_id(i), vector=data[i].tolist(), payload=payload(i))
                for i in range(start, stop)
            ]
        )
    upsert_s = time.perf_counter() - t
    out: dict[str, Any] = {"points": n, "upsert_points_per_s": round(n / upsert_s)}
    out["exact"] = searches(index, data, qs)
    if kind == "edge":
        t = time.perf_counter()
        index.request_index_build()
        index.wait_for_build(timeout=3600)
        status = index.status()
        out["hnsw_build_s"] = round(time.perf_counter() - t, 1)
        out["indexed"] = status.indexed
        out["build_error"] = status.last_error
        out["hnsw"] = searches(index, data, qs)
    t = time.perf_counter()
    index.close()
    out["close_s"] = round(time.perf_counter() - t, 2)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def worker_reopen(kind: str, n: int, directory: Path, nq: int) -> dict[str, Any]:
    qs = np.load(directory.parent / "queries.npy")[: min(nq, 20)]
    base = peak_rss_mb()
    t = time.perf_counter()
    index = open_store(kind, directory, n)
    reopen_s = time.perf_counter() - t
    count = index.count()
    t = time.perf_counter()
    index.search(qs[0].tolist(), limit=10)
    first_ms = (time.perf_counter() - t) * 1000
    index.close()
    return {
        "reopen_s": round(reopen_s, 3),
        "count_after_reopen": count,
        "first_search_ms": round(first_ms, 1),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_open_mb": base,
    }


def run_worker(mode: str, kind: str, n: int, directory: Path, nq: int) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    )
    cmd = [
        sys.executable,
        "-m",
        "bench.index_bench",
        "--worker",
        mode,
        kind,
        str(n),
        str(directory),
        "--queries",
        str(nq),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--kinds", default="edge,local")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--worker", nargs=4, metavar=("MODE", "KIND", "N", "DIR"))
    args = parser.parse_args()
    if args.worker:
        mode, kind, n, directory = args.worker
        fn = worker_load if mode == "load" else worker_reopen
        nq = args.queries if kind == "edge" else min(args.queries, 20)
        print(json.dumps(fn(kind, int(n), Path(directory), nq)))
        return 0

    results: dict[str, Any] = {}
    for n in [int(s) for s in args.sizes.split(",")]:
        for kind in args.kinds.split(","):
            with tempfile.TemporaryDirectory(prefix=f"imgrag-bench-{kind}-") as tmp:
                print(f"{kind} {n}: load ...", file=sys.stderr, flush=True)
                loaded = run_worker("load", kind, n, Path(tmp) / "store", args.queries)
                print(f"{kind} {n}: reopen ...", file=sys.stderr, flush=True)
                reopened = run_worker("reopen", kind, n, Path(tmp) / "store", args.queries)
            results.setdefault(kind, {})[str(n)] = {"load": loaded, "reopen": reopened}

    verdict: dict[str, Any] = {}
    for n, r in results.get("edge", {}).items():
        hnsw = r["load"].get("hnsw", {})
        verdict[n] = {
            "search_p50_ms": hnsw.get("search", {}).get("p50_ms"),
            "reopen_s": r["reopen"].get("reopen_s"),
            "recall_at_10": hnsw.get("recall_at_10"),
        }
    print(
        json.dumps(
            {
                "vectors": VECTORS,
                "dimension": DIM,
                "cpus": os.cpu_count(),
                "search_queries": {"edge": args.queries, "local": min(args.queries, 20)},
                "filter": "folder == one of 10 folders (10% of points)",
                "results": results,
                "edge_targets": TARGETS,
                "edge_vs_targets": verdict,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
