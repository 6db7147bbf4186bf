"""ConSE (Norouzi et al., ICLR 2014): an image is the probability-weighted convex
combination of the text embeddings of its most probable classes, so images and texts
share one space without training anything."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from imgrag.connectors.local.text_model import normalize_rows

F32 = npt.NDArray[np.float32]


def class_term(probs: F32, class_bank: F32, top_k: int) -> F32:
    """For each row of class probabilities: sum of p_i * bank_i over its top-k, unit length."""
    k = min(top_k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    weights = np.take_along_axis(probs, top, axis=1)
    weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    mixed = np.einsum("nk,nkd->nd", weights, class_bank[top])
    return normalize_rows(mixed)


def colour_term(colour_weights: F32, colour_bank: F32) -> F32:
    """Weighted colour-word embeddings per image, unit length (all-zero weights give zeros)."""
    return normalize_rows(colour_weights @ colour_bank)


def image_vectors(classes: F32, colours: F32, colour_weight: float) -> F32:
    """The image embedding: class term plus the weighted colour term, unit length."""
    return normalize_rows(classes + colour_weight * colours)


def fuse_caption(images: F32, captions: F32, caption_weight: float) -> F32:
    """Image+text: a convex mix of two unit vectors, renormalized."""
    return normalize_rows((1.0 - caption_weight) * images + caption_weight * captions)
