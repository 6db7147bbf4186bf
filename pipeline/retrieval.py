"""Searching the index: by text, by an example image, or by image+text.

Queries are embedded with ``input_type="query"`` (documents were embedded with
``"document"``) and images are normalized exactly as documents are.
"""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from imgrag.connectors.embedder import Embedder
from imgrag.connectors.errors import ModalityNotSupported
from imgrag.connectors.index import Hit, Index
from imgrag.pipeline.filters import build_filter
from imgrag.pipeline.images import Format, for_embedder
from imgrag.pipeline.keys import point_id
from PIL import Image
from pydantic import BaseModel
from qdrant_client.http import models as qm

ImageQuery = str | Path | bytes | Image.Image
FilterSpec = Mapping[str, Any] | qm.Filter | None
_TEXT_CACHE = 256


class SearchHit(BaseModel):
    """One result: the image's relative and absolute path, its score and payload."""

    id: str
    path: str
    abs_path: str
    score: float
    payload: dict[str, Any]

    @classmethod
    def from_hit(cls, hit: Hit) -> SearchHit:
        payload = hit.payload
        path = str(payload.get("path", ""))
        root = payload.get("root")
        abs_path = str(Path(str(root)) / path) if root else path
        return cls(id=hit.id, path=path, abs_path=abs_path, score=hit.score, payload=payload)


class QueryError(ValueError):
    """The query cannot be run as asked (nothing to search by, a mode the model refuses)."""


def image_bytes(image: ImageQuery) -> bytes:
    """Encoded bytes of a query image given as a path, bytes or a PIL image."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    try:
        return Path(image).read_bytes()
    except FileNotFoundError:
        raise QueryError(f"query image {image} does not exist") from None


class SearchService:
    """The async core shared by the Python API and the daemon's HTTP API."""

    def __init__(
        self, embedder: Embedder, index: Index, *, source: str, image_format: Format = "png"
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.source = source
        self.image_format = image_format
        self._text_cache: OrderedDict[str, list[float]] = OrderedDict()
        self.text_cache_hits = 0

    async def query_vector(self, text: str | None, image: ImageQuery | None) -> list[float]:
        info = self.embedder.info
        if image is None:
            if not text:
                raise QueryError("nothing to search by: give text, an image, or both")
            cached = self._text_cache.get(text)
            if cached is not None:
                self._text_cache.move_to_end(text)
                self.text_cache_hits += 1
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
        raw = await asyncio.to_thread(image_bytes, image)
        item = await asyncio.to_thread(for_embedder, raw, info, self.image_format, text or None)
        return (await self.embedder.embed_images([item], "query"))[0].vector

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
        vector = await self.query_vector(text, image)
        return await self.search_vector(vector, limit, filter, score_threshold, unique)

    async def search_vector(
        self,
        vector: list[float],
        limit: int = 10,
        filter: FilterSpec = None,
        score_threshold: float | None = None,
        unique: bool = False,
        exclude_id: str | None = None,
    ) -> list[SearchHit]:
        flt = build_filter(filter)
        if exclude_id is not None:
            flt = flt or qm.Filter()
            flt.must_not = [*(flt.must_not or []), qm.HasIdCondition(has_id=[exclude_id])]
        hits = await asyncio.to_thread(
            lambda: self.index.search(
                vector,
                limit=limit,
                filter=flt,
                score_threshold=score_threshold,
                group_by_sha256=unique,
            )
        )
        return [SearchHit.from_hit(h) for h in hits]

    async def similar(
        self, path: str, *, limit: int = 10, filter: FilterSpec = None, unique: bool = False
    ) -> list[SearchHit]:
        rel = PurePosixPath(path).as_posix()
        pid = point_id(self.source, rel)
        vector = await asyncio.to_thread(self.index.vector_by_id, pid)
        if vector is None:
            raise QueryError(f"{path} is not in the index (give its path relative to the folder)")
        return await self.search_vector(vector, limit, filter, None, unique, exclude_id=pid)
