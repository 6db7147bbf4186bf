"""Build the configured embedder without importing optional extras until they are needed."""

from __future__ import annotations

import sys
from pathlib import Path

from imgrag.connectors.config import EmbedderConfig
from imgrag.connectors.embedder import Embedder


def create_embedder(config: EmbedderConfig, *, cache_dir: Path) -> Embedder:
    """The embedder named by ``[embedder] provider``."""
    if config.provider == "foundry":
        from imgrag.connectors.foundry import FoundryEmbedder

        return FoundryEmbedder(config)
    from imgrag.connectors.local import load_local_embedder

    return load_local_embedder(cache_dir, notify=_say)


def _say(line: str) -> None:
    # The first start of the offline model takes seconds before anything else appears:
    # tell the person at the terminal, on stderr so JSON on stdout stays clean.
    print(line, file=sys.stderr, flush=True)
