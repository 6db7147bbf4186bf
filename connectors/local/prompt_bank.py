"""The text embeddings of the class prompts and colour words, computed once per recipe.

Embedding 1,000+ prompts takes seconds on a small CPU, so the bank is stored under the
cache dir, keyed by the recipe's prompt fingerprint and the text encoder's own key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from imgrag.connectors.local.cache import versions_key, write_atomically
from imgrag.connectors.local.class_names import NUM_CLASSES, class_prompts, colour_prompts
from imgrag.connectors.local.recipe import ConseRecipe
from imgrag.connectors.local.text_model import DIMENSION, TextEncoder, normalize_rows

BANK_FORMAT = "1"


@dataclass(frozen=True, slots=True)
class PromptBank:
    """Unit vectors: one per ImageNet class (1000, 384) and one per colour word."""

    classes: npt.NDArray[np.float32]
    colours: npt.NDArray[np.float32]
    source: Literal["computed", "cache"]


def bank_cache_path(cache_dir: Path, recipe: ConseRecipe, encoder_key: str) -> Path:
    """Cache file for this recipe's prompts embedded by this text encoder."""
    key = versions_key(BANK_FORMAT, recipe.prompt_fingerprint(), encoder_key)
    return cache_dir / f"prompt-bank-{key}.npz"


def compute_bank(encoder: TextEncoder, recipe: ConseRecipe) -> tuple[np.ndarray, np.ndarray]:
    """Embed every class prompt (mean over templates, renormalized) and every colour word."""
    per_class = class_prompts(recipe)
    flat = [p for prompts in per_class for p in prompts]
    vectors = encoder.encode(flat).reshape(NUM_CLASSES, len(recipe.templates), DIMENSION)
    classes = normalize_rows(vectors.mean(axis=1))
    colours = encoder.encode(colour_prompts(recipe))
    return classes, colours


def load_or_compute_bank(encoder: TextEncoder, recipe: ConseRecipe, path: Path) -> PromptBank:
    """Read the bank from ``path`` if it is there and well-formed, else compute and store it."""
    if path.exists():
        try:
            with np.load(path) as data:
                classes = data["classes"].astype(np.float32)
                colours = data["colours"].astype(np.float32)
            if classes.shape == (NUM_CLASSES, DIMENSION) and colours.shape == (
                len(recipe.colours),
                DIMENSION,
            ):
                return PromptBank(classes, colours, "cache")
        except (OSError, ValueError, KeyError):
            pass  # A damaged cache is recomputed, never trusted.
    classes, colours = compute_bank(encoder, recipe)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.savez(fh, classes=classes, colours=colours)

    write_atomically(path, write)
    return PromptBank(classes, colours, "computed")
