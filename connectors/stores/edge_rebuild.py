"""Child process that builds the HNSW graphs of a copied edge shard.

qdrant-edge-py 0.9 holds the GIL for the whole of ``optimize()`` (minutes at 100k points),
so running it on a thread would freeze every other thread of the owning process. The owner
flushes its shard, copies it, and runs this on the copy; it then replays what changed
meanwhile and swaps the copy in (see ``edge.py``).

Usage: ``python -m imgrag.connectors.stores.edge_rebuild SHARD_DIR``; prints one JSON line.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time


def _die_with_parent() -> None:
    # Without this an orphaned build would keep writing into a folder the next owner deletes.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m imgrag.connectors.stores.edge_rebuild SHARD_DIR", file=sys.stderr)
        return 2
    _die_with_parent()
    # The owner keeps serving searches meanwhile; let it win the CPU.
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)
    import qdrant_edge as qe

    started = time.monotonic()
    shard = qe.EdgeShard.load(argv[0])
    try:
        changed = shard.optimize()
        shard.flush()
        info = shard.info()
    finally:
        shard.close()
    print(
        json.dumps(
            {
                "changed": changed,
                "points": info.points_count,
                "indexed": info.indexed_vectors_count,
                "seconds": round(time.monotonic() - started, 3),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
