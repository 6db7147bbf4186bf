"""One image the service rejects must not fail the other files of its request.

embed-v-4-0 takes up to 96 images per request and answers a bad image with one 422
``{"error": {"code": "Invalid input", ...}}`` for the whole request (the nested shape the
emulator reproduces after tests/test_foundry_contract.py's sources: the Cohere embed docs
in cohere-ai/cohere-developer-experience#375 and the Model Inference REST reference). The
ingester then embeds that batch image by image so only the bad file is journaled.
"""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from imgrag import RequestRejected
from imgrag.connectors.embedder import Embedding, ImageInput
from imgrag.connectors.emulator import EmulatorHandle, running_emulator
from imgrag.pipeline.batching import Batcher
from PIL import Image
from pydantic import SecretStr

from tests import images_factory as f
from tests.conftest import EMULATOR_KEY
from tests.foundry_helpers import images
from tests.ingest_harness import pipeline

CAP = 100_000
"""The emulator's per-image byte limit here: the small photos pass, the noisy one not."""


def noisy_png(side: int = 400) -> bytes:
    rng = random.Random(7)
    img = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert len(buf.getvalue()) > CAP  # prepared as PNG it stays over the emulator's cap
    return buf.getvalue()


async def test_a_batch_with_one_bad_image_gives_each_item_its_own_answer(
    tmp_path: Path, v4_capped: EmulatorHandle
) -> None:
    """Seven images leave in one request (the batch is full at once); the service refuses
    it; six get their vectors and only the bad one its rejection."""
    async with pipeline(tmp_path, v4_capped, model="embed-v-4-0") as p:
        batcher: Batcher[ImageInput, Embedding] = Batcher(
            p.ingestor._embed_batch, max_items=7, linger=60
        )
        items = [ImageInput(x.data) for x in images(6)]
        items.insert(3, ImageInput(noisy_png()))
        results = await asyncio.gather(
            *(batcher.submit(item) for item in items), return_exceptions=True
        )
    first = next(r for r in v4_capped.state.requests if r.route == "images")
    assert (first.inputs, first.status) == (7, 422)
    assert isinstance(results[3], RequestRejected) and "422" in str(results[3])
    good = [r for i, r in enumerate(results) if i != 3]
    assert all(isinstance(r, Embedding) and len(r.vector) == 1536 for r in good), results


@pytest.fixture
def v4_capped() -> Iterator[EmulatorHandle]:
    """An embed-v-4-0 emulator that refuses images over ``CAP`` bytes."""
    with running_emulator(
        api_key=SecretStr(EMULATOR_KEY), backend="tiny", model="embed-v-4-0", max_image_bytes=CAP
    ) as handle:
        yield handle


async def test_one_rejected_image_fails_alone_in_a_v4_batch(
    tmp_path: Path, v4_capped: EmulatorHandle
) -> None:
    """End to end: whichever batch the bad file lands in, only it is journaled."""
    async with pipeline(tmp_path, v4_capped, model="embed-v-4-0") as p:
        for i in range(6):
            f.save(f.photo(i + 1), p.root / f"good{i}.png", "PNG")
        (p.root / "bad.png").write_bytes(noisy_png())
        summary = await p.ingestor.reconcile()
        assert summary.indexed == 6 and summary.failed == 1
        assert summary.failed_by_reason == {"rejected": 1}
        assert p.paths() == [f"good{i}.png" for i in range(6)]
        failures = p.runtime.journal.recent(10)
        assert [x.path for x in failures] == ["bad.png"]
        assert "422" in failures[0].message
