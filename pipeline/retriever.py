"""The Python query API: ``from imgrag import Retriever`` (or ``AsyncRetriever``).

With the embedded store, only one process may open the index. A retriever goes through
the one door (``door.py``): the running daemon's local API when a daemon owns the index,
else the store opened directly; any other owner is a clear error. ``Retriever`` is
``AsyncRetriever`` run on a private event loop, so the two always behave the same.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from imgrag.pipeline.config import Settings, load_settings
from imgrag.pipeline.core import Core
from imgrag.pipeline.door import DaemonDoor, Door, open_door
from imgrag.pipeline.query import ImageLike, SearchQuery, build_query
from imgrag.pipeline.retrieval import SearchHit

if TYPE_CHECKING:
    from qdrant_client.http import models as qm
else:
    from imgrag.connectors._qdrant_models import qm

T = TypeVar("T")
FilterLike = dict[str, Any] | qm.Filter | None
Mode = Literal["direct", "daemon"]


class AsyncRetriever:
    """Async searches over an imgrag index. Use ``await AsyncRetriever.open()``."""

    def __init__(self, door: Door) -> None:
        self._door = door

    @property
    def mode(self) -> Mode:
        """``"direct"`` (this process opened the index) or ``"daemon"`` (via its API)."""
        return "daemon" if isinstance(self._door, DaemonDoor) else "direct"

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str] | None = None, *, settings: Settings | None = None
    ) -> AsyncRetriever:
        """Open the index named by a TOML profile (default: $IMGRAG_CONFIG or
        configs/default.toml), or described by already-loaded ``settings``. Opening sends
        nothing to the embedder: a search costs exactly its own request."""
        core = Core.build(settings or load_settings(path))
        return cls(await open_door(core))

    async def run(self, query: SearchQuery) -> list[SearchHit]:
        """Answer a prepared ``SearchQuery``."""
        return await self._door.search(query)

    async def search(
        self,
        text: str | None = None,
        *,
        image: ImageLike | None = None,
        limit: int = 10,
        filter: FilterLike = None,
        min_score: float | None = None,
        unique: bool = False,
    ) -> list[SearchHit]:
        """Search by text, by an example image (path, bytes or PIL image), or both."""
        query = await asyncio.to_thread(
            build_query,
            text=text,
            image=image,
            limit=limit,
            filter=filter,
            min_score=min_score,
            unique=unique,
        )
        return await self.run(query)

    async def similar(
        self,
        path: str,
        *,
        limit: int = 10,
        filter: FilterLike = None,
        min_score: float | None = None,
        unique: bool = False,
    ) -> list[SearchHit]:
        """Images like an indexed one (its path relative to the folder); no embedding call."""
        query = build_query(
            similar_to=path, limit=limit, filter=filter, min_score=min_score, unique=unique
        )
        return await self.run(query)

    async def aclose(self) -> None:
        await self._door.aclose()

    async def __aenter__(self) -> AsyncRetriever:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Retriever:
    """Blocking searches over an imgrag index; usable from scripts and notebooks alike.
    Every method is the ``AsyncRetriever`` method of the same name, run to completion.

    >>> with Retriever.from_config() as r:
    ...     hits = r.search("a red car", limit=5)
    """

    def __init__(
        self,
        inner: AsyncRetriever,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread | None = None,
    ) -> None:
        self._inner = inner
        self._loop = loop
        self._thread = thread

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None) -> Retriever:
        """Open the index named by a TOML profile (default: $IMGRAG_CONFIG or
        configs/default.toml)."""
        return cls.from_settings(load_settings(path))

    @classmethod
    def from_settings(cls, settings: Settings) -> Retriever:
        """Open the index described by already-loaded settings."""
        # A private loop in a thread: works whether or not the caller runs an event loop.
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="imgrag-retriever", daemon=True)
        thread.start()
        try:
            inner = asyncio.run_coroutine_threadsafe(
                AsyncRetriever.open(settings=settings), loop
            ).result()
        except BaseException:
            _stop(loop, thread)
            raise
        return cls(inner, loop, thread)

    @property
    def mode(self) -> Mode:
        """``"direct"`` (this process opened the index) or ``"daemon"`` (via its API)."""
        return self._inner.mode

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def run(self, query: SearchQuery) -> list[SearchHit]:
        """Answer a prepared ``SearchQuery``."""
        return self._run(self._inner.run(query))

    def search(
        self,
        text: str | None = None,
        *,
        image: ImageLike | None = None,
        limit: int = 10,
        filter: FilterLike = None,
        min_score: float | None = None,
        unique: bool = False,
    ) -> list[SearchHit]:
        """Search by text, by an example image (path, bytes or PIL image), or both."""
        return self._run(
            self._inner.search(
                text, image=image, limit=limit, filter=filter, min_score=min_score, unique=unique
            )
        )

    def similar(
        self,
        path: str,
        *,
        limit: int = 10,
        filter: FilterLike = None,
        min_score: float | None = None,
        unique: bool = False,
    ) -> list[SearchHit]:
        """Images like an indexed one (its path relative to the folder); no embedding call."""
        return self._run(
            self._inner.similar(
                path, limit=limit, filter=filter, min_score=min_score, unique=unique
            )
        )

    def close(self) -> None:
        if self._loop.is_running():
            try:
                self._run(self._inner.aclose())
            finally:
                _stop(self._loop, self._thread)

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread | None) -> None:
    loop.call_soon_threadsafe(loop.stop)
    if thread is not None:
        thread.join(timeout=10)
    if not loop.is_running():
        loop.close()  # an unclosed loop is a ResourceWarning under filterwarnings = error
