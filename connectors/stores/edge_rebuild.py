"""Child process that builds the HNSW graphs of a copied edge shard.

qdrant-edge-py 0.9 holds the GIL for the whole of ``optimize()`` (minutes at 100k points),
so running it on a thread would freeze every other thread of the owning process. The owner
flushes its shard, copies it, and runs this on the copy; it then replays what changed
meanwhile and swaps the copy in (see ``edge.py``).

The builder outlives its parent on purpose: the next process that opens the store adopts it
(``edge_builds.py``), so a graph started by a short-lived command is not thrown away. It holds
the build lock its parent handed it until it exits.

Usage: ``python -m imgrag.connectors.stores.edge_rebuild SHARD_DIR DONE_FILE``; writes one
JSON object to DONE_FILE once the copy is built and flushed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(
            "usage: python -m imgrag.connectors.stores.edge_rebuild SHARD_DIR DONE_FILE",
            file=sys.stderr,
        )
        return 2
    shard_dir, done = argv
    # The owner keeps serving searches meanwhile; let it win the CPU.
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)
    import qdrant_edge as qe

    started = time.monotonic()
    shard = qe.EdgeShard.load(shard_dir)
    try:
        changed = shard.optimize()
        shard.flush()
        info = shard.info()
    finally:
        shard.close()
    result = {
        "changed": changed,
        "points": info.points_count,
        "indexed": info.indexed_vectors_count,
        "seconds": round(time.monotonic() - started, 3),
    }
    tmp = f"{done}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, done)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
