"""Index implementations: ``edge`` (embedded, the default) and ``qdrant`` (server/cluster)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imgrag.connectors.config import StoreConfig
from imgrag.connectors.index import Index
from imgrag.connectors.paths import StatePaths
from imgrag.connectors.stores.edge import EdgeIndex, IndexStatus

if TYPE_CHECKING:
    from imgrag.connectors.stores.qdrant import QdrantIndex

__all__ = ["EdgeIndex", "IndexStatus", "QdrantIndex", "open_index"]


def __getattr__(name: str) -> Any:
    # The server kind brings qdrant-client's clients (over a second to import): only on use.
    if name == "QdrantIndex":
        return _server_kind()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _server_kind() -> type[QdrantIndex]:
    from imgrag.connectors.stores.qdrant import QdrantIndex

    return QdrantIndex


def open_index(config: StoreConfig, paths: StatePaths) -> Index:
    """The configured index: the embedded store in ``paths.store`` or a Qdrant server.

    Raises StoreLocked when the embedded store is open in another process, and StoreError
    for a server kind without a URL.
    """
    if config.kind == "edge":
        return EdgeIndex(
            paths.store,
            index_threshold=config.edge_index_threshold,
            build_after_seconds=config.edge_build_after_seconds,
            settle_seconds=config.edge_settle_seconds,
            state_dir=paths.root,
        )
    return _server_kind()(config)
