"""Searching the index: by text, by an example image, or by image+text.

Queries are embedded with ``input_type="query"`` (documents were embedded with
``"document"``) and images are normalized exactly as documents are.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import Any

from imgrag.connectors.embedder import Embedder
from imgrag.connectors.errors import ModalityNotSupported
from imgrag.connectors.index import Hit, Index
from imgrag.pipeline.filters import build_filter
from imgrag.pipeline.images import Format, for_embedder
from imgrag.pipeline.keys import point_id
from imgrag.pipeline.query import QueryError, SearchQuery
from imgrag.pipeline.relevance import QueryKind, relevance_floor
from pydantic import BaseModel
from qdrant_client.http import models as qm

_TEXT_CACHE = 256


class SearchHit(BaseModel):
    """One result: the image's relative and absolute path, its score and payload.

    ``weak``: the score is below the model's relevance floor (see ``relevance.py``), as
    close as unrelated images come; it may still be the best there is."""

    id: str
    path: str
    abs_path: str
    score: float
    payload: dict[str, Any]
    weak: bool = False

    @classmethod
    def from_hit(cls, hit: Hit, floor: float | None = None) -> SearchHit:
        payload = hit.payload
        path = str(payload.get("path", ""))
        root = payload.get("root")
        abs_path = str(Path(str(root)) / path) if root else path
        weak = floor is not None and hit.score < floor
        return cls(
            id=hit.id, path=path, abs_path=abs_path, score=hit.score, payload=payload, weak=weak
        )


class SearchService:
    """Runs a SearchQuery against one index with one embedder: the core the Python API
    (opened directly) and the daemon's ``POST /search`` share."""

    def __init__(
        self, embedder: Embedder, index: Index, *, source: str, image_format: Format = "png"
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.source = source
        self.image_format = image_format
        self._text_cache: OrderedDict[str, list[float]] = OrderedDict()

    async def run(self, query: SearchQuery) -> list[SearchHit]:
        """Answer one query: embed it (or look up ``similar_to``), then search the index."""
        flt = build_filter(query.filter)
        if query.similar_to is not None:
            source = query.source or self.source
            pid = point_id(source, PurePosixPath(query.similar_to).as_posix())
            vector = await asyncio.to_thread(self.index.vector_by_id, pid)
            if vector is None:
                raise QueryError(
                    f"{query.similar_to} is not in the index (give its path relative to the folder)"
                )
            flt = flt or qm.Filter()
            flt.must_not = [*(flt.must_not or []), qm.HasIdCondition(has_id=[pid])]
        else:
            vector = await self._vector(query.text, query.image)
        hits = await asyncio.to_thread(
            lambda: self.index.search(
                vector,
                limit=query.limit,
                filter=flt,
                score_threshold=query.min_score,
                group_by_sha256=query.unique,
            )
        )
        kind: QueryKind = "text" if query.image is None and query.similar_to is None else "image"
        floor = relevance_floor(self.embedder.info.model, kind)
        return [SearchHit.from_hit(h, floor) for h in hits]

    async def _vector(self, text: str | None, image: bytes | None) -> list[float]:
        info = self.embedder.info
        if image is None:
            if not text:
                raise QueryError("nothing to search by: give text, an image, or both")
            cached = self._text_cache.get(text)
            if cached is not None:
                self._text_cache.move_to_end(text)
                return cached
            if not info.supports_text:
                raise QueryError(f"model {info.model} does not embed text queries")
            try:
                vector = (await self.embedder.embed_texts([text], "query"))[0].vector
            except ModalityNotSupported as exc:
                raise QueryError(f"text search is not available with {info.model}: {exc}") from exc
            self._text_cache[text] = vector
            if len(self._text_cache) > _TEXT_CACHE:
                self._text_cache.popitem(last=False)
            return vector
        if text and not info.supports_image_text:
            raise QueryError(
                f"model {info.model} does not take image+text queries: search by the image "
                "or by the text alone (or use a model such as embed-v-4-0)"
            )
        item = await asyncio.to_thread(for_embedder, image, info, self.image_format, text or None)
        return (await self.embedder.embed_images([item], "query"))[0].vector
