"""Relevance floors: how high unrelated queries score, per embedder, on scikit-image's photos.

For text, queries naming nothing in the photos (and gibberish) are run against every photo;
for images, each photo (and a few synthetic images) is run against every other photo. The
floor is the median of the unrelated queries' best scores, rounded up to 0.01: half of
unrelated queries then find nothing relevant. The highest unrelated score is no floor: the
offline model's text scores overlap ("a dog" reaches 0.52 on grass, a correct "galaxies"
hit scores 0.14), so the JSON also says which share of correct hits (a photo's own queries,
a cropped copy of it) stays above the floor.
pipeline/relevance.py records the floors this prints.
Run: python -m bench.relevance_floor
"""

from __future__ import annotations

import asyncio
import json
import math
import time

import numpy as np
from imgrag.connectors.embedder import Embedder, ImageInput
from imgrag.connectors.local import LocalEmbedder
from imgrag.connectors.tiny import TinyEmbedder
from PIL import Image

from bench._local_photos import PHOTOS, as_pipeline_png, encode, load

UNRELATED_TEXT = (
    "a dog",
    "a red sports car",
    "a bowl of soup",
    "a snowy mountain",
    "a birthday cake",
    "a sailing boat on the sea",
    "a laptop on a desk",
    "a bunch of bananas",
    "xqzv blorf wint",
    "tax return 2023",
)


def _synthetic() -> list[bytes]:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    grad = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (256, 1)))
    return [encode(Image.new("RGB", (256, 256), c)) for c in ("white", "navy")] + [
        encode(noise),
        encode(grad.convert("RGB")),
    ]


def _unit(vectors: list[list[float]]) -> np.ndarray:
    m = np.asarray(vectors, dtype=np.float64)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


async def measure(embedder: Embedder) -> dict[str, object]:
    photos = [as_pipeline_png(encode(load(p))) for p in PHOTOS]
    docs = _unit(
        [e.vector for e in await embedder.embed_images([ImageInput(b) for b in photos], "document")]
    )
    related_q = [(i, q) for i, p in enumerate(PHOTOS) for q in p.queries]
    texts = [q for _, q in related_q] + list(UNRELATED_TEXT)
    tv = _unit([e.vector for e in await embedder.embed_texts(texts, "query")])
    scores = tv @ docs.T
    related_text = [float(scores[k, i]) for k, (i, _) in enumerate(related_q)]
    unrelated_text = scores[len(related_q) :].max(axis=1).tolist()
    crops = []
    for p in PHOTOS:
        img = load(p)
        w, h = img.size
        crops.append(
            as_pipeline_png(encode(img.crop((w // 10, h // 10, w - w // 10, h - h // 10))))
        )
    queries = [*photos, *crops, *[as_pipeline_png(b) for b in _synthetic()]]
    iv = _unit(
        [e.vector for e in await embedder.embed_images([ImageInput(b) for b in queries], "query")]
    )
    iscores = iv @ docs.T
    n = len(PHOTOS)
    unrelated_image = [
        float(max(iscores[k, j] for j in range(n) if j != k % n or k >= 2 * n))
        for k in range(len(queries))
    ]
    related_image = [float(iscores[n + i, i]) for i in range(n)]  # a crop finds its photo

    def floor(values: list[float]) -> float:
        return math.ceil(float(np.median(values)) * 100) / 100

    def share(values: list[float], cut: float, above: bool) -> float:
        return round(sum((v >= cut) == above for v in values) / len(values), 3)

    return {
        "model": embedder.info.model,
        "text": {
            "unrelated_max": round(max(unrelated_text), 4),
            "related_min": round(min(related_text), 4),
            "related_median": round(float(np.median(related_text)), 4),
            "floor": floor(unrelated_text),
            "unrelated_below_floor": share(unrelated_text, floor(unrelated_text), False),
            "related_above_floor": share(related_text, floor(unrelated_text), True),
        },
        "image": {
            "unrelated_max": round(max(unrelated_image), 4),
            "related_min": round(min(related_image), 4),
            "floor": floor(unrelated_image),
            "unrelated_below_floor": share(unrelated_image, floor(unrelated_image), False),
            "related_above_floor": share(related_image, floor(unrelated_image), True),
        },
    }


def main() -> None:
    started = time.perf_counter()
    out = {
        "photos": len(PHOTOS),
        "unrelated_text_queries": list(UNRELATED_TEXT),
        "embedders": [asyncio.run(measure(e)) for e in (TinyEmbedder(), LocalEmbedder())],
        "seconds": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
