"""Retrieval metrics for the local embedder on the bundled photos (shared by quality/sweep)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from imgrag.connectors.embedder import ImageInput

from bench._local_photos import PHOTOS, augmented, colour_variants, gallery

Vectors = npt.NDArray[np.float32]
EmbedImages = Callable[[Sequence[ImageInput]], Vectors]
EmbedTexts = Callable[[Sequence[str]], Vectors]


class Inputs:
    """Every image the evaluation needs, decoded and re-encoded once."""

    def __init__(self) -> None:
        self.gallery = gallery()
        self.augmented = augmented()
        self.colour_variants = colour_variants()

    def all_images(self) -> list[bytes]:
        """Every distinct image payload (for precomputing)."""
        return (
            self.gallery
            + [b for _, _, b in self.augmented]
            + [b for _, _, _, b in self.colour_variants]
        )


def _ranks(scores: Vectors, targets: Sequence[int]) -> npt.NDArray[np.int64]:
    # Rank 1 = best; ties count against the target so a constant model cannot score.
    target_scores = scores[np.arange(len(targets)), list(targets)]
    return (scores >= target_scores[:, None]).sum(axis=1)


def text_retrieval(
    gallery_vectors: Vectors, embed_texts: EmbedTexts, queries: Sequence[tuple[int, str]]
) -> dict:
    """Recall@1/@5 and MRR of (target photo index, query text) pairs against the gallery."""
    t = embed_texts([q for _, q in queries])
    ranks = _ranks(t @ gallery_vectors.T, [i for i, _ in queries])
    return {
        "queries": len(queries),
        "gallery": len(gallery_vectors),
        "recall@1": float(np.mean(ranks <= 1)),
        "recall@5": float(np.mean(ranks <= 5)),
        "mrr": float(np.mean(1.0 / ranks)),
        "misses@5": [q for (_, q), r in zip(queries, ranks, strict=True) if r > 5],
    }


def evaluate(inputs: Inputs, embed_images: EmbedImages, embed_texts: EmbedTexts) -> dict:
    """Text->image, augmented image->image, colour and image+text retrieval figures."""
    g = embed_images([ImageInput(b) for b in inputs.gallery])

    queries = [(i, q) for i, p in enumerate(PHOTOS) for q in p.queries]
    text_to_image = text_retrieval(g, embed_texts, queries)

    a = embed_images([ImageInput(b) for _, _, b in inputs.augmented])
    aug_ranks = _ranks(a @ g.T, [i for i, _, _ in inputs.augmented])
    per_aug: dict[str, list[bool]] = {}
    for (_, name, _), r in zip(inputs.augmented, aug_ranks, strict=True):
        per_aug.setdefault(name, []).append(bool(r <= 1))
    image_to_image = {
        "queries": len(aug_ranks),
        "recall@1": float(np.mean(aug_ranks <= 1)),
        "per_augmentation_recall@1": {k: float(np.mean(v)) for k, v in per_aug.items()},
    }

    cv = inputs.colour_variants
    cvec = embed_images([ImageInput(b) for _, _, _, b in cv])
    qvec = embed_texts([q for _, _, q, _ in cv])
    hits = []
    for i, (key, _, _, _) in enumerate(cv):
        same = [j for j, (k, _, _, _) in enumerate(cv) if k == key]
        scores = qvec[i] @ cvec[same].T
        hits.append(same[int(np.argmax(scores))] == i)
    colour = {"queries": len(cv), "accuracy": float(np.mean(hits))}

    docs = embed_images(
        [ImageInput(b, text=p.caption) for b, p in zip(inputs.gallery, PHOTOS, strict=True)]
    )
    captions = embed_texts([p.caption for p in PHOTOS])
    idx = list(range(len(PHOTOS)))
    image_text = {
        "docs": len(docs),
        "image_query_recall@1": float(np.mean(_ranks(g @ docs.T, idx) <= 1)),
        "caption_query_recall@1": float(np.mean(_ranks(captions @ docs.T, idx) <= 1)),
    }
    return {
        "text_to_image": text_to_image,
        "image_to_image_augmented": image_to_image,
        "colour_variants": colour,
        "image_plus_text": image_text,
    }
