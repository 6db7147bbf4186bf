"""The torch-free graphs against the PyTorch reference, and an index made before them.

Needs the ``parity`` extra (torch, transformers, efficientnet-lite-pytorch), which
``make test`` installs with the CPU build of torch pinned first; without it every test
here is skipped with the reason. Inputs: every photo bundled with scikit-image and 1,000
varied texts (bench/_local_parity.py); ``python -m bench.local_parity`` prints the same
figures as JSON.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the local extra is not installed")
for _module in ("torch", "transformers", "efficientnet_lite_pytorch"):
    pytest.importorskip(
        _module,
        reason="the parity extra is not installed "
        "(pip install torch==2.13.0, then pip install -e '.[parity]')",
    )

from imgrag.connectors.embedder import ImageInput  # noqa: E402
from imgrag.connectors.local import LocalEmbedder  # noqa: E402
from imgrag.connectors.local import torch_reference as ref  # noqa: E402
from imgrag.connectors.local.image_input import prepare  # noqa: E402
from imgrag.connectors.local.text_model import text_cache_path  # noqa: E402
from imgrag.connectors.local.vision_model import ImageClassifier, vision_cache_path  # noqa: E402

from bench._local_parity import (  # noqa: E402
    agreement,
    package_photos,
    parity_texts,
    reference_logits,
    reference_sentence_embeddings,
)

# The bar: an index built with the previous model stays valid only if every
# vector is this close to what the new graphs compute.
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def photos() -> list[tuple[str, bytes]]:
    return package_photos()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return parity_texts(1000)


@pytest.fixture(scope="module")
def new(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmbedder]:
    """The embedder as shipped now: graphs built from the weights without torch."""
    embedder = LocalEmbedder(tmp_path_factory.mktemp("new-cache"))
    assert embedder.load_report.built == ["text", "vision"]
    yield embedder


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEmbedder]:
    """The embedder as it was before: both graphs exported by torch.onnx, and the prompt
    bank computed through the exported text graph."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            "imgrag.connectors.local.embedder.build_minilm_graph", ref.export_minilm_with_torch
        )
        mp.setattr(
            "imgrag.connectors.local.embedder.build_efficientnet",
            ref.export_efficientnet_with_torch,
        )
        embedder = LocalEmbedder(tmp_path_factory.mktemp("old-cache"))
    assert embedder.load_report.built == ["text", "vision"]
    yield embedder


@pytest.fixture(scope="module")
def new_text_vectors(new: LocalEmbedder, texts: list[str]) -> np.ndarray:
    return new.encode_texts(texts)


def test_image_graph_matches_eager_torch_on_every_package_photo(
    new: LocalEmbedder, photos: list[tuple[str, bytes]]
) -> None:
    pixels = np.stack([prepare(data).pixels for _, data in photos])
    classifier = ImageClassifier(vision_cache_path(new.load_report.cache_dir))
    ours = classifier._session.run(["logits"], {"pixels": pixels})[0]
    theirs = reference_logits(ref.load_eager_efficientnet(), pixels)
    logits = agreement(ours, theirs)
    assert len(photos) >= 20
    assert logits.max_abs_diff < 1e-3, logits
    assert logits.min_cosine >= MIN_COSINE, logits
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).all()


def test_text_graph_matches_transformers_on_1000_texts(
    new_text_vectors: np.ndarray, texts: list[str]
) -> None:
    theirs = reference_sentence_embeddings(ref.load_eager_minilm(), texts)
    vectors = agreement(new_text_vectors, theirs)
    assert vectors.rows == 1000
    assert vectors.min_cosine >= MIN_COSINE, vectors
    assert vectors.max_abs_diff < 1e-4, vectors


def test_embeddings_match_those_of_the_torch_exported_model(
    new: LocalEmbedder,
    old: LocalEmbedder,
    photos: list[tuple[str, bytes]],
    texts: list[str],
    new_text_vectors: np.ndarray,
) -> None:
    """What an existing index holds (old) against what the new graphs compute: images
    (ConSE mix over the prompt bank, so the bank is compared too), image+text, and texts."""
    items = [ImageInput(data) for _, data in photos]
    captioned = [ImageInput(data, text=f"{name} on my desk") for name, data in photos]
    images = agreement(new.encode_images(items), old.encode_images(items))
    pairs = agreement(new.encode_images(captioned), old.encode_images(captioned))
    queries = agreement(new_text_vectors, old.encode_texts(texts))
    for measured in (images, pairs, queries):
        assert measured.min_cosine >= MIN_COSINE, measured
        assert measured.max_abs_diff < 1e-3, measured
    assert new.info == old.info  # same model name: existing collections stay valid


