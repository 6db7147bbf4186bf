"""Searching the index: by text, by an example image, or by image+text.

Queries are embedded with ``input_type="query"`` (documents were embedded with
``"document"``) and images are normalized exactly as documents are.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from imgrag._errors import ModalityNotSupported, QueryError
from imgrag.connectors.embedder import Embedder, EmbedderInfo, ImageInput
from imgrag.connectors.index import Hit, Index
from imgrag.pipeline.filters import build_filter
from imgrag.pipeline.images import Format, for_embedder, probe
from imgrag.pipeline.keys import point_id
from imgrag.pipeline.relevance import QueryKind, relevance_floor
from pydantic import BaseModel

if TYPE_CHECKING:
    from imgrag.pipeline.query import SearchQuery
    from qdrant_client.http import models as qm
else:
    from imgrag.connectors._qdrant_models import qm

_TEXT_CACHE = 256
QUERY_MAX_PIXELS = 50_000_000
"""Largest JPEG query image, in pixels (read from its header before any pixel is decoded):
JPEG decodes at 1/2, 1/4 or 1/8 scale, so a 50 MP photo costs about 12 MB."""
QUERY_FULL_DECODE_PIXELS = 36_000_000
"""Largest query image in the other formats (an 8K screenshot is 33 MP): they decode at full
size, 4 bytes a pixel, so this bounds one query's buffer to about 150 MB."""
_DECODER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgrag-query-image")
"""The one thread that decodes query images: a 49 MP PNG has no scaled decoder and needs
about 200 MB while it is decoded, so concurrent large queries wait for each other (one
thread also keeps the freed buffers in one malloc arena, for the next query to reuse)."""


class SearchHit(BaseModel):
    """One result: the image's relative and absolute path, its score and payload.

    ``weak``: the score is below the model's relevance floor (see ``relevance.py``), as
    close as unrelated images come; it may still be the best there is."""

    id: str
    path: str
    abs_path: str
    source: str | None = None
    """The source (named folder) the image belongs to; None for a point from before sources."""
    score: float
    payload: dict[str, Any]
    weak: bool = False

    @classmethod
    def from_hit(cls, hit: Hit, floor: float | None = None) -> SearchHit:
        payload = hit.payload
        path = str(payload.get("path", ""))
        root = payload.get("root")
        abs_path = str(Path(str(root)) / path) if root else path
        if payload.get("kind") == "blob" and isinstance(payload.get("url"), str):
            abs_path = payload["url"]  # a blob source: its URL, never with a SAS
        source = payload.get("source")
        return cls(
            id=hit.id,
            path=path,
            abs_path=abs_path,
            source=source if isinstance(source, str) else None,
            score=hit.score,
            payload=payload,
            weak=floor is not None and hit.score < floor,
        )


SourceList = Callable[[], Sequence[tuple[str, str]]]
"""The registered sources as (name, root), read when a query needs them."""


class SearchService:
    """Runs a SearchQuery against one index with one embedder: the core the Python API
    (opened directly) and the daemon's ``POST /search`` share."""

    def __init__(
        self,
        embedder: Embedder | Callable[[], Awaitable[Embedder]],
        index: Index,
        *,
        source: str,
        image_format: Format = "png",
        sources: SourceList | None = None,
        model: str | None = None,
    ) -> None:
        """``embedder`` may be a coroutine function that makes it on first need (a query
        ``similar_to`` an indexed image needs none); ``model`` names it until then."""
        if isinstance(embedder, Embedder):
            self._embedder: Embedder | None = embedder
            self._make: Callable[[], Awaitable[Embedder]] | None = None
            self.model = embedder.info.model
        else:
            self._embedder, self._make = None, embedder
            self.model = model or ""
        self.index = index
        self.source = source
        """The key of points written before sources (the collection name)."""
        self.sources = sources or (lambda: ())
        self.image_format = image_format
        self._text_cache: OrderedDict[str, list[float]] = OrderedDict()

    async def run(self, query: SearchQuery) -> list[SearchHit]:
        """Answer one query: embed it (or look up ``similar_to``), then search the index."""
        flt = build_filter(query.filter)
        if query.source is not None:
            only = qm.FieldCondition(key="source", match=qm.MatchValue(value=query.source))
            flt = flt or qm.Filter()
            flt.must = [*_conditions(flt.must), only]
        if query.similar_to is not None:
            pid, vector = None, None
            for candidate in self._similar_ids(query.similar_to, query.source):
                vector = await asyncio.to_thread(self.index.vector_by_id, candidate)
                if vector is not None:
                    pid = candidate
                    break
            if vector is None or pid is None:
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
        floor = relevance_floor(self.model, kind)
        return [SearchHit.from_hit(h, floor) for h in hits]

    def _similar_ids(self, similar_to: str, source: str | None) -> list[str]:
        """The point ids ``similar_to`` may name: an absolute path inside a source's root,
        a path relative to ``source``, to each source, or to the index before sources."""
        sources = list(self.sources())
        if Path(similar_to).is_absolute():
            for name, root in sources:
                try:
                    rel = Path(similar_to).relative_to(root)
                except ValueError:
                    continue
                return [point_id(name, rel.as_posix())]
        rel_path = PurePosixPath(similar_to).as_posix()
        names = [source] if source is not None else [n for n, _ in sources]
        return [point_id(n, rel_path) for n in names] + [point_id(self.source, rel_path)]

    async def embedder(self) -> Embedder:
        """The query embedder, made on first need."""
        if self._embedder is None:
            assert self._make is not None
            self._embedder = await self._make()
            self.model = self._embedder.info.model
        return self._embedder

    async def _vector(self, text: str | None, image: bytes | None) -> list[float]:
        embedder = await self.embedder()
        info = embedder.info
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
                vector = (await embedder.embed_texts([text], "query"))[0].vector
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
        decode = functools.partial(
            _bounded_for_embedder,
            image,
            info,
            self.image_format,
            text or None,
            max_pixels=QUERY_MAX_PIXELS,
        )
        item = await asyncio.get_running_loop().run_in_executor(_DECODER, decode)
        return (await embedder.embed_images([item], "query"))[0].vector


def query_image_problem(width: int, height: int, fmt: str) -> str | None:
    """Why a query image of this size and format is refused, or None: JPEG up to
    QUERY_MAX_PIXELS, the rest (decoded at full size) up to QUERY_FULL_DECODE_PIXELS."""
    limit = QUERY_MAX_PIXELS if fmt.upper() == "JPEG" else QUERY_FULL_DECODE_PIXELS
    if width * height <= limit:
        return None
    return (
        f"image: {width}x{height} is over {limit // 1_000_000} megapixels, the limit for "
        f"{fmt.upper() or 'such'} query images; scale it down"
    )


def _bounded_for_embedder(
    image: bytes, info: EmbedderInfo, fmt: Format, text: str | None, *, max_pixels: int
) -> ImageInput:
    """``for_embedder`` once the header says the decode fits the query budget."""
    facts = probe(image, max_pixels=max_pixels)
    problem = query_image_problem(facts.width, facts.height, facts.source_format)
    if problem is not None:
        raise QueryError(problem)
    return for_embedder(image, info, fmt, text, max_pixels=max_pixels)


def _conditions(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]
