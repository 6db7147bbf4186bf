"""The server index: qdrant-client against a Qdrant server or cluster (or its local mode for tests).

Writes wait for the server to apply them (``wait=True``). Connection errors, timeouts, 429 and
5xx answers are retried with exponential backoff; after the last attempt a StoreError says the
server is unreachable and where. The API key is never logged, shown in a repr or an error.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from imgrag._errors import CollectionMismatch, StoreError, StoreLocked
from imgrag.connectors.config import StoreConfig
from imgrag.connectors.index import CollectionSpec, FileState, GraphStatus, Hit, Point
from imgrag.connectors.stores.schema import (
    COLLECTION_METADATA_KEY,
    PAYLOAD_INDEXES,
    STATE_FIELDS,
    CollectionRecord,
    check_record,
    embed_key_filter,
    file_state,
    folder_filter,
    paths_filter,
    source_filter,
)
from qdrant_client import QdrantClient
from qdrant_client.http import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

T = TypeVar("T")
PAGE = 1000
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class QdrantIndex:
    """Index on a Qdrant server/cluster (``config.url``), or qdrant-client's local mode when
    ``location`` is ":memory:" or a folder (tests only: brute-force search, slow past 20k points).
    """

    def __init__(
        self,
        config: StoreConfig,
        *,
        location: str | Path | None = None,
        backoff_seconds: float = 0.5,
    ) -> None:
        self.config = config
        self.max_attempts = config.max_attempts
        self.backoff_seconds = backoff_seconds
        self._secret = config.api_key.get_secret_value() if config.api_key else ""
        self._name: str | None = None
        self._local = location is not None
        # Local mode is not thread-safe; the server client is.
        self._lock: threading.Lock | None = threading.Lock() if self._local else None
        if location is not None:
            self.where = "memory" if str(location) == ":memory:" else f"local folder {location}"
            self._client = self._local_client(location)
        else:
            if not config.url:
                raise StoreError(
                    '[store] kind = "qdrant" needs [store] url '
                    "(IMGRAG_STORE__URL, e.g. http://localhost:6333)"
                )
            self.where = _public_url(config.url)
            self._client = QdrantClient(
                url=config.url,
                api_key=self._secret or None,
                prefer_grpc=config.prefer_grpc,
                https=config.url.lower().startswith("https://") or None,
                timeout=max(1, round(config.timeout_seconds)),
                # No version probe on construction: it is a network call without retries.
                check_compatibility=False,
            )

    def _local_client(self, location: str | Path) -> QdrantClient:
        if str(location) == ":memory:":
            return QdrantClient(location=":memory:", force_disable_check_same_thread=True)
        try:
            return QdrantClient(path=str(location), force_disable_check_same_thread=True)
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise StoreLocked(
                    f"the local Qdrant folder {location} is open in another process; "
                    f"stop it or use a Qdrant server for several processes"
                ) from None
            raise

    def __repr__(self) -> str:
        return f"QdrantIndex(where={self.where!r}, collection={self._name!r})"

    # --- calls with retries ----------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        guard: AbstractContextManager[Any] = self._lock if self._lock is not None else nullcontext()
        reason = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                with guard:
                    return fn()
            except StoreError:
                raise
            except Exception as exc:
                transient, reason = _classify(exc)
                reason = self._scrub(reason)
                if not transient:
                    raise StoreError(f"Qdrant at {self.where} rejected {what}: {reason}") from None
            if attempt < self.max_attempts:
                delay = self.backoff_seconds * 2 ** (attempt - 1)
                time.sleep(delay * random.uniform(0.8, 1.2))
        raise StoreError(
            f"the Qdrant server at {self.where} is unreachable ({what}: {reason}, "
            f"{self.max_attempts} attempts); check that it is running and that [store] url is right"
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    # --- collection ------------------------------------------------------------------

    def recorded_spec(self, name: str) -> CollectionSpec | None:
        """What collection ``name`` was made for, or None when it does not exist (or was
        made by something other than imgrag, so it carries no record)."""
        if not self._call("collection lookup", lambda: self._client.collection_exists(name)):
            return None
        info = self._call("collection info", lambda: self._client.get_collection(name))
        stored = (info.config.metadata or {}).get(COLLECTION_METADATA_KEY)
        return CollectionRecord.model_validate(stored).spec(name) if stored is not None else None

    def ensure_collection(self, spec: CollectionSpec) -> None:
        """Create the collection for ``spec`` or check that it was made for the same model."""
        name = spec.name
        drop_hint = f"delete collection '{name}' on {self.where}"
        if not self._call("collection lookup", lambda: self._client.collection_exists(name)):
            try:
                self._create(spec)
            except StoreError:
                # Another process may have created it at the same moment; check, don't fail.
                if not self._call(
                    "collection lookup", lambda: self._client.collection_exists(name)
                ):
                    raise
        info = self._call("collection info", lambda: self._client.get_collection(name))
        metadata = info.config.metadata or {}
        stored = metadata.get(COLLECTION_METADATA_KEY)
        if stored is not None:
            check_record(
                spec, CollectionRecord.model_validate(stored), where=self.where, drop_hint=drop_hint
            )
        else:
            # Made by something else, or a server too old to keep metadata: the size still tells.
            size = _vector_size(info.config.params.vectors)
            if size is not None and size != spec.dimension:
                raise CollectionMismatch(
                    f"collection '{name}' on {self.where} holds {size}-dim vectors, but the "
                    f"embedder {spec.model} makes {spec.dimension}; use another collection "
                    f"(IMGRAG_STORE__COLLECTION=<new name>) or re-index by deleting the "
                    f"collection ({drop_hint})"
                )
        self._name = name
        if self._local:
            return  # local mode ignores payload indexes (and warns about each)
        existing = set((info.payload_schema or {}).keys())
        for field, kind in PAYLOAD_INDEXES.items():
            if field not in existing:
                self._payload_index(field, kind)

    def _create(self, spec: CollectionSpec) -> None:
        c = self.config
        quantization = None
        if c.quantization == "int8":
            quantization = qm.ScalarQuantization(
                scalar=qm.ScalarQuantizationConfig(
                    type=qm.ScalarType.INT8, quantile=0.99, always_ram=True
                )
            )
        vectors = qm.VectorParams(
            size=spec.dimension, distance=qm.Distance.COSINE, on_disk=c.on_disk or None
        )
        record = CollectionRecord.from_spec(spec).model_dump()
        self._call(
            "collection creation",
            lambda: self._client.create_collection(
                spec.name,
                vectors_config=vectors,
                shard_number=c.shard_number,
                replication_factor=c.replication_factor,
                write_consistency_factor=c.write_consistency_factor,
                quantization_config=quantization,
                metadata={COLLECTION_METADATA_KEY: record},
            ),
        )

    def _payload_index(self, field: str, kind: str) -> None:
        name = self._require()
        schema: Any = {
            "keyword": qm.PayloadSchemaType.KEYWORD,
            "folder": qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, prefix=True),
            "integer": qm.PayloadSchemaType.INTEGER,
            "datetime": qm.PayloadSchemaType.DATETIME,
        }[kind]
        try:
            self._call(
                f"payload index on {field}",
                lambda: self._client.create_payload_index(name, field, schema, wait=True),
            )
        except StoreError:
            if kind != "folder":
                raise
            # Servers without prefix indexes still filter on the plain keyword index.
            self._call(
                f"payload index on {field}",
                lambda: self._client.create_payload_index(
                    name, field, qm.PayloadSchemaType.KEYWORD, wait=True
                ),
            )

    def drop_collection(self, name: str) -> None:
        """Delete a collection and everything in it (the way out of a model change)."""
        self._call("collection deletion", lambda: self._client.delete_collection(name))
        if self._name == name:
            self._name = None

    def _require(self) -> str:
        if self._name is None:
            raise StoreError("no collection is open: call ensure_collection first")
        return self._name

    # --- writes ----------------------------------------------------------------------

    def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points; applied by the server when this returns."""
        if not points:
            return
        name = self._require()
        structs = [qm.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in points]
        self._call("upsert", lambda: self._client.upsert(name, points=structs, wait=True))

    def delete_ids(self, ids: Sequence[str]) -> None:
        """Delete points by id; unknown ids are ignored."""
        if not ids:
            return
        name = self._require()
        selector = qm.PointIdsList(points=list(ids))
        self._call("delete", lambda: self._client.delete(name, points_selector=selector, wait=True))

    def delete_paths(self, paths: Sequence[str]) -> None:
        """Delete the points of these relative paths."""
        if paths:
            self._delete_filter(paths_filter(paths))

    def delete_folder(self, prefix: str) -> None:
        """Delete every point in folder ``prefix`` and below ("a" → "a", "a/b"; not "ab").

        An empty prefix is the root folder: every point goes.
        """
        if not prefix.strip("/"):
            self._delete_filter(None)
            return
        self._delete_filter(folder_filter(prefix))

    def _delete_filter(self, flt: qm.Filter | None) -> None:
        name = self._require()
        selector = qm.FilterSelector(filter=flt or qm.Filter())
        self._call("delete", lambda: self._client.delete(name, points_selector=selector, wait=True))

    # --- reads -----------------------------------------------------------------------

    def file_states(self, source: str | None = None) -> Iterator[FileState]:
        """Every point's file facts (or one source's), fetched page by page (only those
        payload fields)."""
        name = self._require()
        offset: Any = None
        flt = source_filter(source)
        while True:
            records, offset = self._call(
                "scroll",
                lambda o=offset: self._client.scroll(
                    name,
                    limit=PAGE,
                    offset=o,
                    scroll_filter=flt,
                    with_payload=list(STATE_FIELDS),
                    with_vectors=False,
                ),
            )
            for record in records:
                state = file_state(record.id, record.payload)
                if state is not None:
                    yield state
            if offset is None:
                return

    def vector_by_embed_key(self, embed_key: str) -> list[float] | None:
        """A stored vector made from the same content, caption and model, if any."""
        name = self._require()
        records, _ = self._call(
            "scroll",
            lambda: self._client.scroll(
                name,
                scroll_filter=embed_key_filter(embed_key),
                limit=1,
                with_payload=False,
                with_vectors=True,
            ),
        )
        return _vector(records[0].vector) if records else None

    def vector_by_id(self, point_id: str) -> list[float] | None:
        """The stored vector of a point, or None when it does not exist."""
        record = self._retrieve_one(point_id, with_vectors=True)
        return _vector(record.vector) if record is not None else None

    def payload_by_id(self, point_id: str) -> dict[str, Any] | None:
        """The stored payload of a point, or None when it does not exist."""
        record = self._retrieve_one(point_id, with_payload=True)
        return dict(record.payload or {}) if record is not None else None

    def _retrieve_one(
        self, point_id: str, *, with_payload: bool = False, with_vectors: bool = False
    ) -> qm.Record | None:
        name = self._require()
        try:
            uuid.UUID(point_id)
        except ValueError:
            return None  # not an id this index could hold
        records = self._call(
            "retrieve",
            lambda: self._client.retrieve(
                name, ids=[point_id], with_payload=with_payload, with_vectors=with_vectors
            ),
        )
        return records[0] if records else None

    def graph_status(self) -> GraphStatus:
        """Points in HNSW graphs and outside them, as the server counts them (Qdrant's
        OpenAPI schema: ``CollectionInfo.indexed_vectors_count`` and ``points_count``, both
        approximate; ``CollectionStatus`` ``yellow`` while optimization runs)."""
        name = self._require()
        info = self._call("collection info", lambda: self._client.get_collection(name))
        points = int(info.points_count or 0)
        in_graph = min(points, int(info.indexed_vectors_count or 0))
        return GraphStatus(
            points=points,
            in_graph=in_graph,
            outside=points - in_graph,
            building=str(info.status).lower().endswith("yellow"),
        )

    def count(self, filter: qm.Filter | None = None) -> int:
        """Exact number of points (matching ``filter``)."""
        name = self._require()
        result = self._call(
            "count", lambda: self._client.count(name, count_filter=filter, exact=True)
        )
        return int(result.count)

    def search(
        self,
        vector: Sequence[float],
        *,
        limit: int = 10,
        filter: qm.Filter | None = None,
        score_threshold: float | None = None,
        group_by_sha256: bool = False,
    ) -> list[Hit]:
        """Nearest points by cosine similarity, best first."""
        name = self._require()
        query = [float(x) for x in vector]
        if group_by_sha256:
            groups = self._call(
                "search",
                lambda: self._client.query_points_groups(
                    name,
                    group_by="sha256",
                    query=query,
                    query_filter=filter,
                    limit=limit,
                    group_size=1,
                    score_threshold=score_threshold,
                    with_payload=True,
                ),
            )
            points = [g.hits[0] for g in groups.groups if g.hits]
        else:
            points = self._call(
                "search",
                lambda: self._client.query_points(
                    name,
                    query=query,
                    query_filter=filter,
                    limit=limit,
                    score_threshold=score_threshold,
                    with_payload=True,
                ),
            ).points
        return [Hit(id=str(p.id), score=p.score, payload=p.payload or {}) for p in points]

    def close(self) -> None:
        """Release the connection (or the local folder)."""
        self._client.close()

    def __enter__(self) -> QdrantIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _classify(exc: BaseException) -> tuple[bool, str]:
    """(transient?, short reason) for an exception raised by qdrant-client."""
    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code or 0
        detail = exc.content[:200].decode(errors="replace").strip()
        return status in _TRANSIENT_STATUS, f"HTTP {status} {detail}".strip()
    if isinstance(exc, ResponseHandlingException):
        return True, type(exc.source).__name__
    if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)):
        return True, type(exc).__name__
    try:
        import grpc
    except ImportError:  # pragma: no cover - grpcio comes with qdrant-client
        grpc = None  # type: ignore[assignment]  # a module name bound to None as the fallback
    if grpc is not None and isinstance(exc, grpc.RpcError):
        code = exc.code() if hasattr(exc, "code") else None
        transient_codes = {
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.ABORTED,
        }
        details = exc.details() if hasattr(exc, "details") else ""
        return code in transient_codes, f"gRPC {getattr(code, 'name', code)} {details}".strip()
    return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _public_url(url: str) -> str:
    """The URL without user info, which may hold credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _vector_size(vectors: Any) -> int | None:
    if isinstance(vectors, qm.VectorParams):
        return vectors.size
    if isinstance(vectors, dict) and "" in vectors:
        return vectors[""].size
    return None


def _vector(value: Any) -> list[float]:
    if isinstance(value, dict):
        value = value.get("", next(iter(value.values())))
    return [float(x) for x in value]
