"""Assembling the parts a command needs from the settings: embedder, index, journal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from imgrag.connectors.embedder import Embedder
from imgrag.connectors.errors import TransientEmbedderError
from imgrag.connectors.factory import create_embedder
from imgrag.connectors.index import CollectionSpec, Index
from imgrag.connectors.paths import StatePaths
from imgrag.connectors.stores import open_index
from imgrag.pipeline.candidates import Rules
from imgrag.pipeline.config import Settings
from imgrag.pipeline.ingest import Ingestor, Outcome
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.sources import Registry, Resolved

log = logging.getLogger("imgrag.runtime")


def state_paths(settings: Settings) -> StatePaths:
    """Where each piece of state lives inside the configured state directory."""
    return StatePaths.under(settings.state_dir)


def registry(settings: Settings) -> Registry:
    """The sources of the configured state directory."""
    return Registry(state_paths(settings).sources)


def resolve_source(
    settings: Settings, directory: Path, name: str | None = None, *, register: bool = True
) -> Resolved:
    """The source a folder named by the user is (registered on first use when ``register``)."""
    return registry(settings).resolve(directory, name, register=register)


def source_list(settings: Settings) -> Callable[[], list[tuple[str, str]]]:
    """The registered sources as (name, root), read afresh on each call."""
    reg = registry(settings)
    return lambda: [(e.name, e.root) for e in reg.entries()]


def rules_for(settings: Settings) -> Rules:
    return Rules(
        include=tuple(settings.ingest.include),
        exclude=tuple(settings.ingest.exclude),
        ignore_dirs=(settings.state_dir,),
    )


def collection_spec(settings: Settings, embedder: Embedder) -> CollectionSpec:
    """What the collection must have been made for: this model, its dimension, documents."""
    info = embedder.info
    return CollectionSpec(
        name=settings.store.collection,
        model=info.model,
        dimension=info.dimension,
        input_type="document",
        provider=info.provider,
    )


async def probe(embedder: Embedder, *, wait: bool = False) -> None:
    """Check the embedder answers, and learn its real dimension, before any work.

    When it does not answer: one-shot commands stop with the cause; the daemon (``wait``)
    says what it is waiting for and tries again with backoff, up to every five minutes.
    """
    delay = 5.0
    while True:
        try:
            await embedder.probe()
            return
        except TransientEmbedderError as exc:
            if not wait:
                raise TransientEmbedderError(
                    f"{exc}; is the embedder running and [embedder] endpoint right?",
                    attempts=exc.attempts,
                    status=exc.status,
                ) from None
            log.warning("waiting for the embedder: %s; trying again in %.0fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 300.0)


@dataclass
class Runtime:
    settings: Settings
    embedder: Embedder
    index: Index
    journal: Journal

    def ingestor(
        self,
        source: Resolved | Path,
        *,
        on_progress: Callable[[str, Outcome], None] | None = None,
        observe_embed: Callable[[float], None] | None = None,
    ) -> Ingestor:
        s = self.settings
        if not isinstance(source, Resolved):
            source = resolve_source(s, source)
        return Ingestor(
            source.root,
            embedder=self.embedder,
            index=self.index,
            journal=self.journal,
            rules=rules_for(s),
            source=source.name,
            scope=source.scope,
            image_format=s.embedder.image_format,
            embed_concurrency=self.embedder.info.recommended_concurrency,
            settle_seconds=s.ingest.settle_seconds,
            on_progress=on_progress,
            observe_embed=observe_embed,
            thumbs=s.state_dir / "thumbs" if s.ingest.thumbnails else None,
        )


async def open_checked(
    settings: Settings,
    *,
    wait_for_embedder: bool = False,
    on_store_open: Callable[[], None] | None = None,
) -> tuple[Index, Embedder]:
    """The index and the embedder, the collection checked against what the embedder really
    serves. The index is opened first, so a locked store fails before a model loads;
    ``on_store_open`` runs once it is ours, before the model loads."""
    paths = state_paths(settings)
    index = open_index(settings.store, paths)
    try:
        if on_store_open is not None:
            on_store_open()
        embedder = create_embedder(settings.embedder, paths)
        try:
            await probe(embedder, wait=wait_for_embedder)
            index.ensure_collection(collection_spec(settings, embedder))
        except BaseException:
            await embedder.aclose()
            raise
    except BaseException:
        index.close()
        raise
    return index, embedder


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    wait_for_embedder: bool = False,
    on_store_open: Callable[[], None] | None = None,
) -> AsyncIterator[Runtime]:
    """Embedder, index (collection checked against the model) and journal; closed on exit."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    index, embedder = await open_checked(
        settings, wait_for_embedder=wait_for_embedder, on_store_open=on_store_open
    )
    try:
        journal = Journal(state_paths(settings).journal)
        try:
            yield Runtime(settings, embedder, index, journal)
        finally:
            journal.close()
    finally:
        index.close()
        await embedder.aclose()
