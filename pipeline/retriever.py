"""The Python query API: ``from imgrag import Retriever``.

With the embedded store, only one process may open the index. ``Retriever`` opens it
directly when it is free and goes through the running daemon's local API when the daemon
owns it; any other owner is a clear error.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import httpx
from imgrag.connectors.errors import StoreLocked
from imgrag.pipeline.api import DaemonInfo, read_daemon_file
from imgrag.pipeline.config import Settings, load_settings
from imgrag.pipeline.retrieval import (
    FilterSpec,
    ImageQuery,
    QueryError,
    SearchHit,
    SearchService,
    image_bytes,
)
from imgrag.pipeline.runtime import open_checked, state_paths
from qdrant_client.http import models as qm

T = TypeVar("T")


class _Remote:
    """Searches through a running daemon's ``POST /search``."""

    def __init__(self, info: DaemonInfo, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.info = info
        self._http = httpx.AsyncClient(base_url=info.url, headers=headers, timeout=120.0)

    async def post(self, body: dict[str, Any]) -> list[SearchHit]:
        response = await self._http.post("/search", json=body)
        if response.status_code != 200:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise QueryError(f"the daemon (pid {self.info.pid}) refused the search: {message}")
        return [SearchHit.model_validate(h) for h in response.json()]

    async def aclose(self) -> None:
        await self._http.aclose()


def _filter_json(filter: FilterSpec) -> dict[str, Any] | None:
    if filter is None:
        return None
    if isinstance(filter, qm.Filter):
        return filter.model_dump(mode="json", exclude_none=True)
    return dict(filter)


class AsyncRetriever:
    """Async searches over an imgrag index. Use ``await AsyncRetriever.open()``."""

    def __init__(self) -> None:
        self._service: SearchService | None = None
        self._remote: _Remote | None = None
        self._stack = AsyncExitStack()

    @property
    def mode(self) -> str:
        """``"direct"`` (this process opened the index) or ``"daemon"`` (via its API)."""
        return "daemon" if self._remote is not None else "direct"

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str] | None = None, *, settings: Settings | None = None
    ) -> AsyncRetriever:
        settings = settings or load_settings(path)
        self = cls()
        try:
            index, embedder = await open_checked(settings)
        except StoreLocked:
            info = read_daemon_file(state_paths(settings)["daemon"])
            if info is None:
                raise  # owned by a process that is not a daemon: its message names it
            token = settings.api.token.get_secret_value() if settings.api.token else None
            self._remote = _Remote(info, token)
            self._stack.push_async_callback(self._remote.aclose)
            return self
        self._stack.callback(index.close)
        self._stack.push_async_callback(embedder.aclose)
        self._service = SearchService(
            embedder,
            index,
            source=settings.store.collection,
            image_format=settings.embedder.image_format,
        )
        return self

    async def search(
        self,
        *,
        text: str | None = None,
        image: ImageQuery | None = None,
        limit: int = 10,
        filter: FilterSpec = None,
        score_threshold: float | None = None,
        unique: bool = False,
    ) -> list[SearchHit]:
        """Search by text, by an example image (path, bytes or PIL image), or both."""
        if self._remote is not None:
            raw = await asyncio.to_thread(image_bytes, image) if image is not None else None
            return await self._remote.post(
                {
                    "text": text,
                    "image_base64": base64.b64encode(raw).decode() if raw else None,
                    "limit": limit,
                    "filter": _filter_json(filter),
                    "score_threshold": score_threshold,
                    "unique": unique,
                }
            )
        assert self._service is not None
        return await self._service.search(
            text=text,
            image=image,
            limit=limit,
            filter=filter,
            score_threshold=score_threshold,
            unique=unique,
        )

    async def similar(
        self, path: str, *, limit: int = 10, filter: FilterSpec = None, unique: bool = False
    ) -> list[SearchHit]:
        """Images like an indexed one (its path relative to the folder); no embedding call."""
        if self._remote is not None:
            return await self._remote.post(
                {
                    "similar_to": path,
                    "limit": limit,
                    "filter": _filter_json(filter),
                    "unique": unique,
                }
            )
        assert self._service is not None
        return await self._service.similar(path, limit=limit, filter=filter, unique=unique)

    async def aclose(self) -> None:
        await self._stack.aclose()

    async def __aenter__(self) -> AsyncRetriever:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Retriever:
    """Blocking searches over an imgrag index; usable from scripts and notebooks alike.

    >>> with Retriever.from_config() as r:
    ...     hits = r.search(text="a red car", limit=5)
    """

    def __init__(self, inner: AsyncRetriever, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop

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
        threading.Thread(target=loop.run_forever, name="imgrag-retriever", daemon=True).start()
        try:
            inner = asyncio.run_coroutine_threadsafe(
                AsyncRetriever.open(settings=settings), loop
            ).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            raise
        return cls(inner, loop)

    @property
    def mode(self) -> str:
        return self._inner.mode

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def search(
        self,
        *,
        text: str | None = None,
        image: ImageQuery | None = None,
        limit: int = 10,
        filter: FilterSpec = None,
        score_threshold: float | None = None,
        unique: bool = False,
    ) -> list[SearchHit]:
        """Search by text, by an example image (path, bytes or PIL image), or both."""
        return self._run(
            self._inner.search(
                text=text,
                image=image,
                limit=limit,
                filter=filter,
                score_threshold=score_threshold,
                unique=unique,
            )
        )

    def similar(
        self, path: str, *, limit: int = 10, filter: FilterSpec = None, unique: bool = False
    ) -> list[SearchHit]:
        """Images like an indexed one (its path relative to the folder); no embedding call."""
        return self._run(self._inner.similar(path, limit=limit, filter=filter, unique=unique))

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._inner.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
