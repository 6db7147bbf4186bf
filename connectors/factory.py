"""Build the configured embedder without importing optional extras until they are needed."""

from __future__ import annotations

import sys

from imgrag.connectors.config import EmbedderConfig
from imgrag.connectors.embedder import Embedder
from imgrag.connectors.paths import StatePaths


def create_embedder(config: EmbedderConfig, paths: StatePaths) -> Embedder:
    """The embedder named by ``[embedder] provider``; the local model caches under
    ``paths.cache``."""
    if config.provider == "foundry":
        from imgrag.connectors.foundry import FoundryEmbedder, FoundryPool

        # One endpoint keeps the single sender; [[embedder.deployments]] makes a pool.
        return FoundryPool(config) if config.deployments else FoundryEmbedder(config)
    from imgrag.connectors.local import load_local_embedder

    return load_local_embedder(paths.cache, notify=_say)


def _say(line: str) -> None:
    # The first start of the offline model takes seconds before anything else appears:
    # tell the person at the terminal, on stderr so JSON on stdout stays clean.
    print(line, file=sys.stderr, flush=True)
