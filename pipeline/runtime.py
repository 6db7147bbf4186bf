"""Opening the index in this process: for writing (``open_runtime``: the embedder probed,
the collection made or checked) or for reading (``open_reader``: no request at all)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from imgrag._errors import TransientEmbedderError
from imgrag.connectors.embedder import Embedder
from imgrag.connectors.index import Index
from imgrag.pipeline.config import Settings
from imgrag.pipeline.core import Core
from imgrag.pipeline.ingest import Indexer, Outcome
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.source_folder import FolderSource
from imgrag.pipeline.sources import Resolved

log = logging.getLogger("imgrag.runtime")

CoreLike = Core | Settings
"""What opening accepts: a built core, or settings to build one from (scripts and tests)."""


def as_core(value: CoreLike) -> Core:
    return value if isinstance(value, Core) else Core.build(value)


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
    """The store, the embedder and the journal, opened by this process for writing."""

    core: Core
    embedder: Embedder
    index: Index
    journal: Journal

    @property
    def settings(self) -> Settings:
        return self.core.settings

    def ingestor(
        self,
        source: Resolved | Path,
        *,
        on_progress: Callable[[str, Outcome], None] | None = None,
        observe_embed: Callable[[float], None] | None = None,
    ) -> Indexer:
        """The one indexer over a folder source (registered on first use)."""
        s = self.settings
        if not isinstance(source, Resolved):
            source = self.core.registry.resolve(source)
        folder = FolderSource(
            source.root,
            name=source.name,
            rules=self.core.rules,
            scope=source.scope,
            settle_seconds=s.ingest.settle_seconds,
        )
        return Indexer(
            folder,
            embedder=self.embedder,
            index=self.index,
            journal=self.journal,
            image_format=s.embedder.image_format,
            embed_concurrency=self.embedder.info.recommended_concurrency,
            on_progress=on_progress,
            observe_embed=observe_embed,
            thumbs=self.core.thumbs if s.ingest.thumbnails else None,
        )


async def open_checked(
    settings: CoreLike,
    *,
    wait_for_embedder: bool = False,
    on_store_open: Callable[[], None] | None = None,
) -> tuple[Index, Embedder]:
    """The index and the embedder for writing: the embedder is probed (what it really
    serves) and the collection made for it, or checked against it. The index is opened
    first, so a locked store fails before a model loads; ``on_store_open`` runs once it is
    ours, before the model loads."""
    core = as_core(settings)
    index = core.open_index()
    try:
        if on_store_open is not None:
            on_store_open()
        embedder = core.create_embedder()
        try:
            await probe(embedder, wait=wait_for_embedder)
            index.ensure_collection(core.spec_for(embedder))
        except BaseException:
            await embedder.aclose()
            raise
    except BaseException:
        index.close()
        raise
    return index, embedder


@asynccontextmanager
async def open_runtime(
    settings: CoreLike,
    *,
    wait_for_embedder: bool = False,
    on_store_open: Callable[[], None] | None = None,
) -> AsyncIterator[Runtime]:
    """Embedder, index (collection checked against the model) and journal; closed on exit."""
    core = as_core(settings)
    core.settings.state_dir.mkdir(parents=True, exist_ok=True)
    index, embedder = await open_checked(
        core, wait_for_embedder=wait_for_embedder, on_store_open=on_store_open
    )
    try:
        journal = core.open_journal()
        try:
            yield Runtime(core, embedder, index, journal)
        finally:
            journal.close()
    finally:
        index.close()
        await embedder.aclose()


class Reader:
    """The index opened for reading (search, status, forget): no probe, no billed request.

    The collection's record says which model, dimension and family it was made with; the
    embedder is made only when a query needs one, and checked against the record without
    asking the service. ``spec`` is None when the collection does not exist yet.
    """

    def __init__(self, core: Core, index: Index) -> None:
        self.core = core
        self.index = index
        self.spec = index.recorded_spec(core.collection)
        if self.spec is not None:
            index.ensure_collection(self.spec)
        self._embedder: Embedder | None = None

    async def embedder(self) -> Embedder:
        """The query embedder (made once), checked against the collection's record."""
        if self._embedder is None:
            embedder = self.core.create_embedder(family=self.spec.family if self.spec else "")
            if self.spec is not None:
                wanted = self.core.spec_for(embedder)
                if not self.core.settings.embedder.dimensions:
                    # Unless the config asks for a dimension, the one the deployment served
                    # when the collection was made is the truth (the catalog's is a guess).
                    wanted = wanted.model_copy(update={"dimension": self.spec.dimension})
                try:
                    self.index.ensure_collection(wanted)  # raises CollectionMismatch
                except BaseException:
                    await embedder.aclose()
                    raise
            self._embedder = embedder
        return self._embedder

    async def aclose(self) -> None:
        try:
            if self._embedder is not None:
                await self._embedder.aclose()
        finally:
            self.index.close()


def open_reader(settings: CoreLike) -> Reader:
    """The index for reading (StoreLocked when another process holds the embedded one)."""
    core = as_core(settings)
    index = core.open_index()
    try:
        return Reader(core, index)
    except BaseException:
        index.close()
        raise
