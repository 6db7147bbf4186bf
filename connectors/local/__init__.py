"""The offline local embedder (``provider = "local"``).

Importing this package is cheap and works without the ``local`` extra: onnxruntime and
the model wheels are imported only when an embedder is created. Nothing here needs torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imgrag.connectors.local.install import INSTALL_HINT, missing_modules, require_local_extra
from imgrag.connectors.local.recipe import DEFAULT_RECIPE, ConseRecipe

if TYPE_CHECKING:
    from imgrag.connectors.local.embedder import LocalEmbedder, load_local_embedder

__all__ = [
    "DEFAULT_RECIPE",
    "INSTALL_HINT",
    "ConseRecipe",
    "LocalEmbedder",
    "load_local_embedder",
    "missing_modules",
    "require_local_extra",
]


def __getattr__(name: str) -> Any:
    # embedder.py itself imports only numpy and Pillow, but keeping it lazy means a
    # broken optional install can never break `import imgrag.connectors.local`.
    if name in ("LocalEmbedder", "load_local_embedder"):
        from imgrag.connectors.local import embedder

        return getattr(embedder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
