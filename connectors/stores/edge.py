"""The embedded index: qdrant-edge-py (Qdrant's engine in-process), persisted under a folder.

Layout under the store folder (the state directory's ``store/``)::

    .lock, owner.json         one owner per store (see owner_lock.py)
    <collection>/
        collection.json       the model/dimension/input type the collection was made for
        CURRENT               name of the live shard generation, replaced atomically
        gen-000001/           the qdrant-edge shard (segments + WAL)

Opening never deletes before it knows what is live: leftovers of a crashed build are removed
only once ``CURRENT`` names a generation that opened (``edge_generations.py``). A blank or
dangling ``CURRENT`` recovers the newest complete generation; a missing ``collection.json``
is rebuilt from the points when they were made by the same model, else opening stops with
one line. Writes check the free space first (``edge_space.py``): a full disk is a DiskFull
error, never a SIGBUS, and writes resume once space is back, without reopening.

Every write goes through the shard's write-ahead log before the call returns, so anything
acknowledged survives kill -9. HNSW graphs are built in a child process on a flushed copy
(``edge_rebuild.py``) because the library holds the GIL during ``optimize()``; until then
searches are exact, which is fast while few points are outside a graph.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import qdrant_edge as qe
from imgrag._errors import DiskFull, StoreError
from imgrag.connectors.index import CollectionSpec, FileState, GraphStatus, Hit, Point
from imgrag.connectors.stores import edge_builds as builds
from imgrag.connectors.stores import edge_space as space
from imgrag.connectors.stores.edge_filters import to_edge_filter
from imgrag.connectors.stores.edge_generations import (
    CURRENT_FILE,
    SHARD_CONFIG,
    complete_generations,
    generation_name,
    generation_number,
    is_complete,
    newest_number,
    read_current,
    remove_leftovers,
)
from imgrag.connectors.stores.owner_lock import OwnerLock
from imgrag.connectors.stores.schema import (
    MODEL_FIELD,
    PAYLOAD_INDEXES,
    STATE_FIELDS,
    CollectionRecord,
    check_record,
    collapse_by_sha256,
    embed_key_filter,
    file_state,
    folder_filter,
    paths_filter,
    source_filter,
)
from pydantic import BaseModel

if TYPE_CHECKING:
    from qdrant_client.http import models as qm
else:
    from imgrag.connectors._qdrant_models import qm

log = logging.getLogger(__name__)

RECORD_FILE = "collection.json"
PAGE = 1000
_MODEL_SAMPLE = 100
# Points replayed per engine call while a rebuilt shard catches up (each call holds the
# GIL, so a search waits at most for one chunk).
_REPLAY_CHUNK = 64
# Catch-up passes without the write lock before the rest is replayed under it.
_CATCH_UP_ROUNDS = 4
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class IndexStatus(BaseModel):
    """What the embedded index is doing; for status pages and tests."""

    points: int
    indexed: int
    """Vectors in HNSW graphs as the engine counts them, deleted points included."""
    outside: int = 0
    """Points written since the graphs were built: searched exactly, one by one."""
    building: bool
    builds: int
    build_seconds: float | None = None
    """How long the build in progress has run (also one adopted from an earlier process)."""
    build_points: int | None = None
    build_expected_seconds: float | None = None
    """The build in progress's estimated length, from the last build's rate."""
    build_adopted: bool = False
    last_build_seconds: float | None = None
    last_build_replayed: int = 0
    last_error: str | None = None


class EdgeIndex:
    """The embedded default Index. Thread-safe; one instance per store per process.

    ``index_threshold``: points outside any HNSW graph that start a background build, once
    writes pause for ``settle_seconds`` or the oldest of them has waited that long.
    ``settle_seconds``: quiet time after the last write before flushing or building.
    ``build_after_seconds``: the longest points wait outside a graph under a steady trickle
    of writes, once there are enough of them to get one (a quarter of the threshold).
    ``auto_build``: False leaves builds to ``request_index_build`` (benchmarks, tools).
    ``state_dir``: the folder named in a DiskFull message (default: ``path``).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        index_threshold: int = 20_000,
        settle_seconds: float = 2.0,
        flush_seconds: float = 10.0,
        build_after_seconds: float = 60.0,
        auto_build: bool = True,
        state_dir: Path | str | None = None,
    ) -> None:
        self.path = Path(path)
        self.state_dir = Path(state_dir) if state_dir is not None else self.path
        self.index_threshold = index_threshold
        self.settle_seconds = settle_seconds
        self.flush_seconds = flush_seconds
        self.build_after_seconds = build_after_seconds
        self.auto_build = auto_build
        self._owner = OwnerLock(self.path)
        # Mutations, the snapshot copy and the swap are serialized; reads only need the
        # shard handle to stay open under them, so they take the lighter handle lock.
        self._write_lock = threading.RLock()
        self._handle_lock = threading.RLock()
        self._wake = threading.Condition()
        self._shard: qe.EdgeShard | None = None
        self._spec: CollectionSpec | None = None
        self._dir: Path | None = None
        self._gen: str | None = None
        # Set when sparse files could not be allocated: the next write tries again first.
        self._unreserved = False
        self._retry_flush_after = 0.0
        self._build: builds.Build | None = None
        self._retry_build_after = 0.0
        self._last_write = 0.0
        self._last_flush = time.monotonic()
        self._unflushed = False
        self._unchecked = False
        # When the oldest write not in the live shard's graphs (nor in a running build) landed.
        self._outside_since: float | None = None
        self._next_check = 0.0
        self.threshold_checks = 0
        """How many times the maintenance thread has compared the unindexed points with the
        threshold (and started a build when they reached it)."""
        # Points a finished build left outside any graph that it was given (not written
        # during it): the engine would not index them, so a new build needs that many more.
        self._baseline_unindexed = 0
        # Points written since the live generation's graphs were built: the engine's own
        # indexed count still includes points deleted from graph segments (a rename deletes
        # every one), so it cannot tell the tail. Kept across processes (edge_builds.py).
        self._outside = 0
        self._builds = 0
        self._last_build_seconds: float | None = None
        self._last_build_replayed = 0
        self._last_error: str | None = None
        self._closed = False
        self._finishing = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        name = self._spec.name if self._spec else None
        return f"EdgeIndex(path={str(self.path)!r}, collection={name!r})"

    # --- collection ------------------------------------------------------------------

    def recorded_spec(self, name: str) -> CollectionSpec | None:
        """What collection ``name`` was made for, or None when it does not exist yet."""
        try:
            text = (self.path / name / RECORD_FILE).read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self.path / name / RECORD_FILE}: {exc}") from None
        try:
            return CollectionRecord.model_validate_json(text).spec(name)
        except ValueError as exc:
            raise StoreError(f"cannot read {self.path / name / RECORD_FILE}: {exc}") from None

    def ensure_collection(self, spec: CollectionSpec) -> None:
        """Open (or create) the collection for ``spec``; CollectionMismatch if made for another."""
        if any(c not in _NAME_OK for c in spec.name) or spec.name.startswith("."):
            raise StoreError(f"collection name {spec.name!r} must use only letters, digits, - _ .")
        with self._write_lock:
            if self._closed:
                raise StoreError("the index is closed")
            directory = self.path / spec.name
            if self._shard is not None:
                if self._spec is not None and self._spec.name != spec.name:
                    raise StoreError(
                        f"this index already serves collection '{self._spec.name}'; "
                        f"open another EdgeIndex for '{spec.name}'"
                    )
                self._check(spec, directory)
                return
            try:
                gen, shard = self._open(spec, directory)
            except BaseException:
                if self._build is not None:  # adopted by an open that then failed
                    self._build.detach()
                    self._build = None
                raise
            self._spec, self._dir, self._gen = spec, directory, gen
            with self._handle_lock:
                self._shard = shard
            last = builds.last_graph(directory)
            self._baseline_unindexed = last.left_outside if last is not None else 0
            known = builds.read_outside(directory)
            if known is None:  # a store from before the count: the engine's estimate
                info = shard.info()
                known = max(0, info.points_count - info.indexed_vectors_count)
            self._outside = known
            if known:  # the age trigger counts from now for points left by another process
                self._outside_since = time.monotonic()
            # The first maintenance pass looks at the points outside any graph at once: an
            # opener that finds a large tail starts a build instead of scanning it for long.
            self._unchecked = True
        self._start_maintenance()

    def _open(self, spec: CollectionSpec, directory: Path) -> tuple[str, qe.EdgeShard]:
        if (directory / RECORD_FILE).exists():
            self._check(spec, directory)
            return self._open_existing(directory, spec.dimension)
        if _holds_generations(directory):
            return self._open_without_record(spec, directory)
        return self._create(spec, directory)

    def _check(self, spec: CollectionSpec, directory: Path) -> None:
        try:
            record = CollectionRecord.model_validate_json((directory / RECORD_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {directory / RECORD_FILE}: {exc}") from None
        check_record(spec, record, where=str(self.path), drop_hint=f"remove the folder {directory}")

    def _create(self, spec: CollectionSpec, directory: Path) -> tuple[str, qe.EdgeShard]:
        # Only reached when no generation folder exists: nothing here holds points.
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        space.ensure_room(directory, space.WRITE_ROOM, self.state_dir)
        gen = generation_name(1)
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=spec.dimension, distance=qe.Distance.Cosine),
            optimizers=self._optimizers(spec.dimension),
            wal_enabled=True,
        )
        try:
            shard = qe.EdgeShard.create(str(directory / gen), config)
            for field, kind in PAYLOAD_INDEXES.items():
                shard.update(qe.UpdateOperation.create_field_index(field, _schema(kind)))
            shard.flush()
        except Exception as exc:
            if space.is_no_space(exc):
                raise space.disk_full(self.state_dir, space.WRITE_ROOM, directory) from None
            raise StoreError(f"cannot create the embedded store in {directory}: {exc}") from None
        try:
            self._write_file(directory / CURRENT_FILE, gen)
            # Written last: its presence is what makes the collection exist.
            record = CollectionRecord.from_spec(spec).model_dump_json(indent=2)
            self._write_file(directory / RECORD_FILE, record)
        except StoreError:
            shard.close()
            raise
        return gen, shard

    def _optimizers(self, dimension: int) -> qe.EdgeOptimizersConfig:
        # The engine picks the segments that get a graph by their size in KB. A quarter of our
        # threshold: a build then covers the points it was started for, also when requested
        # early, while tiny segments stay exact (a few ms at most).
        kb = max(1, self.index_threshold * dimension * 4 // 1024 // 4)
        return qe.EdgeOptimizersConfig(indexing_threshold=kb)

    def _open_existing(self, directory: Path, dimension: int | None) -> tuple[str, qe.EdgeShard]:
        """Open the generation CURRENT names; recover the newest complete one if it is bad.

        Leftovers are removed only after the generation CURRENT names has opened; a
        recovery deletes nothing.
        """
        try:
            named = read_current(directory)
        except OSError as exc:
            raise StoreError(
                f"cannot read {directory / CURRENT_FILE}: {exc.strerror}; nothing was deleted"
            ) from None
        if named is not None and is_complete(directory / named):
            shard = self._load(directory / named, dimension)
            # A build an earlier owner left running (or finished) for this generation is
            # adopted, not thrown away; its copy is not a leftover.
            self._build = builds.adopt(directory, named)
            keep = set() if self._build is None else {self._build.copy().name}
            remove_leftovers(directory, named, keep=keep)
            if self._build is not None:
                log.info(
                    "embedded store: adopted the HNSW build an earlier process started %.0f s ago",
                    self._build.elapsed(),
                )
            return named, shard
        problem = _current_problem(directory, named)
        for gen in complete_generations(directory):
            try:
                shard = self._load(directory / gen, dimension)
            except DiskFull:
                raise
            except StoreError as exc:
                log.warning("embedded store: %s does not open: %s", directory / gen, exc)
                continue
            try:
                self._write_file(directory / CURRENT_FILE, gen)
            except StoreError as exc:  # serve it anyway; the next open recovers again
                log.warning("embedded store: %s", exc)
            log.warning(
                "embedded store %s: %s; recovered %s, the newest complete generation "
                "(nothing was deleted)",
                directory,
                problem,
                gen,
            )
            return gen, shard
        raise StoreError(
            f"the embedded store in {directory} is damaged: {problem}, and no complete "
            f"generation opens; nothing was deleted; move {directory} away and run "
            "`imgrag ingest` to rebuild it from the folder"
        )

    def _write_file(self, path: Path, text: str) -> None:
        try:
            _write_atomic(path, text)
        except OSError as exc:
            if space.is_no_space(exc):
                raise space.disk_full(self.state_dir, space.SMALL_ROOM, path.parent) from None
            raise StoreError(f"cannot write {path}: {exc.strerror}") from None

    def _load(self, folder: Path, dimension: int | None) -> qe.EdgeShard:
        try:
            tight = space.free_bytes(folder) < space.RESERVE_BELOW
        except OSError:
            tight = False
        if tight:
            # Opening may replay the WAL into files a crash left sparse.
            try:
                space.reserve(folder)
            except OSError:
                raise space.disk_full(self.state_dir, space.WRITE_ROOM, folder) from None
        try:
            config = None
            if dimension is not None:
                config = qe.EdgeConfig(
                    vectors=qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine),
                    optimizers=self._optimizers(dimension),
                )
            return qe.EdgeShard.load(str(folder), config)
        except Exception as exc:
            if space.is_no_space(exc):
                raise space.disk_full(self.state_dir, space.SMALL_ROOM, folder) from None
            raise StoreError(f"cannot open the embedded store in {folder}: {exc}") from None

    def _open_without_record(
        self, spec: CollectionSpec, directory: Path
    ) -> tuple[str, qe.EdgeShard]:
        """A collection folder without ``collection.json``: rebuild the record when the
        points show they were made for ``spec``, else stop. Nothing is deleted."""
        record = directory / RECORD_FILE
        if not complete_generations(directory):
            raise StoreError(
                f"{record} is missing and {directory} holds no complete shard; nothing was "
                f"deleted; move {directory} away and run `imgrag ingest` to rebuild it"
            )
        stored = _shard_dimension(directory)
        if stored is not None and stored != spec.dimension:
            raise StoreError(
                f"{record} is missing and the points in {directory} have {stored} dimensions, "
                f"not {spec.dimension}; nothing was deleted; use another collection "
                f"(IMGRAG_STORE__COLLECTION=<new name>) or move {directory} away to re-index"
            )
        gen, shard = self._open_existing(directory, spec.dimension)
        try:
            models = _sample_models(shard)
        except Exception:
            shard.close()
            raise
        strangers = {m for m in models if m.lower() != spec.model.lower()}
        if strangers:
            shard.close()
            raise StoreError(
                f"{record} is missing and the points in {directory} were made by "
                f"{', '.join(sorted(strangers))}, not {spec.model}; nothing was deleted; use "
                f"another collection (IMGRAG_STORE__COLLECTION=<new name>) or move "
                f"{directory} away to re-index"
            )
        try:
            self._write_file(record, CollectionRecord.from_spec(spec).model_dump_json(indent=2))
        except StoreError:
            shard.close()
            raise
        log.warning(
            "embedded store %s: collection.json was missing; rebuilt it for %s from %s",
            directory,
            spec.model,
            "an empty shard" if not models else f"{len(models)} sampled points",
        )
        return gen, shard

    def drop_collection(self, name: str) -> None:
        """Delete a collection and everything in it (the way out of a model change)."""
        self._stop_maintenance()
        with self._write_lock:
            self._abort_build()
            if self._spec is not None and self._spec.name == name:
                with self._handle_lock:
                    shard, self._shard = self._shard, None
                if shard is not None:
                    shard.close()
                self._spec = self._dir = self._gen = None
            shutil.rmtree(self.path / name, ignore_errors=True)

    # --- writes ----------------------------------------------------------------------

    def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points; durable (WAL) when this returns."""
        if not points:
            return
        batch = [qe.Point(p.id, p.vector, p.payload) for p in points]
        # The WAL record, the vectors and the payloads: generously 3x their raw size.
        raw = sum(len(p.vector) * 4 + 64 + len(json.dumps(p.payload, default=str)) for p in points)
        need = space.WRITE_ROOM + 3 * raw
        self._write("upsert", qe.UpdateOperation.upsert_points(batch), [p.id for p in points], need)

    def delete_ids(self, ids: Sequence[str]) -> None:
        """Delete points by id; unknown ids are ignored."""
        if ids:
            op = qe.UpdateOperation.delete_points(list(ids))
            self._write("delete", op, list(ids), space.SMALL_ROOM)

    def delete_paths(self, paths: Sequence[str]) -> None:
        """Delete the points of these relative paths."""
        if paths:
            self._delete_matching(paths_filter(paths))

    def delete_folder(self, prefix: str) -> None:
        """Delete every point in folder ``prefix`` and below ("a" → "a", "a/b"; not "ab").

        An empty prefix is the root folder: every point goes.
        """
        if prefix.strip("/"):
            self._delete_matching(folder_filter(prefix))
        else:
            self._delete_matching(None)

    def _delete_matching(self, flt: qm.Filter | None) -> None:
        # Resolved to ids so a build in flight can replay the deletion onto its copy.
        with self._write_lock:
            ids = list(self._scroll_ids(flt))
            for start in range(0, len(ids), PAGE):
                self.delete_ids(ids[start : start + PAGE])

    def _write(self, what: str, op: Any, ids: list[str], need: int) -> None:
        with self._write_lock:
            shard = self._require()
            self._make_room(need)
            if self._build is not None:
                # Noted before the write: a build adopted after a crash replays these too.
                self._build.record(ids)
            try:
                shard.update(op)
            except Exception as exc:
                if space.is_no_space(exc):
                    raise space.disk_full(self.state_dir, need, self._dir) from None
                if isinstance(exc, ValueError):
                    raise StoreError(f"embedded store {what} rejected the batch: {exc}") from None
                raise StoreError(f"embedded store {what} failed: {exc}") from None
            if what == "upsert":
                self._outside += len(ids)
                builds.write_outside(self._dir, self._outside)
            self._last_write = time.monotonic()
            if self._outside_since is None:
                self._outside_since = self._last_write
            self._unflushed = True
            self._unchecked = True
            self._reserve()
        with self._wake:
            self._wake.notify_all()

    def _make_room(self, need: int) -> None:
        """Raise DiskFull, before the engine is touched, unless ``need`` bytes are free and
        the live files are allocated; the shard stays usable, so writes resume by themselves
        once space is back."""
        assert self._dir is not None
        if self._unreserved:
            self._reserve()
            if self._unreserved:
                raise space.disk_full(self.state_dir, need, self._dir)
        space.ensure_room(self._dir, need, self.state_dir)

    def _reserve(self) -> None:
        """While the disk is tight, allocate the live generation's sparse files for real."""
        assert self._dir is not None and self._gen is not None
        try:
            if space.free_bytes(self._dir) >= space.RESERVE_BELOW:
                self._unreserved = False
                return
            space.reserve(self._dir / self._gen)
            self._unreserved = False
        except OSError as exc:
            self._unreserved = space.is_no_space(exc)

    def flush(self) -> None:
        """Persist segments so the WAL stays short and reopening stays fast.

        A failed flush loses nothing: every acknowledged write is in the WAL already.
        """
        with self._write_lock:
            shard = self._require()
            try:
                shard.flush()
            except Exception as exc:
                if space.is_no_space(exc):
                    raise space.disk_full(self.state_dir, space.SMALL_ROOM, self._dir) from None
                raise StoreError(f"embedded store flush failed: {exc}") from None
            self._unflushed = False
            self._last_flush = time.monotonic()
            if self._last_error and self._last_error.startswith("no space left"):
                self._last_error = None  # space is back
            self._reserve()

    # --- reads -----------------------------------------------------------------------

    def file_states(self, source: str | None = None) -> Iterator[FileState]:
        """Every point's file facts (or one source's), fetched page by page (only those
        payload fields)."""
        offset: Any = None
        edge_filter = to_edge_filter(source_filter(source))
        while True:
            request = qe.ScrollRequest(
                offset=offset,
                limit=PAGE,
                filter=edge_filter,
                with_payload=qe.PayloadSelector.Include(list(STATE_FIELDS)),
                with_vector=False,
            )
            records, offset = self._read("scroll", lambda s, r=request: s.scroll(r))
            for record in records:
                state = file_state(record.id, record.payload)
                if state is not None:
                    yield state
            if offset is None:
                return

    def _scroll_ids(self, flt: qm.Filter | None) -> Iterator[str]:
        edge_filter = to_edge_filter(flt)
        offset: Any = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=PAGE, filter=edge_filter, with_payload=False, with_vector=False
            )
            records, offset = self._read("scroll", lambda s, r=request: s.scroll(r))
            for record in records:
                yield str(record.id)
            if offset is None:
                return

    def vector_by_embed_key(self, embed_key: str) -> list[float] | None:
        """A stored vector made from the same content, caption and model, if any."""
        request = qe.ScrollRequest(
            limit=1,
            filter=to_edge_filter(embed_key_filter(embed_key)),
            with_payload=False,
            with_vector=True,
        )
        records, _ = self._read("scroll", lambda s: s.scroll(request))
        return _vector(records[0].vector) if records else None

    def vector_by_id(self, point_id: str) -> list[float] | None:
        """The stored vector of a point, or None when it does not exist."""
        try:
            uuid.UUID(point_id)
        except ValueError:
            return None
        records = self._read("retrieve", lambda s: s.retrieve([point_id], False, True))
        return _vector(records[0].vector) if records else None

    def payload_by_id(self, point_id: str) -> dict[str, Any] | None:
        """The stored payload of a point, or None when it does not exist."""
        try:
            uuid.UUID(point_id)
        except ValueError:
            return None
        records = self._read("retrieve", lambda s: s.retrieve([point_id], True, False))
        return dict(records[0].payload or {}) if records else None

    def count(self, filter: qm.Filter | None = None) -> int:
        """Exact number of points (matching ``filter``)."""
        request = qe.CountRequest(exact=True, filter=to_edge_filter(filter))
        return int(self._read("count", lambda s: s.count(request)))

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
        edge_filter = to_edge_filter(filter)
        query = qe.Query.Nearest(list(vector))
        fetch = limit * 4 if group_by_sha256 else limit
        while True:
            request = qe.QueryRequest(
                limit=fetch,
                query=query,
                filter=edge_filter,
                score_threshold=score_threshold,
                with_payload=True,
            )
            found = self._read("search", lambda s, r=request: s.query(r))
            hits = [Hit(id=str(p.id), score=p.score, payload=p.payload or {}) for p in found]
            if not group_by_sha256:
                return hits
            kept = collapse_by_sha256(hits, limit)
            # Many copies of one image can crowd the first page: widen until enough distinct.
            if len(kept) >= limit or len(found) < fetch or fetch >= 10_000:
                return kept
            fetch *= 4

    def _read(self, what: str, call: Any) -> Any:
        with self._handle_lock:
            shard = self._require()
            try:
                return call(shard)
            except ValueError as exc:
                raise StoreError(f"embedded store {what} rejected the request: {exc}") from None
            except Exception as exc:
                raise StoreError(f"embedded store {what} failed: {exc}") from None

    def _require(self) -> qe.EdgeShard:
        if self._shard is None:
            if self._closed:
                raise StoreError("the index is closed")
            raise StoreError("no collection is open: call ensure_collection first")
        return self._shard

    # --- background HNSW builds --------------------------------------------------------

    def status(self) -> IndexStatus:
        """Points, how many are in HNSW graphs, and whether a build is running."""
        info = self._read("info", lambda s: s.info())
        build = self._build
        return IndexStatus(
            points=info.points_count,
            indexed=info.indexed_vectors_count,
            outside=min(self._outside, info.points_count),
            building=build is not None,
            build_seconds=round(build.elapsed(), 1) if build is not None else None,
            build_points=build.meta.points if build is not None else None,
            build_expected_seconds=(
                builds.expected_seconds(build.collection, build.meta.points)
                if build is not None
                else None
            ),
            build_adopted=build is not None and build.adopted,
            builds=self._builds,
            last_build_seconds=self._last_build_seconds,
            last_build_replayed=self._last_build_replayed,
            last_error=self._last_error,
        )

    def graph_status(self) -> GraphStatus:
        """The status page's view: points in graphs, outside them, and a build's progress."""
        s = self.status()
        return GraphStatus(
            points=s.points,
            in_graph=s.points - s.outside,
            outside=s.outside,
            building=s.building,
            build_seconds=s.build_seconds,
            build_expected_seconds=s.build_expected_seconds,
        )

    def request_index_build(self) -> bool:
        """Start a background HNSW build now, whatever the threshold; False if one is running."""
        with self._write_lock:
            if self._build is not None:
                return False
            self._start_build()
        with self._wake:
            self._wake.notify_all()
        return True

    def wait_for_build(self, timeout: float) -> bool:
        """Block until no build is running; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._build is not None or self._finishing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
        return True

    def wait_for_builds(self, count: int, timeout: float) -> bool:
        """Block until ``count`` builds have completed since open; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._builds < count or self._finishing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
        return True

    def _start_maintenance(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._maintain, name="imgrag-edge-maintenance", daemon=True
            )
            self._thread.start()

    def _stop_maintenance(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        thread.join()
        self._stopping = False

    def _maintain(self) -> None:
        first = True
        while True:
            with self._wake:
                if self._stopping or self._closed:
                    return
                if not first:
                    # Poll faster while a child builds so the swap follows its exit promptly.
                    self._wake.wait(0.1 if self._build is not None else 1.0)
                first = False
                if self._stopping or self._closed:
                    return
            try:
                self._tick()
            except Exception as exc:  # the thread must survive; the error shows in status()
                if str(exc) != self._last_error:  # once, not every second while it lasts
                    log.warning("embedded store maintenance: %s", exc)
                self._last_error = str(exc)

    def _tick(self) -> None:
        if self._build is not None and not self._build.running():
            self._finish_build()
        now = time.monotonic()
        quiet = now - self._last_write >= self.settle_seconds
        due = quiet or now - self._last_flush >= self.flush_seconds
        if self._unflushed and due and now >= self._retry_flush_after:
            try:
                self.flush()
            except DiskFull:
                self._retry_flush_after = now + 10  # the WAL holds the writes meanwhile
                raise
        if self._build is not None or not self.auto_build or now < self._retry_build_after:
            return
        # A steady trickle never goes quiet: points that have waited are checked again too,
        # at most once a second (every write wakes this thread).
        waiting = self._outside_since is not None
        if not (self._unchecked or waiting) or (now < self._next_check and not quiet):
            return
        self._next_check = now + 1.0
        self._unchecked = False
        new = self._outside - self._baseline_unindexed
        if self._due(new, now, quiet):
            with self._write_lock:
                if self._build is None:
                    self._start_build()
        self.threshold_checks += 1

    def _due(self, new: int, now: float, quiet: bool) -> bool:
        """Enough new points (once writes pause or the oldest has settled), or points that
        have waited long enough and are enough for the engine to give them a graph."""
        waited = now - self._outside_since if self._outside_since is not None else 0.0
        if new >= self.index_threshold and (quiet or waited >= self.settle_seconds):
            return True
        return new >= self._smallest_graph() and waited >= self.build_after_seconds

    def _smallest_graph(self) -> int:
        # Segments below this many points stay exact (see _optimizers): a build started for
        # fewer would leave them outside any graph and cost a copy of the shard for nothing.
        return max(1, self.index_threshold // 4)

    def _start_build(self) -> None:
        """Flush, copy the live shard, start the child that builds its graphs (write lock held)."""
        assert self._dir is not None and self._gen is not None
        shard = self._require()
        current = self._gen
        if builds.busy(self._dir):
            # A builder of an earlier owner that could not be adopted is still running.
            self._retry_build_after = time.monotonic() + 10
            return
        # Above every folder present, so a generation kept by a recovery is never reused.
        number = max(newest_number(self._dir), generation_number(current) or 0) + 1
        final = self._dir / generation_name(number)
        building = self._dir / f"{final.name}.building"
        shutil.rmtree(building, ignore_errors=True)
        # The copy is as big as the live shard, and the build writes new segments beside it.
        try:
            size = _disk_usage(self._dir / current)
            space.ensure_room(self._dir, 2 * size + space.WRITE_ROOM, self.state_dir)
        except DiskFull as exc:
            self._retry_build_after = time.monotonic() + 60
            raise StoreError(f"background HNSW build postponed: {exc}") from None
        shard.flush()
        self._unflushed = False
        self._last_flush = time.monotonic()
        try:
            shutil.copytree(self._dir / current, building)
        except OSError:
            shutil.rmtree(building, ignore_errors=True)
            self._retry_build_after = time.monotonic() + 60
            raise
        try:
            points = shard.info().points_count
            self._build = builds.start(self._dir, final.name, current, points)
        except OSError:
            shutil.rmtree(building, ignore_errors=True)
            self._retry_build_after = time.monotonic() + 60
            raise
        # Writes from now on are replayed onto the copy but land outside its graphs.
        self._outside_since = None
        log.info(
            "embedded store: building HNSW graphs in the background (pid %d)",
            self._build.meta.pid,
        )

    def _finish_build(self) -> None:
        """Swap a finished build in (or drop a failed one); waiters wake once all is done."""
        self._finishing = True
        try:
            self._land_build()
        finally:
            self._finishing = False
            self._notify()

    def _land_build(self) -> None:
        build = self._build
        assert build is not None and self._dir is not None
        if build.proc is not None:
            build.proc.wait()
        done = build.result()
        if done is None:
            self._last_error = f"background HNSW build failed: {build.failure()}"
            log.warning("embedded store: %s", self._last_error)
            with self._write_lock:
                self._build = None
                self._outside_again(build)
            build.clear()
            shutil.rmtree(build.directory, ignore_errors=True)
            self._retry_build_after = time.monotonic() + 60
            self._notify()
            return
        new: qe.EdgeShard | None = None
        replayed: set[str] = set()
        try:
            # Loading the copy and catching it up with the writes made since the build began
            # run without the write lock: writes go on, and the GIL is handed back between
            # chunks so searches are served (the whole replay used to hold both). Only the
            # remainder is replayed under the lock, just before the swap.
            if build.directory.exists():  # else a swap cut short already renamed it
                os.replace(build.directory, build.final)
            new = qe.EdgeShard.load(str(build.final))
            for _ in range(_CATCH_UP_ROUNDS):
                with self._write_lock:
                    if len(build.touched) <= _REPLAY_CHUNK:
                        break
                    ids = sorted(build.touched)
                    build.touched.clear()
                self._replay_unlocked(new, ids)
                replayed.update(ids)
            new.flush()  # so the flush under the lock writes only the remainder
        except Exception as exc:
            with self._write_lock:
                self._drop_build(build, new, exc)
            return
        with self._write_lock:
            old = self._require()
            try:
                _replay(old, new, sorted(build.touched))
                replayed.update(build.touched)
                new.flush()
                # Written during the build, so outside its graphs: what the replay left.
                written_since = _live_count(new, sorted(replayed))
                previous = self._gen
                assert previous is not None
                _write_atomic(self._dir / CURRENT_FILE, build.final.name)
            except Exception as exc:
                self._drop_build(build, new, exc)
                return
            with self._handle_lock:
                self._shard = new
            self._gen = build.final.name
            self._reserve()
            self._build = None
            self._builds += 1
            # The builder's own time: an adopted build may have waited long for an opener.
            took = done.get("seconds")
            self._last_build_seconds = (
                float(took)
                if isinstance(took, int | float)
                else round(time.monotonic() - build.started, 3)
            )
            self._last_build_replayed = len(replayed)
            build.clear()
            self._last_error = None
            self._unchecked = True
            # Points written during the build are outside its graphs and count toward the
            # next one. Points of the copy the engine gave no graph (too few in a segment)
            # stay outside too, and the next build needs that many more, or builds would
            # start in a loop. The builder counted those on the copy it had just optimized;
            # the live shard's own count would also include every deleted point.
            left = int(str(done.get("points", 0))) - int(str(done.get("indexed", 0)))
            self._baseline_unindexed = max(0, left)
            self._outside = self._baseline_unindexed + written_since
            builds.write_outside(self._dir, self._outside)
            builds.record_graph(
                self._dir,
                builds.GraphRecord(
                    points=build.meta.points,
                    seconds=self._last_build_seconds,
                    left_outside=self._baseline_unindexed,
                ),
            )
        old.close()
        shutil.rmtree(self._dir / previous, ignore_errors=True)
        log.info("embedded store: HNSW build done in %.1f s", self._last_build_seconds)
        self._notify()

    def _replay_unlocked(self, new: qe.EdgeShard, ids: list[str]) -> None:
        """Replay ``ids`` onto ``new`` a chunk at a time, letting other threads run between
        chunks; the live shard stays open (only this thread swaps or closes it)."""
        old = self._require()
        for start in range(0, len(ids), _REPLAY_CHUNK):
            _replay(old, new, ids[start : start + _REPLAY_CHUNK])
            self._replayed_chunk()
            time.sleep(0)  # gives up the GIL: a search waiting for it runs now

    def _replayed_chunk(self) -> None:
        """Called between chunks replayed without the write lock (a hook for tests)."""

    def _drop_build(self, build: builds.Build, new: qe.EdgeShard | None, exc: Exception) -> None:
        """A build that could not be swapped in: delete it, keep serving the live shard."""
        if new is not None:
            new.close()
        build.clear()
        shutil.rmtree(build.final, ignore_errors=True)
        shutil.rmtree(build.directory, ignore_errors=True)
        self._build = None
        self._outside_again(build)
        self._last_error = f"could not swap in the rebuilt index: {exc}"
        self._retry_build_after = time.monotonic() + 60
        self._notify()

    def _outside_again(self, build: builds.Build) -> None:
        """A build that did not land leaves its points outside a graph since it started."""
        since = self._outside_since
        self._outside_since = build.started if since is None else min(since, build.started)

    def _abort_build(self) -> None:
        build, self._build = self._build, None
        if build is None:
            return
        build.kill()
        build.clear()
        shutil.rmtree(build.directory, ignore_errors=True)
        shutil.rmtree(build.final, ignore_errors=True)
        self._notify()

    def _leave_build(self) -> None:
        """At close: swap in a build that has finished, start one when enough points for a
        graph are outside any (a quarter of the threshold, what the age trigger would build
        in a process that stays), and leave a build in progress to finish on its own (the
        next process to open the store adopts it). Finished work is never thrown away, and a
        short-lived writer still leaves its points a graph."""
        try:
            if self._build is not None and not self._build.running():
                self._finish_build()
            if self._build is None and self._due_at_close():
                self._start_build()
        except Exception as exc:  # closing goes on; the next opener builds instead
            log.warning("embedded store: %s", exc)
        build, self._build = self._build, None
        if build is not None:
            build.detach()
            log.info(
                "embedded store: the HNSW build (pid %d) goes on after this process; the "
                "next process to open the store adopts it",
                build.meta.pid,
            )

    def _due_at_close(self) -> bool:
        if not self.auto_build or self._shard is None or time.monotonic() < self._retry_build_after:
            return False
        # No one is left to wait for the age trigger: enough points for a graph of their own
        # get one now, as they would after build_after_seconds in a process that stays.
        return self._outside - self._baseline_unindexed >= self._smallest_graph()

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # --- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop background work, flush and release the store; safe to call twice."""
        if self._closed:
            return
        self._stop_maintenance()
        with self._write_lock:
            try:
                self._leave_build()
            finally:  # also on Ctrl+C during it: the shard is closed and the store released
                self._closed = True
                with self._handle_lock:
                    shard, self._shard = self._shard, None
                try:
                    if shard is not None:
                        _flush_quietly(shard)
                        shard.close()
                finally:
                    self._owner.release()
        self._notify()

    def __enter__(self) -> EdgeIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _flush_quietly(shard: qe.EdgeShard) -> None:
    try:
        shard.flush()
    except Exception as exc:  # the WAL has every write; reopening replays it
        # A full disk is already the caller's one line: only note it here.
        full = "No space left" in str(exc)
        log.log(
            logging.INFO if full else logging.WARNING,
            "embedded store: flush on close failed: %s",
            exc,
        )


def _holds_generations(directory: Path) -> bool:
    """Whether a collection folder has any generation folder (complete or not)."""
    if not directory.is_dir():
        return False
    return any(
        generation_number(e.name.removesuffix(".building")) is not None and e.is_dir()
        for e in directory.iterdir()
    )


def _current_problem(directory: Path, named: str | None) -> str:
    if not (directory / CURRENT_FILE).exists():
        return "CURRENT is missing"
    if named is None:
        return "CURRENT is blank or not a generation name"
    return f"CURRENT names {named}, which is missing or incomplete"


def _shard_dimension(directory: Path) -> int | None:
    """The vector size the newest complete generation was created with, if it says."""
    for gen in complete_generations(directory):
        try:
            config = json.loads((directory / gen / SHARD_CONFIG).read_text())
            size = config["vectors"][""]["size"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return int(size)
    return None


def _sample_models(shard: qe.EdgeShard) -> list[str]:
    """The model named by the first points' payloads ("unknown" where none is named)."""
    request = qe.ScrollRequest(
        limit=_MODEL_SAMPLE,
        with_payload=qe.PayloadSelector.Include([MODEL_FIELD]),
        with_vector=False,
    )
    records, _ = shard.scroll(request)
    models: list[str] = []
    for record in records:
        value = (record.payload or {}).get(MODEL_FIELD)
        models.append(value if isinstance(value, str) and value else "an unknown model")
    return models


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _live_count(shard: qe.EdgeShard, ids: list[str]) -> int:
    """How many of ``ids`` ``shard`` holds."""
    ids = [i for i in ids if _is_uuid(i)]
    found = 0
    for start in range(0, len(ids), PAGE):
        found += len(shard.retrieve(ids[start : start + PAGE], False, False))
    return found


def _replay(old: qe.EdgeShard, new: qe.EdgeShard, ids: list[str]) -> int:
    """Copy the current state of ``ids`` from the live shard into the rebuilt one. An id
    the engine would not take (a write it refused, a line torn by a crash) is skipped: it
    names no point, and must not cost the whole build."""
    ids = [i for i in ids if _is_uuid(i)]
    for start in range(0, len(ids), _REPLAY_CHUNK):
        chunk = ids[start : start + _REPLAY_CHUNK]
        records = old.retrieve(chunk, True, True)
        present = {str(r.id) for r in records}
        if records:
            points = [qe.Point(str(r.id), _vector(r.vector), r.payload or {}) for r in records]
            new.update(qe.UpdateOperation.upsert_points(points))
        gone = [i for i in chunk if i not in present]
        if gone:
            new.update(qe.UpdateOperation.delete_points(gone))
    return len(ids)


def _vector(value: Any) -> list[float]:
    if isinstance(value, dict):  # named vectors; this store uses the unnamed one
        value = value.get("", next(iter(value.values())))
    if isinstance(value, list):
        return value  # the engine hands back a fresh list of floats already
    return [float(x) for x in value]


def _schema(kind: str) -> Any:
    if kind == "folder":
        return qe.KeywordIndexParams(prefix=True)
    return {
        "keyword": qe.PayloadSchemaType.Keyword,
        "integer": qe.PayloadSchemaType.Integer,
        "datetime": qe.PayloadSchemaType.Datetime,
    }[kind]


def _disk_usage(folder: Path) -> int:
    """Bytes the files below ``folder`` take (their full size: a copy is not sparse)."""
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(parent, name)).st_size
    return total


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename itself must reach the disk before anything relies on it (not on Windows).
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
