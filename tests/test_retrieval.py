"""Searching: the offline model over real photos, query modes at the emulator, filters."""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path

import pytest
from imgrag import AsyncRetriever, QueryError, Retriever
from imgrag.connectors.config import EmbedderConfig, StoreConfig
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline.config import IngestConfig, Settings
from imgrag.pipeline.runtime import open_runtime
from PIL import Image, ImageOps
from pydantic import SecretStr

from tests import images_factory as f
from tests.conftest import EMULATOR_KEY

PHOTOS = {
    "cat": "chelsea.png",
    "coffee": "coffee.png",
    "astronaut": "astronaut.png",
    "rocket": "rocket.jpg",
    "motorcycle": "motorcycle_left.png",
    "coins": "coins.png",
    "moon": "moon.png",
}


def skimage_photo(name: str) -> Path:
    return Path(str(resources.files("skimage").joinpath("data", name)))


async def ingest(settings: Settings, root: Path) -> None:
    async with open_runtime(settings) as runtime:
        ingestor = runtime.ingestor(root)
        summary = await ingestor.reconcile()
        await ingestor.close()
    assert summary.failed == 0, summary


# -- the offline model over real photos ---------------------------------------------------


@pytest.fixture(scope="module")
def photo_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The package photos (plus a flipped copy in another folder) indexed with the local model."""
    import asyncio

    base = tmp_path_factory.mktemp("photos")
    root = base / "inbox"
    for key, name in PHOTOS.items():
        folder = root / ("space" if key in ("rocket", "astronaut", "moon") else "earth")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(skimage_photo(name), folder / f"{key}{Path(name).suffix}")
    shutil.copy(skimage_photo("chelsea.png"), root / "earth" / "cat-copy.png")
    (root / "earth" / "coffee.json").write_text('{"tags": ["breakfast"]}')
    settings = Settings(
        state_dir=base / "state",
        ingest=IngestConfig(settle_seconds=0),
        store=StoreConfig(collection="photos"),
    )
    asyncio.run(ingest(settings, root))
    yield settings


@pytest.fixture(scope="module")
def retriever(photo_index: Settings) -> Iterator[Retriever]:
    with Retriever.from_settings(photo_index) as r:
        yield r


def test_a_cat_photo_ranks_first_for_a_cat(retriever: Retriever) -> None:
    hits = retriever.search(text="a photo of a cat", limit=3, unique=True)
    assert hits[0].path in ("earth/cat.png", "earth/cat-copy.png")
    assert Path(hits[0].abs_path).is_file()
    assert retriever.mode == "direct"


def test_flipped_and_cropped_copy_finds_the_original(retriever: Retriever, tmp_path: Path) -> None:
    with Image.open(skimage_photo("rocket.jpg")) as img:
        w, h = img.size
        query = ImageOps.mirror(img.convert("RGB")).crop((w // 10, h // 10, w - w // 10, h))
    hits = retriever.search(image=query, limit=3)
    assert hits[0].path == "space/rocket.jpg"


def test_filters_unique_and_similar(retriever: Retriever) -> None:
    space = retriever.search(text="a photo of a cat", limit=10, filter={"folder": "space"})
    assert space and {h.payload["folder"] for h in space} == {"space"}
    tagged = retriever.search(text="anything", limit=10, filter={"tags": ["breakfast"]})
    assert [h.path for h in tagged] == ["earth/coffee.png"]
    both = retriever.search(text="a tabby cat", limit=10)
    unique = retriever.search(text="a tabby cat", limit=10, unique=True)
    cats = {"earth/cat.png", "earth/cat-copy.png"}
    assert cats <= {h.path for h in both}
    assert len(cats & {h.path for h in unique}) == 1
    like = retriever.similar("earth/cat.png", limit=3)
    assert like[0].path == "earth/cat-copy.png" and "earth/cat.png" not in {h.path for h in like}
    with pytest.raises(QueryError, match="not in the index"):
        retriever.similar("earth/nope.png")


# -- query modes reach the service with input_type=query -------------------------------------


def foundry_settings(tmp_path: Path, handle: EmulatorHandle, model: str) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        embedder=EmbedderConfig(
            provider="foundry", model=model, endpoint=handle.url, api_key=SecretStr(EMULATOR_KEY)
        ),
        ingest=IngestConfig(settle_seconds=0),
        store=StoreConfig(collection="modes"),
    )


@pytest.fixture
async def v4_index(tmp_path: Path, v4_emulator: EmulatorHandle) -> AsyncIterator[Settings]:
    root = tmp_path / "inbox"
    for i in range(3):
        f.save(f.photo(i), root / f"p{i}.png", "PNG")
    settings = foundry_settings(tmp_path, v4_emulator, "embed-v-4-0")
    await ingest(settings, root)
    v4_emulator.state.reset()
    yield settings


async def test_every_query_mode_is_sent_as_query(
    v4_index: Settings, v4_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    query = f.save(f.photo(1), tmp_path / "q.png", "PNG")
    async with await AsyncRetriever.open(settings=v4_index) as r:
        v4_emulator.state.reset()  # the start-up probe is not a query
        by_image = await r.search(image=query, limit=1)
        await r.search(image=query.read_bytes(), text="at the beach", limit=1)
        await r.search(text="a red car", limit=1)
        await r.search(text="a red car", limit=1)  # cached: no second request
        await r.similar("p2.png")  # reuses the stored vector: no request
    assert by_image[0].path == "p1.png"
    seen = [(x.route, x.input_type, x.text_inputs) for x in v4_emulator.state.requests]
    assert seen == [("images", "query", []), ("images", "query", [0]), ("texts", "query", [])]


async def test_image_text_query_refused_by_a_model_without_it(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    f.save(f.photo(1), root / "p.png", "PNG")
    settings = foundry_settings(tmp_path, emulator, "Cohere-embed-v3-english")
    await ingest(settings, root)
    async with await AsyncRetriever.open(settings=settings) as r:
        with pytest.raises(QueryError, match=r"Cohere-embed-v3-english does not take image\+text"):
            await r.search(image=root / "p.png", text="at night")
        with pytest.raises(QueryError, match="nothing to search by"):
            await r.search()


async def test_query_images_are_prepared_like_documents(tmp_path: Path) -> None:
    from collections.abc import Sequence

    from imgrag.connectors.embedder import Embedding, ImageInput, InputType
    from imgrag.connectors.tiny import TinyEmbedder
    from imgrag.pipeline.images import DEFAULT_MAX_SIDE, MODEL_PIXELS, fit
    from imgrag.pipeline.retrieval import SearchService

    seen: list[ImageInput] = []

    class Recording(TinyEmbedder):
        async def embed_images(
            self, items: Sequence[ImageInput], input_type: InputType
        ) -> list[Embedding]:
            seen.extend(items)
            return await super().embed_images(items, input_type)

    embedder = Recording(16)
    # No index: only the query's embedding is under test.
    service = SearchService(embedder, index=None, source="s", image_format="jpeg")  # type: ignore[arg-type]  # no index needed
    query = f.save(f.big_noisy_photo((3000, 2000)), tmp_path / "q.png", "PNG")
    await service._vector(None, query.read_bytes())
    sent = seen[0]
    assert sent.mime == "image/jpeg"  # the configured [embedder] image_format
    with Image.open(io.BytesIO(sent.data)) as img:
        # The same limits documents get: 2,048 px and the model's pixel budget.
        assert img.size == fit((3000, 2000), DEFAULT_MAX_SIDE, MODEL_PIXELS) == (1920, 1280)
    await embedder.aclose()
