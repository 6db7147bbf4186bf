"""Index implementations: ``edge`` (embedded, the default) and ``qdrant`` (server/cluster)."""

from __future__ import annotations

from pathlib import Path

from imgrag.connectors.config import StoreConfig
from imgrag.connectors.index import Index
from imgrag.connectors.stores.edge import EdgeIndex, IndexStatus
from imgrag.connectors.stores.qdrant import QdrantIndex

__all__ = ["EdgeIndex", "IndexStatus", "QdrantIndex", "open_index"]


def open_index(config: StoreConfig, state_dir: Path) -> Index:
    """The configured index: the embedded store under ``state_dir/store`` or a Qdrant server.

    Raises StoreLocked when the embedded store is open in another process, and StoreError
    for a server kind without a URL.
    """
    if config.kind == "edge":
        return EdgeIndex(
            Path(state_dir) / "store",
            index_threshold=config.edge_index_threshold,
            state_dir=state_dir,
        )
    return QdrantIndex(config)
