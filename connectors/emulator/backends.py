"""Choosing the embedder behind the emulator: the offline local model, else ``tiny``."""

from __future__ import annotations

import logging
from pathlib import Path

from imgrag._errors import BackendUnavailable
from imgrag.connectors.embedder import Embedder
from imgrag.connectors.tiny import TinyEmbedder

log = logging.getLogger(__name__)


def make_backend(kind: str, dimension: int, cache_dir: Path | None = None) -> tuple[Embedder, str]:
    """An embedder and its name for ``auto``, ``local`` or ``tiny``.

    ``auto`` prefers the local model and falls back to ``tiny`` when it cannot load;
    ``local`` raises BackendUnavailable instead. ``tiny`` is built at the profile's dimension.
    ``cache_dir`` holds the local model's built networks.
    """
    if kind in ("auto", "local"):
        try:
            from imgrag.connectors.local import LocalEmbedder  # optional extra

            return LocalEmbedder(cache_dir=cache_dir), "local"
        except Exception as exc:  # ImportError, missing weights, anything the loader raises
            if kind == "local":
                raise BackendUnavailable(
                    f"the local model could not be loaded ({type(exc).__name__}: {exc}); "
                    "install the 'local' extra or use --backend tiny"
                ) from exc
            log.info("local model unavailable (%s); serving the tiny embedder", exc)
    return TinyEmbedder(dimension=dimension), "tiny"
