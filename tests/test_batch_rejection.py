"""One image the service rejects must not fail the other files of its request.

embed-v-4-0 takes up to 96 images per request (Foundry model catalog, Cohere Embed v4:
"up to 96 images per call"), and the service answers a bad image with a nested 422
``{"error": {"code": "Invalid input", ...}}`` for the whole request (quoted in the
azure-ai-inference issue threads). The ingester then embeds that batch image by image so
only the bad file is journaled as rejected.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from imgrag.connectors.emulator import EmulatorHandle, running_emulator
from PIL import Image
from pydantic import SecretStr

from tests import images_factory as f
from tests.conftest import EMULATOR_KEY
from tests.ingest_harness import pipeline

CAP = 100_000
"""The emulator's per-image byte limit here: the small photos pass, the noisy one not."""


def noisy_png(path: Path, side: int = 400) -> None:
    rng = random.Random(7)
    img = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert len(buf.getvalue()) > CAP  # prepared as PNG it stays over the emulator's cap
    path.write_bytes(buf.getvalue())


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
    emulator = v4_capped
    async with pipeline(tmp_path, emulator, model="embed-v-4-0") as p:
        for i in range(6):
            f.save(f.photo(i + 1), p.root / f"good{i}.png", "PNG")
        noisy_png(p.root / "bad.png")
        summary = await p.ingestor.reconcile()
        records = [r for r in emulator.state.requests if r.route == "images"]
        # The bad image did travel in a request of several, which the service refused.
        assert any(r.inputs > 1 and r.status == 422 for r in records), records
        assert summary.indexed == 6 and summary.failed == 1
        assert summary.failed_by_reason == {"rejected": 1}
        assert p.paths() == [f"good{i}.png" for i in range(6)]
        failures = p.runtime.journal.recent(10)
        assert [x.path for x in failures] == ["bad.png"]
        assert "422" in failures[0].message
