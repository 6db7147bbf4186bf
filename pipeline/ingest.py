"""Ingestion: bring the index in line with a source, one item or the whole listing at a time.

The source is the truth. The one :class:`Indexer` works over any ``Source`` (a folder, a
blob container, ...): it decides what needs work, reuses vectors by embed key and a point's
own stored vector, batches requests and upserts (bisecting a refused batch), makes the
gallery's thumbnails and journals each item's failure. Each point's payload carries the
facts reconciliation compares (size, mtime_ns, sidecar signature, sha256, embed key);
unchanged items cost a stat (or a listing row), moved and copied ones reuse their stored
vector, and only new content reaches the embedder.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import io
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from imgrag._errors import (
    CollectionMismatch,
    CredentialError,
    DiskFull,
    EmbedderError,
    ExtraNotInstalled,
    FatalError,
    ImageRejected,
    InputTypeNotSupported,
    ItemGone,
    ItemUnavailable,
    KeptChanging,
    ModalityNotSupported,
    PointRejected,
    PruneRefused,
    ReadRefused,
    RequestRejected,
    SidecarError,
    StoreError,
    StoreLocked,
    UnstorablePayload,
)
from imgrag.connectors.embedder import Embedder, Embedding, ImageInput, Usage
from imgrag.connectors.index import FileState, Index, Point
from imgrag.pipeline.batching import Batcher, ItemFailed
from imgrag.pipeline.candidates import Seen
from imgrag.pipeline.images import ImageFacts, for_embedder, probe
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.keys import embed_key, point_id
from imgrag.pipeline.known import KnownFiles
from imgrag.pipeline.names import is_plain, on_disk, printable
from imgrag.pipeline.source import (
    ItemRead,
    Scan,
    Source,
    is_unchanged,
    needs_work,
)
from imgrag.pipeline.thumbnails import (
    adopt_flat_cache,
    cached_path,
    discard,
    held_in,
    recorded_sha256,
    save_thumbnail,
)
from PIL import Image
from pydantic import BaseModel, Field

__all__ = ["Indexer", "Outcome", "Summary", "cause_of"]

log = logging.getLogger("imgrag.ingest")

# Errors that no file can get past: stop the run and say how to fix it.
_FATAL = (
    CredentialError,
    InputTypeNotSupported,
    ModalityNotSupported,
    CollectionMismatch,
    StoreLocked,
    ExtraNotInstalled,
    DiskFull,
)
_VECTOR_CACHE = 4096
# OS errors that say "this path is not a file we can read", not "the disk hiccuped".
_PERMANENT_ERRNOS = frozenset(
    {errno.ELOOP, errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR, errno.ENXIO, errno.ENODEV,
     errno.EINVAL, errno.EILSEQ, errno.EACCES, errno.EPERM}
)  # fmt: skip


def cause_of(exc: BaseException) -> BaseException:
    """The connector error behind a FatalError (kept as its cause or context)."""
    return exc.__cause__ or exc.__context__ or exc


class Summary(BaseModel):
    """What a pass did. ``failed`` counts files not indexed, by reason in ``failed_by_reason``."""

    indexed: int = 0
    unchanged: int = 0
    reused: int = 0
    removed: int = 0
    failed: int = 0
    failed_by_reason: dict[str, int] = Field(default_factory=dict)
    pending: int = 0
    """Files this pass left for a later one (still changing, or a passing failure); they
    stay pending in the status sense until a pass indexes them."""
    left: int = 0
    """Files not started because a stop was asked; the next start picks them up."""
    unreadable: dict[str, str] = Field(default_factory=dict)
    """Folders that could not be listed (folder → why); nothing under them was removed."""
    root_missing: bool = False
    requests: int = 0
    tokens: int = 0
    seconds: float = 0.0
    cleared: int = 0
    """Recorded failures a retry forgot before the pass (``imgrag retry``)."""

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.failed_by_reason[reason] = self.failed_by_reason.get(reason, 0) + 1


Outcome = Literal["indexed", "reused", "unchanged", "failed", "pending", "gone"]


class Indexer:
    """Indexes the images of one ``Source`` with one embedder into one index.

    Nothing here knows what the source is: it lists, reads, describes and follows; this
    class decides what needs work and does it. ``source`` is the source's name (as the
    journal, point ids and status name it), ``origin`` the ``Source`` itself.
    """

    def __init__(
        self,
        origin: Source,
        *,
        embedder: Embedder,
        index: Index,
        journal: Journal,
        image_format: Literal["png", "jpeg", "webp"] = "png",
        embed_concurrency: int = 1,
        on_progress: Callable[[str, Outcome], None] | None = None,
        observe_embed: Callable[[float], None] | None = None,
        thumbs: Path | None = None,
    ) -> None:
        self.origin = origin
        self.source = origin.name
        self.embedder = embedder
        self.index = index
        self.journal = journal if journal.source == self.source else journal.scoped(self.source)
        self.rules = origin.rules
        self.adopted = 0
        """Points from before sources this indexer took over (re-keyed, no embedding)."""
        self.foreign_legacy: dict[str, int] = {}
        """Points from before sources recorded for another root (root → count): left alone."""
        self.on_progress = on_progress
        self.on_total: Callable[[int], None] | None = None
        """Told how many items a pass will work on, before it starts them."""
        self.observe_embed = observe_embed
        self.thumbs = thumbs
        """The gallery's thumbnail cache: each image decoded for embedding gets its thumbnail
        there at once (None: made on first request instead)."""
        self._thumb_failed = False
        self._orphans: set[str] = set()
        """Contents whose point left the index or was edited this pass: their thumbnails go
        at the end of the pass when no point holds them then (a rename's new half keeps it)."""
        self._leaving: set[str] = set()
        """Contents of the items this pass will remove, known before it indexes anything."""
        self._landed: set[str] = set()
        """Of those, the contents a point of this pass landed with: held, no count needed
        (a rename costs no query per file)."""
        self._format = image_format
        info = embedder.info
        self._info = info
        batch = max(1, info.max_images_per_request)
        self._workers = min(128, max(8, 2 * batch, 2 * embed_concurrency))
        self._pool = ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 2), thread_name_prefix="imgrag-decode"
        )
        self._embeds: Batcher[ImageInput, Embedding] = Batcher(
            self._embed_batch, max_items=batch, linger=0.05, max_in_flight=embed_concurrency
        )
        self._upserts: Batcher[Point, Exception | None] = Batcher(
            self._upsert_batch, max_items=32, linger=0.1, max_in_flight=1
        )
        # float32 arrays: a Python list of floats costs ~8x the memory.
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[tuple[list[float], Embedding | None]]] = {}
        self._known = KnownFiles()
        self._loaded = False
        self.pending = 0
        """Items a worker holds right now (the daemon counts them as left when it stops)."""
        self.stopping = False
        self.left = 0
        """Items skipped because a stop was asked (left for the next start)."""
        self.backlog = 0
        """Items the last full listing found to index that are not done yet."""
        self.listing = Scan()
        """The last full listing (what could not be listed, what was gone)."""
        self.outstanding: set[str] = set()
        """Items seen to need work and not done yet: the last listing's work, changes
        looked at since, items still changing or failed for a passing reason. Kept as items
        finish, so the daemon's status counts its pending items without listing."""
        self.listed_at: float | None = None
        """When the last full listing was taken (None before the first)."""

    # -- setup and teardown ----------------------------------------------------------------

    @property
    def root(self) -> Path | None:
        """The folder of a local source (None for a remote one); ``origin.display_root``
        names any source."""
        return self.origin.local_root

    def stop(self) -> None:
        """Take no new items: passes in progress finish what they started and return."""
        self.stopping = True

    async def close(self) -> None:
        await self._upserts.flush()
        try:
            await self._settle_thumbnails()
        except Exception as exc:  # a thumbnail left behind costs nothing but its bytes
            log.debug("thumbnails not removed at close: %s", _describe(exc))
        # Decodes still running on abandoned items are not waited for: the process is ending.
        self._pool.shutdown(wait=not self.stopping, cancel_futures=True)
        self.origin.close(wait=not self.stopping)

    async def load_state(self) -> None:
        """Read the per-item state this source holds in the index (only the reconciliation
        fields), kept packed and current as this indexer writes, so later passes do not
        read it again. Points from before sources whose recorded root is this root are adopted:
        re-keyed to this source with their stored vectors, without calling the embedder."""
        states = await asyncio.to_thread(lambda: list(self.index.file_states()))
        if self.thumbs is not None:
            sha256_of = recorded_sha256(self.index.payload_by_id)
            await asyncio.to_thread(adopt_flat_cache, self.thumbs, sha256_of)
        root = self.origin.payload_root
        self._known = KnownFiles(s for s in states if s.source == self.source)
        legacy = [s for s in states if s.source is None and s.root == root]
        foreign: dict[str, int] = {}
        for s in states:
            if s.source is None and s.root != root:
                foreign[s.root or "?"] = foreign.get(s.root or "?", 0) + 1
        self.foreign_legacy = foreign
        for other, count in foreign.items():
            log.warning(
                "the index holds %d files from before sources, recorded for %s, not %s: they "
                "are left alone; `imgrag ingest %s` adopts them (0 requests), or "
                "`imgrag forget %s` removes them",
                count, printable(other), printable(root), printable(other), printable(other),
            )  # fmt: skip
        if legacy:
            self.adopted += await self._adopt(legacy)
        self._loaded = True

    async def _adopt(self, legacy: Sequence[FileState]) -> int:
        """Re-key points written before sources to (this source, path): same vector and
        payload plus ``source``; the old point goes once the new one landed."""
        adopted = 0
        for start in range(0, len(legacy), 64):
            chunk = legacy[start : start + 64]
            points: list[Point] = []
            for state in chunk:
                vector = await asyncio.to_thread(self.index.vector_by_id, state.id)
                payload = await asyncio.to_thread(self.index.payload_by_id, state.id)
                if vector is None or payload is None:
                    continue
                pid = point_id(self.source, on_disk(state.path))
                payload["source"] = self.source
                points.append(Point(id=pid, vector=vector, payload=payload))
                self._known[state.path] = state.model_copy(
                    update={"id": pid, "source": self.source}
                )
            await asyncio.to_thread(self.index.upsert, points)
            stale = [s.id for s in chunk if s.id != self._known.get(s.path, s).id]
            await asyncio.to_thread(self.index.delete_ids, stale)
            adopted += len(points)
        await asyncio.to_thread(self.journal.adopt, self.source)
        log.info("adopted %d files indexed before sources as source %s", adopted, self.source)
        return adopted

    @property
    def indexed_count(self) -> int:
        return len(self._known)

    @property
    def known(self) -> Mapping[str, FileState]:
        """What the index holds, path → state, as this indexer last read or wrote it."""
        return self._known

    # -- passes ----------------------------------------------------------------------------

    async def reconcile(
        self, on_total: Callable[[int], None] | None = None, *, prune: bool = False
    ) -> Summary:
        """Compare the whole listing with the index and fix every difference.

        A point is removed only when its item is known gone: a complete listing of where it
        was lacks it. A pass that would empty a non-empty index raises PruneRefused unless
        ``prune`` confirms it.
        """
        started = time.perf_counter()
        usage_before = self.embedder.usage
        summary = Summary()
        if not self._loaded:
            await self.load_state()
        permanent = await asyncio.to_thread(self.journal.permanent_failures)
        scan = await asyncio.to_thread(
            self.origin.scan, self._known, permanent, lambda: self.stopping
        )
        self.listing = scan
        summary.unreadable = dict(scan.unreadable)
        summary.root_missing = scan.root_missing
        summary.unchanged += scan.unchanged
        gone = scan.gone
        if gone and not scan.present and len(gone) == scan.mine and not prune:
            raise PruneRefused(self.origin.refuse_prune(len(gone)))
        todo = [s for s in scan.changed if self._needs_work(s, permanent.get(s.rel), summary)]
        self.backlog = len(todo)
        self.outstanding = {s.rel for s in todo}
        self.listed_at = time.time()
        if on_total is not None:
            on_total(len(todo))
        self._expect_leaving(gone)
        await self._run_many(todo, summary)
        if gone and not self.stopping:
            summary.removed += await self._delete(gone)
        if scan.stale_failures:
            await asyncio.to_thread(self.journal.clear, scan.stale_failures)
        await self._settle_thumbnails()
        return self._finish(summary, usage_before, started)

    async def update(self, rels: Iterable[str]) -> Summary:
        """Index (or remove) these items after a change was seen; no full listing."""
        if not self._loaded:
            await self.load_state()
        started = time.perf_counter()
        usage_before = self.embedder.usage
        summary = Summary()
        todo: list[Seen] = []
        missing: list[str] = []
        for rel in dict.fromkeys(rels):
            s = await asyncio.to_thread(self.origin.look, rel)
            if s is None:
                missing.append(rel)
                continue
            failure = await asyncio.to_thread(self.journal.permanent_signature, rel)
            if self._needs_work(s, failure, summary):
                todo.append(s)
                self.outstanding.add(rel)
            else:
                self.outstanding.discard(rel)
        self.outstanding.difference_update(missing)  # not there: nothing to index
        self._expect_leaving(missing)
        await self._run_many(todo, summary)
        missing = await asyncio.to_thread(self.origin.known_gone, missing)
        if missing:
            summary.removed += await self._delete([m for m in missing if m in self._known])
            await asyncio.to_thread(self.journal.clear, missing)
        await self._settle_thumbnails()
        return self._finish(summary, usage_before, started)

    async def apply(self, names: Sequence[str]) -> Summary:
        """``update`` the items changed names stand for (a sidecar's image)."""
        items = self.origin.expand(names, self._known)
        return await self.update(items) if items else Summary()

    def known_gone(self, rels: Iterable[str]) -> list[str]:
        """Of items not found, those positively gone (the source says how it knows)."""
        return self.origin.known_gone(rels)

    def _needs_work(self, s: Seen, failure: tuple[str, str] | None, summary: Summary) -> bool:
        """``needs_work``, counting the items it skips in ``summary``."""
        if self._known.unchanged(s.rel, s.size, s.mtime_ns, s.sidecar):
            summary.unchanged += 1  # the common case of a rescan, without a FileState
            return False
        known = self._known.get(s.rel)
        if needs_work(known, s, failure[0] if failure is not None else None):
            return True
        if known is not None and is_unchanged(known, s):
            summary.unchanged += 1
        elif failure is not None:
            summary.fail(failure[1])
        return False

    def _finish(self, summary: Summary, usage_before: Usage, started: float) -> Summary:
        usage = self.embedder.usage
        summary.requests = usage.requests - usage_before.requests
        summary.tokens = usage.tokens - usage_before.tokens
        summary.seconds = round(time.perf_counter() - started, 3)
        return summary

    async def remove_folder(self, rel_folder: str) -> int:
        """A folder was deleted or moved away: drop every point below it, once its parent
        lists without it (a vanished root or an unreadable parent removes nothing)."""
        rel_folder = rel_folder.rstrip("/")
        if not rel_folder or not await asyncio.to_thread(self.origin.prefix_gone, rel_folder):
            return 0
        prefix = rel_folder + "/"
        self.outstanding = {p for p in self.outstanding if not p.startswith(prefix)}
        paths = [p for p in self._known if p.startswith(prefix)]
        removed = await self._delete(paths) if paths else 0
        await asyncio.to_thread(self.journal.clear_folder, rel_folder)
        await self._settle_thumbnails()
        return removed

    # -- the work --------------------------------------------------------------------------

    async def _run_many(self, todo: Sequence[Seen], summary: Summary) -> None:
        if self.on_total is not None:
            self.on_total(len(todo))
        if not todo:
            return
        queue: asyncio.Queue[Seen | None] = asyncio.Queue(maxsize=self._workers * 2)
        fatal: list[BaseException] = []

        async def produce() -> None:
            for s in todo:
                await queue.put(s)
            for _ in range(self._workers):
                await queue.put(None)

        async def work() -> None:
            while (s := await queue.get()) is not None:
                self.pending += 1  # in flight until the finally below
                try:
                    if fatal or self.stopping:
                        summary.left += 1
                        self.left += 1
                        continue
                    outcome = await self._one(s, summary)
                except FatalError as exc:
                    fatal.append(exc)
                    continue
                except Exception as exc:  # _one holds every item's failure; a last guard
                    log.error(
                        "failed %s: internal_error: %s", printable(s.rel), printable(_describe(exc))
                    )
                    log.debug("%s", s.rel, exc_info=True)
                    summary.fail("internal_error")
                    outcome = "failed"
                finally:
                    self.pending -= 1
                    self.backlog = max(0, self.backlog - 1)
                self._progress(s.rel, outcome)

        await asyncio.gather(produce(), *(work() for _ in range(min(self._workers, len(todo)))))
        await self._upserts.flush()
        if fatal:
            raise fatal[0]

    def _progress(self, rel: str, outcome: Outcome) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(rel, outcome)
            except Exception:  # a progress display must not stop the pass
                log.debug("progress callback failed", exc_info=True)

    async def _one(self, s: Seen, summary: Summary) -> Outcome:
        """Index one item. Every failure but the run-level ones (_FATAL) is this item's:
        journaled with a reason and the message, logged once, and the pass goes on."""
        try:
            outcome = await self._index_item(s)
        except _FATAL as exc:
            raise FatalError(str(exc)) from None
        except FatalError:
            raise
        except KeptChanging:
            summary.pending += 1
            self.outstanding.add(s.rel)
            return "pending"
        except ItemGone:
            self.outstanding.discard(s.rel)
            return "gone"  # removed while queued; the deletion pass or the follower drops it
        except Exception as exc:
            await self._failed(s, exc, summary)
            return "failed"
        self.outstanding.discard(s.rel)
        if outcome == "indexed":
            summary.indexed += 1
        elif outcome == "reused":
            summary.reused += 1
        else:
            summary.unchanged += 1
        return outcome

    async def _failed(self, s: Seen, exc: Exception, summary: Summary) -> None:
        kind, reason = _reason_for(exc, s)
        message = _describe(exc)
        if reason == "internal_error":
            message = f"{type(exc).__name__}: {message}"
        try:
            await asyncio.to_thread(self.journal.record, s.rel, s.signature, kind, reason, message)
            if kind == "permanent" and s.rel in self._known:
                await self._delete([s.rel])  # the old content is no longer what the item holds
        except _FATAL as fatal:
            raise FatalError(str(fatal)) from None
        except Exception as inner:  # the record is lost, the pass is not
            log.error("%s: cannot record the failure: %s", printable(s.rel), _describe(inner))
        summary.fail(reason)
        if kind == "transient":
            summary.pending += 1
            self.outstanding.add(s.rel)
            log.info("failed %s: %s: %s; will retry", printable(s.rel), reason, printable(message))
            return
        self.outstanding.discard(s.rel)
        log.warning("failed %s: %s: %s", printable(s.rel), reason, printable(message))
        if reason == "internal_error":
            log.debug("%s", printable(s.rel), exc_info=exc)

    async def _index_item(self, s: Seen) -> Outcome:
        read = await self.origin.read(s)
        loop = asyncio.get_running_loop()
        facts = await loop.run_in_executor(self._pool, probe, read.raw)
        info = self._info
        caption = read.sidecar.caption if info.supports_image_text else None
        key = embed_key(read.sha256, caption, info.model, "document", info.dimension)
        pid = point_id(self.source, read.key)
        vector, embedding = await self._point_vector(read.item.rel, pid, key, read, caption)
        if embedding is None and self.thumbs is not None and not self._has_thumbnail(read):
            # Embedding made the thumbnail from its decode; a reused vector decoded nothing.
            # A moved or copied file shares its content's thumbnail (one stat); without one
            # it is made from the bytes at hand, so the gallery never decodes the original.
            await loop.run_in_executor(self._pool, self._thumbnail_of, pid, read)
        where, meta = self.origin.describe(read)
        payload = self._described(where, read, facts, key, embedding, caption, meta)
        item = read.item
        state = FileState(
            id=pid,
            path=item.rel,
            size=item.size,
            mtime_ns=item.mtime_ns,
            sha256=read.sha256,
            embed_key=key,
            sidecar=item.sidecar,
        )
        await self._store(Point(id=pid, vector=vector, payload=payload), state)
        return "indexed" if embedding is not None else "reused"

    async def _point_vector(
        self, rel: str, pid: str, key: str, read: ItemRead, caption: str | None
    ) -> tuple[list[float], Embedding | None]:
        """The point's vector: its own stored one when its embed key is unchanged (only the
        payload is refreshed), else from ``_vector``. The Embedding is None when no API
        call was made."""
        known = self._known.get(rel)
        if known is not None and known.embed_key == key and known.id == pid:
            vector = await asyncio.to_thread(self.index.vector_by_id, pid)
            if vector is not None:
                return vector, None
        return await self._vector(key, read, caption, pid)

    async def _store(self, point: Point, state: FileState) -> None:
        """Upsert the point, then remember its item state and clear its failures."""
        refused = await self._upserts.submit(point)
        if refused is not None:
            raise refused
        former = self._known.get(state.path)
        if former is not None and former.sha256 != state.sha256:
            self._orphans.add(former.sha256)  # an edit: the old content may be nobody's now
        if state.sha256 in self._leaving:
            self._landed.add(state.sha256)
        self._known[state.path] = state
        await asyncio.to_thread(self.journal.clear, [state.path])

    async def _vector(
        self, key: str, read: ItemRead, caption: str | None, pid: str
    ) -> tuple[list[float], Embedding | None]:
        """The vector for an embed key: cached, being computed, stored, or embedded now.

        The Embedding is None when an existing vector was reused (no API call).
        """
        cached = self._vectors.get(key)
        if cached is not None:
            self._vectors.move_to_end(key)
            return cached.tolist(), None
        running = self._inflight.get(key)
        if running is not None:
            vector, _ = await asyncio.shield(running)
            return vector, None
        future: asyncio.Future[tuple[list[float], Embedding | None]] = (
            asyncio.get_running_loop().create_future()
        )
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._inflight[key] = future
        try:
            stored = await asyncio.to_thread(self.index.vector_by_embed_key, key)
            if stored is None:  # a moved file's old point may be gone: its vector was kept
                stored = await asyncio.to_thread(self.journal.recycled, key)
            if stored is not None:
                result: tuple[list[float], Embedding | None] = (stored, None)
            else:
                embedding = await self._embed(read, caption, pid)
                result = (embedding.vector, embedding)
            self._remember(key, result[0])
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            del self._inflight[key]

    async def _embed(self, read: ItemRead, caption: str | None, pid: str) -> Embedding:
        loop = asyncio.get_running_loop()
        thumb = None
        if self.thumbs is not None:
            thumb = functools.partial(self._thumbnail, read.sha256)
        item = await loop.run_in_executor(
            self._pool, for_embedder, read.raw, self._info, self._format, caption, thumb
        )
        return await self._embeds.submit(item)

    def _thumbnail(self, sha256: str, image: Image.Image) -> None:
        """The gallery's thumbnail, from the image just decoded for embedding (in the decode
        thread). A failure costs the item nothing: the gallery makes it on first request."""
        assert self.thumbs is not None
        try:
            save_thumbnail(sha256, image, self.thumbs)
        except Exception as exc:
            # Logged once: a cache that cannot be written would fail every item alike.
            level = logging.DEBUG if self._thumb_failed else logging.WARNING
            self._thumb_failed = True
            log.log(
                level,
                "no thumbnail at ingest (%s); the gallery makes them on first view instead",
                _describe(exc),
            )

    def _thumbnail_of(self, pid: str, read: ItemRead) -> None:
        """The gallery's thumbnail from the bytes at hand (a remote item is not read again)."""
        try:
            with Image.open(io.BytesIO(read.raw)) as img:
                self._thumbnail(read.sha256, img)
        except Exception as exc:  # the point is still worth indexing without one
            log.warning("no thumbnail for %s: %s", pid, _describe(exc))

    def _has_thumbnail(self, read: ItemRead) -> bool:
        """Whether the content of ``read`` has its thumbnail already: one exact name."""
        assert self.thumbs is not None
        target = cached_path(read.sha256, self.thumbs)
        return target is not None and target.is_file()

    def _expect_leaving(self, rels: Iterable[str]) -> None:
        """Note the contents of items that may leave in this pass, before anything lands."""
        if self.thumbs is not None:
            self._leaving.update(s.sha256 for r in rels if (s := self._known.get(r)) is not None)

    async def _settle_thumbnails(self) -> None:
        """Remove the thumbnails of contents that left the index this pass and that no point
        holds now: at most one indexed count and one unlink per content, whatever the cache
        holds; none for a content a point of this pass landed with. Checked at the end of
        the pass, so a rename's two halves keep the thumbnail in either order."""
        hashes = sorted(self._orphans - self._landed)
        self._orphans.clear()
        self._leaving.clear()
        self._landed.clear()
        if hashes and self.thumbs is not None:
            await asyncio.to_thread(discard, hashes, self.thumbs, held_in(self.index))

    def _remember(self, key: str, vector: list[float]) -> None:
        self._vectors[key] = np.asarray(vector, dtype=np.float32)
        if len(self._vectors) > _VECTOR_CACHE:
            self._vectors.popitem(last=False)

    async def _embed_batch(self, items: Sequence[ImageInput]) -> list[Embedding | ItemFailed]:
        """Embed a batch in one request. When the service rejects the request (one bad image
        of several is enough), embed the images one by one so only the bad ones fail."""
        started = time.perf_counter()
        try:
            try:
                return list(await self.embedder.embed_images(items, "document"))
            except RequestRejected:
                if len(items) < 2:
                    raise
            alone = await asyncio.gather(
                *(self.embedder.embed_images([item], "document") for item in items),
                return_exceptions=True,
            )
            out: list[Embedding | ItemFailed] = []
            for result in alone:
                if isinstance(result, Exception):
                    out.append(ItemFailed(result))
                elif isinstance(result, BaseException):
                    raise result
                else:
                    out.append(result[0])
            return out
        finally:
            if self.observe_embed is not None:
                self.observe_embed(time.perf_counter() - started)

    async def _upsert_batch(self, points: Sequence[Point]) -> list[Exception | None]:
        """Upsert a batch; when the store refuses it, split it until the points it refuses
        are found. Those fail alone (as PointRejected when others landed); the rest land.
        A named store error (a StoreError subclass: locked, another model's collection, ...)
        is not split: every file of the batch gets it, as before."""
        results = await self._land(points)
        if any(r is None for r in results):
            return [
                r if r is None else PointRejected(f"the store refused this point: {_describe(r)}")
                for r in results
            ]
        return results

    async def _land(self, points: Sequence[Point]) -> list[Exception | None]:
        try:
            await asyncio.to_thread(self.index.upsert, points)
        except Exception as exc:
            if isinstance(exc, StoreError) and type(exc) is not StoreError:
                raise  # a named store condition (locked, full, ...) is the batch's, not a point's
            if len(points) == 1:
                return [exc]
            mid = len(points) // 2
            return [*await self._land(points[:mid]), *await self._land(points[mid:])]
        return [None] * len(points)

    async def _delete(self, rels: Sequence[str]) -> int:
        """Drop points, keeping their vectors at hand so a move can reuse them.

        Callers pass only files known gone (or whose content was replaced)."""
        states = [self._known[r] for r in rels if r in self._known]
        if not states:
            return 0
        cached = {
            s.embed_key: self._vectors[s.embed_key].tolist()
            for s in states
            if s.embed_key and s.embed_key in self._vectors
        }
        kept = await asyncio.to_thread(self._vectors_of, states, cached)
        for key, vector in list(kept.items())[: _VECTOR_CACHE // 4]:
            self._remember(key, vector)
        # Kept on disk before the points go: the move's other half reuses them, even when it
        # lands in a later batch or after a kill -9.
        await asyncio.to_thread(self.journal.recycle, kept)
        await asyncio.to_thread(self.index.delete_ids, [s.id for s in states])
        for state in states:
            self._known.pop(state.path, None)
        self._orphans.update(s.sha256 for s in states)
        return len(states)

    def _vectors_of(
        self, states: Sequence[FileState], kept: dict[str, list[float]]
    ) -> dict[str, list[float]]:
        """embed key → vector of these points (one per key): ``kept`` (cached) and the rest
        read from the index."""
        for state in states:
            key = state.embed_key
            if key and key not in kept:
                vector = self.index.vector_by_id(state.id)
                if vector is not None:
                    kept[key] = vector
        return kept

    def _described(
        self,
        where: dict[str, Any],
        read: ItemRead,
        facts: ImageFacts,
        key: str,
        embedding: Embedding | None,
        caption: str | None,
        meta: dict[str, Any],
    ) -> dict[str, Any]:
        """A point's payload: ``where`` (where the image lives, which depends on the source)
        with what the image is and how it was embedded; checked to be storable."""
        sidecar = read.sidecar
        payload: dict[str, Any] = {
            **where,
            "sha256": read.sha256,
            "embed_key": key,
            "model": self._info.model,
            "provider": self._info.provider,
            "width": facts.width,
            "height": facts.height,
            "format": facts.source_format,
            "caption": sidecar.caption,
            "tags": sidecar.tags,
            "ingested_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if embedding is not None:
            payload["input_type"] = embedding.input_type
            payload["caption_embedded"] = embedding.text_applied
        else:
            payload["input_type"] = "document" if self._info.supports_input_type else None
            payload["caption_embedded"] = caption is not None
        if facts.taken_at:
            payload["taken_at"] = facts.taken_at
        if facts.camera:
            payload["camera"] = facts.camera
        if meta:
            payload["meta"] = meta
        try:  # what a store can hold: finite numbers, valid UTF-8, plain JSON types
            json.dumps(payload, allow_nan=False, ensure_ascii=False).encode("utf-8")
        except (ValueError, TypeError, RecursionError) as exc:
            raise UnstorablePayload(f"the metadata cannot be stored: {exc}") from None
        return payload


Kind = Literal["permanent", "transient"]


def _reason_for(exc: BaseException, s: Seen) -> tuple[Kind, str]:
    """(kind, reason code) for an item's failure; see the reasons table in docs/ingestion.md."""
    if isinstance(exc, ImageRejected):
        return "permanent", exc.reason
    if isinstance(exc, SidecarError):
        return "permanent", "bad_sidecar"
    if isinstance(exc, RequestRejected):
        return "permanent", "too_large" if exc.status == 413 else "rejected"
    if isinstance(exc, PointRejected):
        return "permanent", "store_rejected"
    if isinstance(exc, ReadRefused | PermissionError):
        return "permanent", "unreadable"
    if isinstance(exc, UnicodeError) and not is_plain(s.disk):
        return "permanent", "bad_name"
    if isinstance(exc, EmbedderError):
        return "transient", "embedder_unavailable"
    if isinstance(exc, StoreError):
        return "transient", "store_unavailable"
    if isinstance(exc, ItemUnavailable):
        return "transient", "read_error"
    if isinstance(exc, OSError):
        if exc.errno in _PERMANENT_ERRNOS:
            return "permanent", "unreadable"
        return "transient", "read_error"
    return "permanent", "internal_error"


def _describe(exc: BaseException) -> str:
    """One line for a log or the journal: the message, or the type when there is none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
