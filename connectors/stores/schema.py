"""What both index kinds share: payload indexes, the collection record and its check, filters
built from paths and folders, and collapsing duplicate images in search results."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from imgrag._errors import CollectionMismatch
from imgrag.connectors.index import CollectionSpec, FileState, Hit
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from qdrant_client.http import models as qm
else:
    from imgrag.connectors._qdrant_models import qm

PayloadKind = Literal["keyword", "folder", "integer", "datetime"]

# "folder" is a keyword index that also answers prefix matches (delete_folder uses them).
PAYLOAD_INDEXES: dict[str, PayloadKind] = {
    "source": "keyword",
    "path": "keyword",
    "folder": "folder",
    "sha256": "keyword",
    "embed_key": "keyword",
    "tags": "keyword",
    "size": "integer",
    "taken_at": "datetime",
    "ingested_at": "datetime",
}

STATE_FIELDS: tuple[str, ...] = (
    "path", "size", "mtime_ns", "sha256", "embed_key", "sidecar", "source", "root",
)  # fmt: skip
"""The payload fields reconciliation needs; scrolls fetch only these."""

MODEL_FIELD = "model"
"""The payload field naming the model that made a point's vector (checks a lost record)."""

COLLECTION_METADATA_KEY = "imgrag"
"""Key under which the server kind stores the collection record in collection metadata."""


class CollectionRecord(BaseModel):
    """The facts a collection was created for, stored with it."""

    model_config = ConfigDict(extra="ignore")

    model: str
    dimension: int
    distance: str = "cosine"
    input_type: str = "document"
    provider: str = ""
    family: str = ""

    @classmethod
    def from_spec(cls, spec: CollectionSpec) -> CollectionRecord:
        return cls(
            model=spec.model,
            dimension=spec.dimension,
            distance=spec.distance,
            input_type=spec.input_type,
            provider=spec.provider,
            family=spec.family,
        )

    def spec(self, name: str) -> CollectionSpec:
        """The spec this record was written for, under collection ``name``."""
        return CollectionSpec(
            name=name,
            model=self.model,
            dimension=self.dimension,
            input_type=self.input_type,
            provider=self.provider,
            family=self.family,
        )

    def describe(self) -> str:
        provider = f"{self.provider}:" if self.provider else ""
        return f"{provider}{self.model} ({self.dimension} dims, {self.input_type})"


def check_record(
    spec: CollectionSpec, stored: CollectionRecord, *, where: str, drop_hint: str
) -> None:
    """Raise CollectionMismatch unless ``stored`` was made for the same model and dimension.

    The provider is informative only: the emulator and Foundry serve the same model.
    """
    wanted = CollectionRecord.from_spec(spec)
    same = (
        stored.model.lower() == wanted.model.lower()
        and stored.dimension == wanted.dimension
        and stored.distance == wanted.distance
        and stored.input_type == wanted.input_type
    )
    if same:
        return
    raise CollectionMismatch(
        f"collection '{spec.name}' in {where} was built for {stored.describe()}, "
        f"but the embedder is {wanted.describe()}; "
        f"use another collection (IMGRAG_STORE__COLLECTION=<new name>) "
        f"or re-index by deleting the collection ({drop_hint})"
    )


def paths_filter(paths: Sequence[str]) -> qm.Filter:
    return qm.Filter(must=[qm.FieldCondition(key="path", match=qm.MatchAny(any=list(paths)))])


def folder_filter(prefix: str) -> qm.Filter:
    """Points in ``prefix`` or below it: "a" matches "a" and "a/b" but not "ab"."""
    prefix = prefix.strip("/")
    return qm.Filter(
        should=[
            qm.FieldCondition(key="folder", match=qm.MatchValue(value=prefix)),
            qm.FieldCondition(key="folder", match=qm.MatchPrefix(prefix=prefix + "/")),
        ]
    )


def source_filter(source: str | None) -> qm.Filter | None:
    """The points of one source (None: every point)."""
    if source is None:
        return None
    return qm.Filter(must=[qm.FieldCondition(key="source", match=qm.MatchValue(value=source))])


def embed_key_filter(embed_key: str) -> qm.Filter:
    return qm.Filter(
        must=[qm.FieldCondition(key="embed_key", match=qm.MatchValue(value=embed_key))]
    )


def file_state(point_id: Any, payload: dict[str, Any] | None) -> FileState | None:
    """A FileState from a scrolled record, or None for points that carry no file facts."""
    payload = payload or {}
    try:
        return FileState(
            id=str(point_id),
            path=payload["path"],
            size=payload["size"],
            mtime_ns=payload["mtime_ns"],
            sha256=payload["sha256"],
            embed_key=payload.get("embed_key"),
            sidecar=payload.get("sidecar") or "",
            source=payload.get("source"),
            root=payload.get("root"),
        )
    except (KeyError, ValueError):
        return None


def collapse_by_sha256(hits: Iterable[Hit], limit: int) -> list[Hit]:
    """Keep the best hit per image content; hits must arrive best first."""
    seen: set[str] = set()
    kept: list[Hit] = []
    for hit in hits:
        key = hit.payload.get("sha256")
        if isinstance(key, str):
            if key in seen:
                continue
            seen.add(key)
        kept.append(hit)
        if len(kept) == limit:
            break
    return kept
