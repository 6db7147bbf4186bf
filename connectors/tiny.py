"""TinyEmbedder: a small deterministic embedder for fast tests and offline plumbing.

Vectors are derived from content (a 16x16 RGB thumbnail, or a hashed bag of words) through
a fixed seeded random projection. The same input always gives the same vector, similar
thumbnails give close vectors, and it runs thousands of images per second. It knows nothing
about what an image shows: use it to test pipelines, never to judge search quality.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache, lru_cache

import numpy as np
from imgrag._errors import RequestRejected
from imgrag.connectors.embedder import EmbedderInfo, Embedding, ImageInput, InputType, Usage
from PIL import Image
from threadpoolctl import ThreadpoolController

THUMB = 16
_FEATURES = THUMB * THUMB * 3
_WORD = re.compile(r"\w+", re.UNICODE)
# Pillow releases the GIL while decoding, so a few threads scale with cores.
_DECODERS = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="tiny")


@cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def _project(features: np.ndarray, projection: np.ndarray) -> np.ndarray:
    # One BLAS thread: these products are small, and OpenBLAS workers spin-wait after each
    # call, burning a core while the daemon waits on the network. Limited here, for this
    # call only, rather than through the host process's environment.
    with _blas().limit(limits=1, user_api="blas"):
        product: np.ndarray = features @ projection
    return product


def _normalize(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    unit: np.ndarray = matrix / np.where(norms == 0, 1.0, norms)
    return unit


@lru_cache(maxsize=8)
def _projection(dimension: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix: np.ndarray = rng.standard_normal((_FEATURES, dimension)) / np.sqrt(_FEATURES)
    return matrix.astype(np.float32)


@lru_cache(maxsize=65536)
def _word_vector(word: str, dimension: int, seed: int) -> np.ndarray:
    digest = hashlib.blake2b(f"{seed}:{word}".encode(), digest_size=8).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "little"))
    return rng.standard_normal(dimension).astype(np.float32)


def thumbnail_features(data: bytes) -> np.ndarray:
    """Centered 16x16 RGB pixels of an encoded image, as one flat float32 vector."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (THUMB * 4, THUMB * 4))  # JPEG decodes at reduced scale: fast
            small = img.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BILINEAR)
    except Exception as exc:  # Pillow raises many types for bad data
        raise RequestRejected(f"image could not be decoded: {exc}", status=400) from None
    pixels = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
    return pixels - 0.5


class TinyEmbedder:
    """Deterministic content-derived vectors; ``input_type`` is accepted and ignored so
    a query image finds the identical document image."""

    def __init__(self, dimension: int = 1024, *, seed: int = 0, model: str = "tiny") -> None:
        if dimension < 1:
            raise ValueError("dimension must be positive")
        self._dimension = dimension
        self._seed = seed
        self._info = EmbedderInfo(
            provider="tiny",
            model=model,
            dimension=dimension,
            max_images_per_request=96,
            supports_input_type=True,
            supports_image_text=True,
            supports_text=True,
            tokens_per_image=0,
        )
        self._usage = Usage()

    @property
    def info(self) -> EmbedderInfo:
        return self._info

    @property
    def usage(self) -> Usage:
        """A snapshot of the counters: later requests do not change it."""
        return self._usage.model_copy()

    def image_vectors(self, items: Sequence[ImageInput]) -> np.ndarray:
        """Unit vectors (rows) for images, fused with their captions when present."""
        if not items:
            return np.zeros((0, self._dimension), dtype=np.float32)
        datas = [item.data for item in items]
        if len(datas) > 2:
            features = np.stack(list(_DECODERS.map(thumbnail_features, datas)))
        else:
            features = np.stack([thumbnail_features(d) for d in datas])
        vectors = _normalize(_project(features, _projection(self._dimension, self._seed)))
        for row, item in enumerate(items):
            if item.text:
                vectors[row] = _normalize(vectors[row] + self.text_vectors([item.text])[0])
        return vectors

    def text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors (rows) for texts: the sum of per-word random vectors."""
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                out[row] += _word_vector(word, self._dimension, self._seed)
        return _normalize(out)

    async def embed_images(
        self, items: Sequence[ImageInput], input_type: InputType
    ) -> list[Embedding]:
        # Off the event loop: a server using this backend keeps answering while it decodes.
        vectors = await asyncio.to_thread(self.image_vectors, items)
        self._usage.requests += 1
        self._usage.images += len(items)
        return [
            Embedding(vector=v.tolist(), input_type=input_type, text_applied=bool(item.text))
            for v, item in zip(vectors, items, strict=True)
        ]

    async def embed_texts(self, texts: Sequence[str], input_type: InputType) -> list[Embedding]:
        vectors = await asyncio.to_thread(self.text_vectors, texts)
        self._usage.requests += 1
        self._usage.texts += len(texts)
        return [Embedding(vector=v.tolist(), input_type=input_type) for v in vectors]

    async def probe(self) -> EmbedderInfo:
        """Nothing to check: the vectors are computed in process."""
        return self._info

    async def aclose(self) -> None:
        return None