async def test_an_index_made_before_opens_with_no_reembedding(
    old: LocalEmbedder, photos: list[tuple[str, bytes]], tmp_path: Path
) -> None:
    """An index written by the torch-exported model (its cache files under the names the old
    code gave them) is opened by the new code: the collection check passes, nothing is
    embedded again, the stale exports are replaced, and searches give the same answers."""
    from imgrag.connectors.config import EmbedderConfig, StoreConfig
    from imgrag.pipeline.config import IngestConfig, Settings
    from imgrag.pipeline.images import for_embedder
    from imgrag.pipeline.runtime import open_runtime

    root = tmp_path / "inbox"
    root.mkdir()
    chosen = [(n, d) for n, d in photos if n.split(".")[0] in ("chelsea", "coffee", "rocket")]
    chosen += [(n, d) for n, d in photos if n.startswith(("coins", "moon", "astronaut"))]
    for name, data in chosen:
        (root / name).write_bytes(data)
    settings = Settings(
        state_dir=tmp_path / "state",
        embedder=EmbedderConfig(provider="local"),
        store=StoreConfig(kind="edge", collection="photos"),
        ingest=IngestConfig(settle_seconds=0, rescan_minutes=0),
    )
    cache = tmp_path / "state" / "cache" / "local"
    # The cache as the old code left it: torch exports under its key, and its bank.
    cache.mkdir(parents=True)
    old_dir = old.load_report.cache_dir
    old_names = {
        text_cache_path(old_dir): cache / "all-minilm-l6-v2-0ld0e4p0r7ed.onnx",
        vision_cache_path(old_dir): cache / "efficientnet-lite0-0ld0e4p0r7ed.onnx",
    }
    for source, target in old_names.items():
        shutil.copy(source, target)
    with pytest.MonkeyPatch.context() as mp:
        # The old run: its embedder loads exactly the old files.
        mp.setattr(
            "imgrag.connectors.local.embedder.text_cache_path",
            lambda root: root / old_names[text_cache_path(old_dir)].name,
        )
        mp.setattr(
            "imgrag.connectors.local.embedder.vision_cache_path",
            lambda root: root / old_names[vision_cache_path(old_dir)].name,
        )
        async with open_runtime(settings) as runtime:
            assert runtime.embedder.load_report.built == []  # type: ignore[attr-defined]
            ingestor = runtime.ingestor(root)
            before = await ingestor.reconcile()
            await ingestor.close()
            stored = {s.path: runtime.index.vector_by_id(s.id) for s in runtime.index.file_states()}
            cat_query = runtime.embedder.encode_texts(["a photo of a cat"])[0]  # type: ignore[attr-defined]
            old_ranking = [h.payload["path"] for h in runtime.index.search(cat_query, limit=6)]
    assert before.indexed == len(chosen) and before.failed == 0

    async with open_runtime(settings) as runtime:
        embedder = runtime.embedder
        images_before = embedder.usage.images
        ingestor = runtime.ingestor(root)
        after = await ingestor.reconcile()
        await ingestor.close()
        assert embedder.usage.images == images_before  # nothing embedded again
        assert embedder.load_report.built == ["text", "vision"]  # type: ignore[attr-defined]
        # Prepared as the pipeline prepares documents (downscaled, re-encoded).
        fresh = embedder.encode_images(  # type: ignore[attr-defined]
            [for_embedder((root / p).read_bytes(), embedder.info) for p in stored]
        )
        new_query = embedder.encode_texts(["a photo of a cat"])[0]  # type: ignore[attr-defined]
        new_ranking = [h.payload["path"] for h in runtime.index.search(new_query, limit=6)]

    assert (after.indexed, after.reused, after.failed) == (0, 0, 0)
    assert after.unchanged == len(chosen)
    assert agreement(fresh, list(stored.values())).min_cosine >= MIN_COSINE
    assert new_ranking == old_ranking and new_ranking[0] == "chelsea.png"
    assert sorted(p.name for p in cache.glob("*.onnx")) == sorted(
        [text_cache_path(cache).name, vision_cache_path(cache).name]
    )
