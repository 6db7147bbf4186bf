"""A rescan of an unchanged folder against the stat floor, in one run (prints JSON).

100,000 tiny files in 100 folders, an embedded index holding a point for each (as a
finished backfill leaves it), and an Indexer that has read the index once. ``ratio`` is
one ``reconcile()`` pass (walk, compare, nothing to do) divided by a plain ``os.scandir``
walk that stats every file of the same tree; each is the best of ``RUNS``. ``cpu_ratio`` is
the same with the process's CPU time (kernel time included), which other work on a shared
machine disturbs less than the wall clock. Memory: the
bytes per file of the in-memory index state (tracemalloc), against the dict of pydantic
FileStates it replaces, and the peak RSS of the measuring process: the tree and the index
are made by a child process, so it holds what a daemon would (the embedded store, the
ingester's state) and not the bench's own 100,000 points.

Usage: ``python -m bench.rescan``
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from imgrag.connectors.index import CollectionSpec, FileState, Point
from imgrag.connectors.stores.edge import EdgeIndex
from imgrag.connectors.tiny import TinyEmbedder
from imgrag.pipeline.candidates import Rules
from imgrag.pipeline.ingest import Indexer
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.known import KnownFiles
from imgrag.pipeline.source_folder import FolderSource

FILES = int(os.environ.get("RESCAN_FILES", "100000"))
FOLDERS = 100
RUNS = 3
DIM = 8
SOURCE = "bench"


def make_tree(root: Path) -> list[tuple[str, os.stat_result]]:
    out = []
    per = FILES // FOLDERS
    for f in range(FOLDERS):
        folder = root / f"f{f:03d}"
        folder.mkdir()
        for n in range(per):
            path = folder / f"img_{n:05d}.jpg"
            path.write_bytes(b"x")
            out.append((f"f{f:03d}/{path.name}", path.stat()))
    return out


def states(files: list[tuple[str, os.stat_result]]) -> list[FileState]:
    return [
        FileState(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, rel)),
            path=rel,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            sha256=hashlib.sha256(rel.encode()).hexdigest(),
            embed_key=hashlib.sha256(b"k" + rel.encode()).hexdigest(),
            source=SOURCE,
        )
        for rel, st in files
    ]


def scandir_walk(root: Path) -> int:
    """The floor: list every folder and stat every entry, nothing else."""
    count = 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                st = entry.stat()
                if entry.is_dir():
                    stack.append(entry.path)
                else:
                    count += st.st_size >= 0
    return count


def memory_per_file(known: list[FileState]) -> dict[str, float]:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    packed = KnownFiles(known)
    compact = tracemalloc.get_traced_memory()[0] - before
    before = tracemalloc.get_traced_memory()[0]
    plain = {s.path: s.model_copy() for s in known}
    old = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del packed, plain
    return {
        "known_files_bytes_per_file": round(compact / len(known), 1),
        "pydantic_dict_bytes_per_file": round(old / len(known), 1),
    }


def setup(tmp: Path) -> dict[str, Any]:
    """The tree, the index as a finished backfill leaves it, and the memory figures; run in
    a child process so the measuring process holds only what a daemon would."""
    root = tmp / "tree"
    root.mkdir()
    files = make_tree(root)
    known = states(files)
    memory = memory_per_file(known)
    index = EdgeIndex(tmp / "store", auto_build=False)
    index.ensure_collection(CollectionSpec(name="images", model="tiny", dimension=DIM))
    vector = [1.0] + [0.0] * (DIM - 1)
    for start in range(0, len(known), 1000):
        index.upsert(
            [
                Point(id=s.id, vector=vector, payload=s.model_dump())
                for s in known[start : start + 1000]
            ]
        )
    index.close()
    return memory


async def run(tmp: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.rescan", "--setup", str(tmp)],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    memory = json.loads(done.stdout)
    root = tmp / "tree"
    rss = {"python_and_libraries": _rss_megabytes()}
    index = EdgeIndex(tmp / "store", auto_build=False)
    index.ensure_collection(CollectionSpec(name="images", model="tiny", dimension=DIM))
    rss["store_open"] = _rss_megabytes()
    journal = Journal(tmp / "journal.sqlite")
    ingestor = Indexer(
        FolderSource(root, name=SOURCE, rules=Rules(include=("*.jpg",))),
        embedder=TinyEmbedder(dimension=DIM),
        index=index,
        journal=journal,
    )
    try:
        started = time.perf_counter()
        await ingestor.load_state()
        load = time.perf_counter() - started
        rss["state_loaded"] = _rss_megabytes()
        floor = []
        rescans = []
        floor_cpu = []
        rescans_cpu = []
        for _ in range(RUNS):
            started, cpu = time.perf_counter(), time.process_time()
            assert scandir_walk(root) == FILES
            floor.append(time.perf_counter() - started)
            floor_cpu.append(time.process_time() - cpu)
            started, cpu = time.perf_counter(), time.process_time()
            summary = await ingestor.reconcile()
            rescans.append(time.perf_counter() - started)
            rescans_cpu.append(time.process_time() - cpu)
            assert summary.unchanged == FILES, summary
        rss["after_passes"] = _rss_megabytes()
    finally:
        await ingestor.close()
        index.close()
    best_floor, best_rescan = min(floor), min(rescans)
    return {
        "files": FILES,
        "folders": FOLDERS,
        "state_load_seconds": round(load, 3),
        "scandir_stat_seconds": round(best_floor, 3),
        "rescan_seconds": round(best_rescan, 3),
        "ratio": round(best_rescan / best_floor, 2),
        "scandir_stat_cpu_seconds": round(min(floor_cpu), 3),
        "rescan_cpu_seconds": round(min(rescans_cpu), 3),
        "cpu_ratio": round(min(rescans_cpu) / min(floor_cpu), 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        **memory,
        "peak_rss_megabytes": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_megabytes_by_stage": rss,
    }


def _rss_megabytes() -> dict[str, int] | None:
    """VmRSS and its anonymous and file-backed parts (Linux /proc), in MB."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = round(int(line.split()[1]) / 1024)
    return out


def main() -> None:
    if sys.argv[1:2] == ["--setup"]:
        print(json.dumps(setup(Path(sys.argv[2]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(run(Path(tmp))), indent=2))


if __name__ == "__main__":
    main()
