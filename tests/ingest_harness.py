"""A real pipeline for tests: emulator over HTTP (tiny backend), embedded store, journal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from imgrag.connectors.config import EmbedderConfig, StoreConfig
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.connectors.factory import create_embedder
from imgrag.connectors.paths import StatePaths
from imgrag.connectors.stores import QdrantIndex
from imgrag.pipeline.config import IngestConfig, Settings
from imgrag.pipeline.core import Core
from imgrag.pipeline.ingest import Indexer, Summary
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.runtime import Runtime, open_runtime, probe
from imgrag.pipeline.source_folder import FolderSource
from pydantic import SecretStr

from tests.conftest import EMULATOR_KEY


def settings_for(
    tmp_path: Path, emulator: EmulatorHandle, *, key: str = EMULATOR_KEY, **embedder: object
) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        embedder=EmbedderConfig(
            provider="foundry",
            endpoint=emulator.url,
            api_key=SecretStr(key),
            max_attempts=2,
            max_concurrency=8,
            **embedder,  # type: ignore[arg-type]  # each test passes valid [embedder] keys
        ),
        store=StoreConfig(kind="edge", collection="test"),
        ingest=IngestConfig(settle_seconds=0.2, rescan_minutes=0),
    )


@dataclass
class Pipeline:
    root: Path
    runtime: Runtime
    ingestor: Indexer
    emulator: EmulatorHandle

    def embed_calls(self) -> int:
        return sum(1 for r in self.emulator.state.requests if r.route == "images")

    def points(self) -> dict[str, dict[str, object]]:
        """path → payload for every point in the index."""
        index = self.runtime.index
        return {s.path: index.payload_by_id(s.id) or {} for s in index.file_states()}

    def paths(self) -> list[str]:
        return sorted(s.path for s in self.runtime.index.file_states())


@asynccontextmanager
async def pipeline(
    tmp_path: Path, emulator: EmulatorHandle, **embedder: object
) -> AsyncIterator[Pipeline]:
    root = tmp_path / "inbox"
    root.mkdir(exist_ok=True)
    settings = settings_for(tmp_path, emulator, **embedder)
    async with open_runtime(settings) as runtime:
        emulator.state.reset()  # forget the start-up probe: tests count embedding requests
        ingestor = runtime.ingestor(root)
        try:
            yield Pipeline(root, runtime, ingestor, emulator)
        finally:
            await ingestor.close()


async def until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Wait until ``condition()`` holds, checking every 50 ms; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.05)


async def reconcile_into_qdrant(settings: Settings, folder: Path, location: Path) -> Summary:
    """One reconcile of ``folder`` into the collection ``settings.store`` names, kept by
    qdrant-client's local mode in ``location`` (the server path without a server)."""
    paths = StatePaths.under(settings.state_dir)
    index = QdrantIndex(settings.store, location=location)
    embedder = create_embedder(settings.embedder, paths)
    journal = Journal(paths.journal)
    try:
        await probe(embedder)
        index.ensure_collection(Core.build(settings).spec_for(embedder))
        ingestor = Indexer(
            FolderSource(
                folder,
                name=Core.build(settings).registry.resolve(folder).name,
                rules=Core.build(settings).rules,
                settle_seconds=0,
            ),
            embedder=embedder,
            index=index,
            journal=journal,
        )
        try:
            return await ingestor.reconcile()
        finally:
            await ingestor.close()
    finally:
        journal.close()
        await embedder.aclose()
        index.close()
