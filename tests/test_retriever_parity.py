"""``Retriever`` is ``AsyncRetriever`` run to completion: same methods, same answers."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest
from imgrag import AsyncRetriever, QueryError, Retriever, SearchHit, SearchQuery
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline.config import Settings

from tests import images_factory as f
from tests.ingest_harness import settings_for

QUERIES = [
    SearchQuery(text="a red car", limit=3),
    SearchQuery(similar_to="p1.png", limit=2),
    SearchQuery(similar_to="p1.png", unique=True),
    SearchQuery(text="anything", min_score=2.0),
]


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in ("open", "aclose", "close")
    }


def test_every_async_method_has_a_blocking_twin_with_the_same_parameters() -> None:
    async_methods = _public(AsyncRetriever)
    sync_methods = _public(Retriever)
    assert set(async_methods) == set(sync_methods) == {"run", "search", "similar"}
    for name, signature in async_methods.items():
        assert list(sync_methods[name].parameters.values()) == list(
            signature.parameters.values()
        ), name
        assert inspect.iscoroutinefunction(getattr(AsyncRetriever, name))
    assert isinstance(inspect.getattr_static(Retriever, "mode"), property)


@pytest.fixture
def indexed(tmp_path: Path, emulator: EmulatorHandle) -> Settings:
    from imgrag.pipeline.runtime import open_runtime

    root = tmp_path / "inbox"
    for i in range(4):
        f.save(f.photo(i), root / f"p{i}.png", "PNG")
    settings = settings_for(tmp_path, emulator)

    async def ingest() -> None:
        async with open_runtime(settings) as runtime:
            ingestor = runtime.ingestor(root)
            assert (await ingestor.reconcile()).indexed == 4
            await ingestor.close()

    asyncio.run(ingest())
    return settings


def _answers_async(settings: Settings, image: Path) -> list[list[SearchHit] | str]:
    async def go() -> list[list[SearchHit] | str]:
        out: list[list[SearchHit] | str] = []
        async with await AsyncRetriever.open(settings=settings) as r:
            assert r.mode == "direct"
            for q in QUERIES:
                out.append(await r.run(q))
            out.append(await r.search(image=image, limit=2))
            out.append(await r.similar("p2.png", limit=1))
            try:
                await r.similar("nope.png")
            except QueryError as exc:
                out.append(str(exc))
        return out

    return asyncio.run(go())


def _answers_sync(settings: Settings, image: Path) -> list[list[SearchHit] | str]:
    out: list[list[SearchHit] | str] = []
    with Retriever.from_settings(settings) as r:
        assert r.mode == "direct"
        for q in QUERIES:
            out.append(r.run(q))
        out.append(r.search(image=image, limit=2))
        out.append(r.similar("p2.png", limit=1))
        try:
            r.similar("nope.png")
        except QueryError as exc:
            out.append(str(exc))
    return out


def test_blocking_and_async_retrievers_answer_alike(indexed: Settings, tmp_path: Path) -> None:
    image = f.save(f.photo(1), tmp_path / "q.png", "PNG")
    expected = _answers_async(indexed, image)
    assert expected[0] and "nope.png is not in the index" in str(expected[-1])
    assert expected[3] == []  # min_score above any cosine similarity
    assert _answers_sync(indexed, image) == expected
