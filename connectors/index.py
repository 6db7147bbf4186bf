"""The Index protocol: what the pipeline needs from any vector store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from qdrant_client.http import models as qm

    # Filters are qdrant-client's models; every Index implementation accepts them.
    Filter = qm.Filter


class CollectionSpec(BaseModel):
    """What a collection is made for; recorded with it and checked on every open."""

    model_config = ConfigDict(frozen=True)

    name: str
    model: str
    dimension: int
    distance: Literal["cosine"] = "cosine"
    input_type: str = "document"
    provider: str = ""
    family: str = ""
    """The catalog model the deployment serves, learned when the collection was made; a
    search opens the collection trusting it instead of asking the service again."""


class Point(BaseModel):
    """A vector with its payload, addressed by a deterministic UUID string."""

    id: str
    vector: list[float]
    payload: dict[str, Any]


class FileState(BaseModel):
    """The per-file facts reconciliation compares against the folder."""

    id: str
    path: str
    size: int
    mtime_ns: int
    sha256: str
    embed_key: str | None = None
    sidecar: str = ""
    """Size/mtime signature of the image's caption sidecars ("" when none); payload key
    ``sidecar``. Scrolled with the other fields so sidecar edits are noticed."""
    source: str | None = None
    """The source (named folder) the point belongs to; None for points written before
    sources existed, which the source of their ``root`` adopts."""
    root: str | None = None


class Hit(BaseModel):
    """One search result."""

    id: str
    score: float
    payload: dict[str, Any]


class GraphStatus(BaseModel):
    """How much of a collection its HNSW graphs cover; the rest is searched exactly, which
    grows linearly with the points outside."""

    points: int
    in_graph: int
    outside: int
    building: bool = False
    build_seconds: float | None = None
    """How long the build in progress has run, when one does."""
    build_expected_seconds: float | None = None
    """Its estimated whole length, from the last build's rate, when known."""


@runtime_checkable
class Index(Protocol):
    """A collection of image vectors with per-file payloads: what the pipeline uses.

    Methods are synchronous and thread-safe; async callers run them in a worker thread.
    Implementations also offer maintenance calls the pipeline does not need
    (``drop_collection``, ``delete_paths``, ``delete_folder``)."""

    def recorded_spec(self, name: str) -> CollectionSpec | None:
        """What collection ``name`` was made for, or None when it does not exist yet.
        Lets a reader open the collection without asking the embedder."""
        ...

    def ensure_collection(self, spec: CollectionSpec) -> None: ...

    def upsert(self, points: Sequence[Point]) -> None: ...

    def delete_ids(self, ids: Sequence[str]) -> None: ...

    def file_states(self, source: str | None = None) -> Iterator[FileState]:
        """Every point's file facts, or only those of ``source``."""
        ...

    def count(self, filter: Filter | None = None) -> int:
        """Exact number of points (matching ``filter``). On an indexed payload field it is an
        index lookup, not a scan: status counts a source's points on ``source``, the
        thumbnail cache a content's holders on ``sha256``."""
        ...

    def vector_by_embed_key(self, embed_key: str) -> list[float] | None: ...

    def vector_by_id(self, point_id: str) -> list[float] | None: ...

    def payload_by_id(self, point_id: str) -> dict[str, Any] | None:
        """The stored payload of a point, or None when it does not exist."""
        ...

    def search(
        self,
        vector: Sequence[float],
        *,
        limit: int = 10,
        filter: Filter | None = None,
        score_threshold: float | None = None,
        group_by_sha256: bool = False,
    ) -> list[Hit]: ...

    def graph_status(self) -> GraphStatus:
        """How much of the collection is in HNSW graphs, and a build in progress."""
        ...

    def close(self) -> None: ...
