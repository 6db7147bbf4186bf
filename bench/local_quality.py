"""Retrieval quality of the offline local embedder on real photos bundled with scikit-image.

Prints JSON: text->image recall@1/@5 for queries naming what is in the photos,
image->image recall@1 for augmented copies (flip, crop, resize, JPEG, EXIF rotation),
colour-variant accuracy and image+text figures, plus text->image on held-out phrasings
that the recipe sweep never saw.
Run: python -m bench.local_quality
"""

from __future__ import annotations

import json
import time

from imgrag.connectors.embedder import ImageInput
from imgrag.connectors.local import LocalEmbedder

from bench._local_metrics import Inputs, evaluate, text_retrieval
from bench._local_photos import HELD_OUT_QUERIES, PHOTOS

TARGETS = {"text_to_image_recall@5": 0.8, "image_to_image_augmented_recall@1": 0.95}


def main() -> None:
    started = time.perf_counter()
    embedder = LocalEmbedder()
    inputs = Inputs()
    report = evaluate(inputs, embedder.encode_images, embedder.encode_texts)
    gallery = embedder.encode_images([ImageInput(b) for b in inputs.gallery])
    held_out = [(i, HELD_OUT_QUERIES[p.key]) for i, p in enumerate(PHOTOS)]
    report["text_to_image_held_out"] = text_retrieval(gallery, embedder.encode_texts, held_out)
    measured = {
        "text_to_image_recall@5": report["text_to_image"]["recall@5"],
        "image_to_image_augmented_recall@1": report["image_to_image_augmented"]["recall@1"],
    }
    out = {
        "model": embedder.info.model,
        "recipe": embedder.recipe.model_dump(mode="json"),
        **report,
        "targets": {k: {"target": v, "measured": measured[k]} for k, v in TARGETS.items()},
        "targets_met": all(measured[k] >= v for k, v in TARGETS.items()),
        "seconds": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
