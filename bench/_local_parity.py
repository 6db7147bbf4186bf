"""Inputs and measures for comparing the offline model with its PyTorch reference.

Shared by tests/test_local_parity.py (which asserts) and bench/local_parity.py (which
prints the figures). The reference needs the ``parity`` extra (torch, transformers).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
REFERENCE_BATCH = 32


def package_photos() -> list[tuple[str, bytes]]:
    """Every PNG and JPEG bundled inside scikit-image (name, bytes), in name order."""
    folder = Path(str(resources.files("skimage").joinpath("data")))
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return [(p.name, p.read_bytes()) for p in files]


def parity_texts(n: int = 1000, seed: int = 0) -> list[str]:
    """``n`` varied texts, the same on every run: prompts naming ImageNet classes and
    colours, short and longer runs of vocabulary words (five beyond the 256-token limit,
    so truncation is exercised), and a few edge cases (empty, punctuation, non-ASCII).
    Mostly short, like search queries, so the torch reference stays quick."""
    from imgrag.connectors.local.class_names import class_names
    from imgrag.connectors.local.recipe import BASIC_COLOURS
    from imgrag.connectors.local.text_model import model_dir

    rng = np.random.default_rng(seed)
    classes = class_names("wordnet")
    vocab = [
        w
        for w in (model_dir() / "vocab.txt").read_text(encoding="utf-8").split("\n")
        if w.isalpha() and w.isascii() and len(w) > 2
    ]
    templates = ("a photo of a {}.", "{}", "a {} in the wild", "two {}s on a table")

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(vocab, size=int(rng.integers(lo, hi))).tolist())

    special = ["", "!!!", "café crème brûlée", "Åsa in 東京 🚀", "a" * 300, "x"]
    out: list[str] = list(special)
    while len(out) < n:
        kind = len(out) % 10
        name = rng.choice(classes[int(rng.integers(len(classes)))].split(",")).strip()
        if kind < 4:
            out.append(templates[kind].format(name))
        elif kind < 6:
            colour = BASIC_COLOURS[int(rng.integers(len(BASIC_COLOURS)))]
            out.append(f"a {colour} {name} next to {words(1, 4)}")
        elif kind < 9:
            out.append(words(2, 9))
        elif len(out) % 200 == 9:
            out.append(words(280, 320))  # beyond 256 tokens: truncated
        else:
            out.append(words(10, 30))
    return out[:n]


@dataclass(frozen=True, slots=True)
class Agreement:
    """How closely two sets of row vectors agree."""

    rows: int
    min_cosine: float
    max_abs_diff: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "rows": self.rows,
            "min_cosine": round(self.min_cosine, 9),
            "one_minus_min_cosine": float(f"{1.0 - self.min_cosine:.3g}"),
            "max_abs_diff": float(f"{self.max_abs_diff:.3g}"),
        }


def agreement(ours: npt.ArrayLike, reference: npt.ArrayLike) -> Agreement:
    """Per-row cosine (the smallest) and the largest absolute difference."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = (a * b).sum(axis=1) / np.maximum(norms, 1e-30)
    return Agreement(len(a), float(cosine.min()), float(np.abs(a - b).max()))


def reference_logits(model: Any, pixels: F32) -> F32:
    """EfficientNet-Lite0 logits from the eager torch module."""
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(pixels)).numpy().astype(np.float32)  # type: ignore[no-any-return]


def reference_sentence_embeddings(model: Any, texts: list[str]) -> F32:
    """sentence-transformers' recipe in plain torch: transformers' tokenizer (truncated to
    256 tokens) and BertModel, mean pooling over the mask, L2 normalization."""
    import torch
    from imgrag.connectors.local.text_model import MAX_TOKENS, model_dir
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), REFERENCE_BATCH):
        idx = order[start : start + REFERENCE_BATCH]
        batch = tokenizer(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out
