"""A folder rename through the real CLI, with the gallery's thumbnails on and off. Prints JSON.

For each size N: N small distinct PNGs in ``photos/2024/`` are ingested by ``imgrag ingest
photos`` (a child process, the emulator's tiny backend over loopback, the embedded store);
the folder is renamed to ``photos/2024-trip/`` and ``imgrag ingest photos --prune`` is
timed. Every vector is reused (``requests`` must be 0), and with thumbnails on every
thumbnail must still be there, unchanged. Each size runs with ``[ingest] thumbnails`` on
and off, in fresh state folders. Ratios: on/off per size, and, given two sizes, the
larger one's seconds over the smaller one's (linear work gives the ratio of the sizes).

Usage: ``python -m bench.rename [--sizes 300,3000]`` (``--sizes 3000,30000`` for the
figures in docs/benchmarks.md; the default keeps ``make bench`` short).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from imgrag.connectors.stores import edge_builds as builds

from bench._emulator import emulator_process
from bench.ingest_backfill import KEY, env_for, make_folder

REPO = Path(__file__).resolve().parent.parent


def ingest(photos: Path, env: dict[str, str], *extra: str) -> tuple[dict[str, Any], float]:
    """(summary, wall seconds) of one ``imgrag ingest photos`` child process."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "imgrag.pipeline.cli", "ingest", str(photos), "--json", *extra],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"imgrag ingest failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout), wall


def graph_settled(state: Path, timeout: float = 3600) -> float:
    """Wait until no HNSW build the last command left runs on (it outlives the command and
    would take CPU from the next one); seconds waited."""
    started = time.perf_counter()
    store = state / "store"
    while any(builds.lock_held(c) for c in store.iterdir() if c.is_dir()):
        if time.perf_counter() - started > timeout:
            raise RuntimeError("an HNSW build did not end")
        time.sleep(0.5)
    return time.perf_counter() - started


def thumbnails(state: Path) -> dict[str, int]:
    """Cached thumbnail name → inode (the same inode: kept, not made again)."""
    return {p.name: p.stat().st_ino for p in (state / "thumbs").rglob("*.webp")}


def one_run(work: Path, n: int, endpoint: str, thumbs_on: bool) -> dict[str, Any]:
    photos = work / "photos"
    make_folder(photos / "2024", n, size=(32, 24))
    env = env_for(
        work / "state",
        endpoint,
        IMGRAG_EMBEDDER__MAX_CONCURRENCY="32",
        IMGRAG_INGEST__THUMBNAILS="true" if thumbs_on else "false",
    )
    first, first_wall = ingest(photos, env)
    assert first["indexed"] == n, first
    first_graph = graph_settled(work / "state")
    before = thumbnails(work / "state")
    (photos / "2024").rename(photos / "2024-trip")
    renamed, wall = ingest(photos, env, "--prune")
    rename_graph = graph_settled(work / "state")
    after = thumbnails(work / "state")
    assert renamed["reused"] == n and renamed["removed"] == n, renamed
    assert after == before and len(after) == (n if thumbs_on else 0)
    return {
        "first_ingest_seconds": round(first_wall, 2),
        "rename_seconds": round(wall, 2),
        "rename_pass_seconds": renamed["seconds"],
        "graph_build_after_first_ingest_seconds": round(first_graph, 1),
        "graph_build_after_rename_seconds": round(rename_graph, 1),
        "rename_embedding_requests": renamed["requests"],
        "reused": renamed["reused"],
        "removed": renamed["removed"],
        "thumbnails_kept": len(after),
    }


def main(sizes: list[int]) -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "rename", "sizes": sizes}
    with emulator_process(api_key=KEY, backend="tiny") as server:
        for n in sizes:
            row: dict[str, Any] = {}
            for label, on in (("thumbnails_on", True), ("thumbnails_off", False)):
                print(f"rename: {n} files, {label} ...", file=sys.stderr, flush=True)
                with tempfile.TemporaryDirectory() as tmp:
                    row[label] = one_run(Path(tmp), n, server.url, on)
            on_s, off_s = (
                row["thumbnails_on"]["rename_seconds"],
                row["thumbnails_off"]["rename_seconds"],
            )
            row["ratio_on_to_off"] = round(on_s / off_s, 2)
            result[f"files_{n}"] = row
    if len(sizes) == 2:
        small, large = sorted(sizes)
        for label in ("thumbnails_on", "thumbnails_off"):
            ratio = (
                result[f"files_{large}"][label]["rename_seconds"]
                / result[f"files_{small}"][label]["rename_seconds"]
            )
            result[f"ratio_{large}_to_{small}_{label}"] = round(ratio, 2)
        result["linear_ratio"] = round(large / small, 2)
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    return result


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or len(sizes) > 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError("give one or two file counts, e.g. 300,3000")
    return sizes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_sizes, default=[300, 3000], help="e.g. 3000,30000")
    print(json.dumps(main(parser.parse_args().sizes), indent=2))
