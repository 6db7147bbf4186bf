"""LocalEmbedder: the offline Embedder (EfficientNet-Lite0 + MiniLM, joined by ConSE)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, get_args

import numpy as np
import numpy.typing as npt
from imgrag._errors import EmbedderError, InputTypeNotSupported
from imgrag.connectors.embedder import EmbedderInfo, Embedding, ImageInput, InputType, Usage
from imgrag.connectors.local import conse
from imgrag.connectors.local.cache import default_cache_dir, remove_stale
from imgrag.connectors.local.colours import dominant_colour_weights
from imgrag.connectors.local.image_input import prepare
from imgrag.connectors.local.install import require_local_extra
from imgrag.connectors.local.prompt_bank import PromptBank, bank_cache_path, load_or_compute_bank
from imgrag.connectors.local.recipe import DEFAULT_RECIPE, ConseRecipe
from imgrag.connectors.local.text_model import (
    DIMENSION,
    TextEncoder,
    build_minilm_graph,
    text_cache_path,
)
from imgrag.connectors.local.vision_model import (
    ImageClassifier,
    build_efficientnet,
    vision_cache_path,
)

PROVIDER = "local"
MAX_IMAGES_PER_REQUEST = 32
# The network sees 224 px; 512 px leaves room for the 256 px resize and keeps PNG decoding
# (the slowest step after the network) cheap.
MAX_IMAGE_SIDE = 512
# Building both graphs and embedding the 1,011 prompts took 17-22 s on 2 cores shared with
# other work (load average 8-10; python -m bench.local_install), less on a quiet machine.
PREPARE_ESTIMATE_SECONDS = 20
PREPARING_MESSAGE = (
    f"preparing the offline model (once, about {PREPARE_ESTIMATE_SECONDS} s)\N{HORIZONTAL ELLIPSIS}"
)

F32 = npt.NDArray[np.float32]
T = TypeVar("T")
log = logging.getLogger("imgrag.local")


@dataclass(slots=True)
class LoadReport:
    """What the constructor had to do: observable proof that caches are reused."""

    built: list[str] = field(default_factory=list)
    bank_source: str = "cache"
    cache_dir: Path = Path()
    prepare_seconds: float = 0.0


class LocalEmbedder:
    """Offline embedder: images, image+text pairs and texts in MiniLM's 384-dim space.

    The first start builds both ONNX graphs from the packaged weights and embeds the class
    prompts (a few seconds, announced through ``notify``); later starts load them from the
    cache. Safe to share between threads and event loops: inference is serialized by a
    lock and runs off the event loop. Never touches the process environment.
    """

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        recipe: ConseRecipe | None = None,
        max_images_per_request: int = MAX_IMAGES_PER_REQUEST,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        require_local_extra()
        self._recipe = recipe or DEFAULT_RECIPE
        base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.load_report = LoadReport(cache_dir=base / "local")
        root = self.load_report.cache_dir
        text_path = text_cache_path(root)
        vision_path = vision_cache_path(root)
        bank_path = bank_cache_path(root, self._recipe, text_path.stem)
        started = time.perf_counter()
        if not (text_path.exists() and vision_path.exists() and bank_path.exists()):
            (notify or log.info)(PREPARING_MESSAGE)
        self._text: TextEncoder = self._open(text_path, build_minilm_graph, TextEncoder, "text")
        self._vision: ImageClassifier = self._open(
            vision_path, build_efficientnet, ImageClassifier, "vision"
        )
        self._bank: PromptBank = load_or_compute_bank(self._text, self._recipe, bank_path)
        self.load_report.bank_source = self._bank.source
        if self.load_report.built or self._bank.source == "computed":
            self.load_report.prepare_seconds = time.perf_counter() - started
        self._info = EmbedderInfo(
            provider=PROVIDER,
            model=self._recipe.model_name,
            dimension=DIMENSION,
            family=self._recipe.model_name,
            max_images_per_request=max_images_per_request,
            supports_input_type=True,
            supports_image_text=True,
            supports_text=True,
            max_image_side=MAX_IMAGE_SIDE,
            tokens_per_image=0,
        )
        self._usage = Usage()
        self._usage_lock = threading.Lock()
        self._infer_lock = threading.Lock()
        # Pillow releases the GIL while decoding and resizing, so decoding in parallel
        # overlaps with itself; the network already uses every core on its own.
        self._decoders = ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="imgrag-local-decode"
        )
        self._closed = False

    def _open(
        self, path: Path, build: Callable[[Path], None], factory: Callable[[Path], T], what: str
    ) -> T:
        if path.exists():
            try:
                return factory(path)
            except Exception:
                # A truncated or foreign file under our name: rebuild it rather than fail.
                path.unlink(missing_ok=True)
        build(path)
        remove_stale(path)
        self.load_report.built.append(what)
        return factory(path)

    # --- protocol ------------------------------------------------------------------------

    @property
    def info(self) -> EmbedderInfo:
        """Provider "local", a versioned model name, 384 dims."""
        return self._info

    @property
    def usage(self) -> Usage:
        """A snapshot of the counters (requests, images, texts, text tokens)."""
        with self._usage_lock:
            return self._usage.model_copy()

    async def probe(self) -> EmbedderInfo:
        """Nothing to check: the model loaded in the constructor."""
        return self._info

    @property
    def recipe(self) -> ConseRecipe:
        """The ConSE recipe in use."""
        return self._recipe

    async def embed_images(
        self, items: Sequence[ImageInput], input_type: InputType
    ) -> list[Embedding]:
        """Embed images (with their captions, when set) without blocking the event loop."""
        _check_input_type(input_type)
        vectors = await asyncio.to_thread(self.encode_images, items)
        return [
            Embedding(vector=v.tolist(), input_type=input_type, text_applied=item.text is not None)
            for v, item in zip(vectors, items, strict=True)
        ]

    async def embed_texts(self, texts: Sequence[str], input_type: InputType) -> list[Embedding]:
        """Embed texts without blocking the event loop."""
        _check_input_type(input_type)
        vectors = await asyncio.to_thread(self.encode_texts, texts)
        return [Embedding(vector=v.tolist(), input_type=input_type) for v in vectors]

    async def aclose(self) -> None:
        """Stop the decode threads; later calls raise EmbedderError."""
        self._closed = True
        self._decoders.shutdown(wait=True)

    # --- blocking API (the emulator and benchmarks use these directly) -------------------

    def encode_images(self, items: Sequence[ImageInput]) -> F32:
        """An (n, 384) array of unit vectors; captions are fused where present."""
        self._ensure_open()
        if not items:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        prepared = list(self._decoders.map(prepare, [item.data for item in items]))
        captions = [(i, item.text) for i, item in enumerate(items) if item.text is not None]
        out = np.zeros((len(items), DIMENSION), dtype=np.float32)
        step = self._info.max_images_per_request
        for start in range(0, len(prepared), step):
            chunk = prepared[start : start + step]
            pixels = np.stack([p.pixels for p in chunk])
            with self._infer_lock:
                probs = self._vision.probabilities(pixels, self._recipe.temperature)
            out[start : start + len(chunk)] = self._image_vectors(
                probs, [p.thumbnail for p in chunk]
            )
        tokens = 0
        if captions:
            texts = [text for _, text in captions]
            with self._infer_lock:
                caption_vecs = self._text.encode(texts)
                tokens = self._text.count_tokens(texts)
            rows = [i for i, _ in captions]
            out[rows] = conse.fuse_caption(out[rows], caption_vecs, self._recipe.caption_weight)
        self._count(images=len(items), tokens=tokens)
        return out

    def encode_texts(self, texts: Sequence[str]) -> F32:
        """An (n, 384) array of unit vectors (plain MiniLM sentence embeddings)."""
        self._ensure_open()
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        batch = list(texts)
        with self._infer_lock:
            vectors = self._text.encode(batch)
            tokens = self._text.count_tokens(batch)
        self._count(texts=len(batch), tokens=tokens)
        return vectors

    def class_probabilities(
        self, items: Sequence[ImageInput], temperature: float | None = None
    ) -> F32:
        """ImageNet-1k probabilities per image (diagnostics, the recipe sweep).

        ``temperature`` defaults to the recipe's.
        """
        self._ensure_open()
        prepared = list(self._decoders.map(prepare, [item.data for item in items]))
        t = self._recipe.temperature if temperature is None else temperature
        with self._infer_lock:
            return self._vision.probabilities(np.stack([p.pixels for p in prepared]), t)

    # --- internals -----------------------------------------------------------------------

    def _image_vectors(self, probs: F32, thumbnails: Sequence[npt.NDArray[np.uint8]]) -> F32:
        recipe = self._recipe
        classes = conse.class_term(probs, self._bank.classes, recipe.top_k)
        weights = np.stack(
            [dominant_colour_weights(t, recipe.colours, recipe.colour_top) for t in thumbnails]
        )
        colours = conse.colour_term(weights, self._bank.colours)
        return conse.image_vectors(classes, colours, recipe.colour_weight)

    def _count(self, *, images: int = 0, texts: int = 0, tokens: int = 0) -> None:
        with self._usage_lock:
            u = self._usage
            u.requests += 1
            u.images += images
            u.texts += texts
            u.tokens += tokens

    def _ensure_open(self) -> None:
        if self._closed:
            raise EmbedderError("the local embedder is closed; create a new one")


def _check_input_type(input_type: str) -> None:
    if input_type not in get_args(InputType):
        raise InputTypeNotSupported(
            f"input_type {input_type!r} is not one of {', '.join(get_args(InputType))}"
        )


def load_local_embedder(
    cache_dir: Path | None = None, *, notify: Callable[[str], None] | None = None
) -> LocalEmbedder:
    """Create the local embedder, or raise ExtraNotInstalled naming the install command.

    ``notify`` receives the one-line notice of a first start (default: the log at INFO).
    """
    require_local_extra()
    return LocalEmbedder(cache_dir, notify=notify)
