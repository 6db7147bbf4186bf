"""Reconcile the index with a blob container prefix: the pipeline side of a listing.

A :class:`BlobIngestor` lists page by page (deleting only after a complete listing),
downloads what changed with its etag pinned, reuses vectors by content hash, makes the
gallery's thumbnail from the bytes it already holds, and journals each blob's failure with
a reason, as the folder ingestor does for files.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import posixpath
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgrag.connectors.embedder import Embedder, Embedding
from imgrag.connectors.index import FileState, Index, Point
from imgrag.pipeline.blob_source import location_uri
from imgrag.pipeline.candidates import Rules, Seen
from imgrag.pipeline.images import ImageRejected, probe
from imgrag.pipeline.ingest import (
    MAX_FILE_BYTES,
    Ingestor,
    Outcome,
    PruneRefused,
    Summary,
    _Changing,
    _Read,
)
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.keys import embed_key, point_id
from imgrag.pipeline.sidecars import Sidecar, SidecarError
from pydantic import ValidationError

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient
    from imgrag.connectors.blob import BlobEntry, BlobEvent, BlobSourceConfig, PoisonMessage


log = logging.getLogger("imgrag.blob")

_DOWNLOAD_THREADS = 8
# Reasons a failure is worth retrying soon (the queue message comes back for them).
_TRANSIENT = frozenset({"read_error", "embedder_unavailable", "store_unavailable"})


# -- state kept in the index ---------------------------------------------------------------


def _ns(when: datetime | None) -> int:
    return int(when.timestamp() * 1e9) if when is not None else 0


def state_signature(etag: str, md5: str | None, sidecars: Mapping[str, str]) -> str:
    """What the payload's ``sidecar`` field holds for a blob: its etag, Content-MD5 and the
    etags of its sidecar blobs; reconciliation reads them back from there."""
    return json.dumps(
        {"e": etag, "m": md5 or "", "s": dict(sorted(sidecars.items()))},
        separators=(",", ":"),
    )


def blob_state(state: FileState) -> Any:
    from imgrag.connectors.blob import BlobState

    try:
        data = json.loads(state.sidecar or "{}")
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    sidecars = data.get("s") if isinstance(data.get("s"), dict) else {}
    return BlobState(
        etag=str(data.get("e") or ""),
        size=state.size,
        content_hash=str(data.get("m") or "") or None,
        sidecars=sidecars or {},
    )


@dataclass
class _Scan:
    todo: list[Seen] = field(default_factory=list)
    complete: bool = False
    error: str | None = None
    images: int = 0
    unchanged: int = 0
    gone: list[str] = field(default_factory=list)
    sidecar_changed: list[str] = field(default_factory=list)
    failed_seen: set[str] = field(default_factory=set)


class BlobIngestor(Ingestor):
    """Indexes the image blobs under one container prefix into the shared index.

    Embedding, the vector cache, batching of requests and upserts, and the failure journal
    are the folder ingestor's; listing, reading and the payload are the blob's own.
    """

    def __init__(
        self,
        config: BlobSourceConfig,
        container: ContainerClient,
        *,
        embedder: Embedder,
        index: Index,
        journal: Journal,
        rules: Rules,
        source: str,
        thumbs_dir: Path | None,
        image_format: Any = "png",
        embed_concurrency: int = 1,
        on_progress: Callable[[str, Outcome], None] | None = None,
        observe_embed: Callable[[float], None] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        from imgrag.connectors.blob import without_query

        self.uri = location_uri(config)
        super().__init__(
            Path(self.uri),
            embedder=embedder,
            index=index,
            journal=journal,
            rules=rules,
            source=source,
            image_format=image_format,
            embed_concurrency=embed_concurrency,
            settle_seconds=0.0,
            on_progress=on_progress,
            observe_embed=observe_embed,
            thumbs=thumbs_dir,
        )
        self.config = config
        self.container = container
        self.base_url = without_query(container.url).rstrip("/")
        self._secrets = config.secret_values(environ)
        self._entries: dict[str, BlobEntry] = {}
        self._sidecars_listed: dict[str, str] | None = None
        self._downloads = ThreadPoolExecutor(_DOWNLOAD_THREADS, thread_name_prefix="imgrag-blob")
        self._tmp = Path(tempfile.mkdtemp(prefix="imgrag-blob-"))
        self.listing_error: str | None = None
        """Why the last listing stopped before its end; None when it completed."""
        self.backlog = 0
        """Blobs the last listing found to index that are not done yet."""

    def wants(self, name: str) -> bool:
        return name.startswith(self.config.prefix) and self.rules.wants(name)

    async def close(self) -> None:
        await super().close()
        self._downloads.shutdown(wait=not self.stopping, cancel_futures=True)
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- a pass over the listing -----------------------------------------------------------

    def _seen(self, entry: BlobEntry, sidecars: Mapping[str, str] | None) -> Seen:
        from imgrag.connectors.blob import sidecar_names

        listed = sidecars or {}
        near = {s: listed[s] for s in sidecar_names(entry.name) if s in listed}
        self._entries[entry.name] = entry
        return Seen(
            rel=entry.name,
            size=entry.size,
            mtime_ns=_ns(entry.last_modified),
            sidecar=state_signature(entry.etag, entry.content_md5, near),
        )

    def _list(self, permanent: Mapping[str, tuple[str, str]]) -> _Scan:
        """List the prefix page by page, keeping only what must be indexed (blocking)."""
        from imgrag.connectors.blob import Listing, Reconciler
        from imgrag.connectors.blob.reconcile import is_sidecar_name

        stored = {name: blob_state(self._known[name]) for name in self._known}
        rec = Reconciler(stored, is_image=self.wants)
        listing = Listing(
            self.container,
            self.config.prefix,
            page_size=self.config.page_size,
            secrets=self._secrets,
        )
        scan = _Scan()
        sidecars: dict[str, str] = {}
        entries: list[BlobEntry] = []
        for entry in listing:
            if is_sidecar_name(entry.name):
                sidecars[entry.name] = entry.etag
            decision = rec.feed(entry)
            if decision is None:
                continue
            scan.images += 1
            if entry.name in permanent:
                scan.failed_seen.add(entry.name)
            if decision.kind != "unchanged":
                entries.append(entry)
            if self.stopping:
                break
        self._sidecars_listed = sidecars
        result = rec.finish(listing.complete)
        scan.unchanged = rec.unchanged - len(result.sidecar_changed)
        scan.complete, scan.error = listing.complete, listing.error
        scan.gone, scan.sidecar_changed = result.gone, result.sidecar_changed
        scan.todo = [self._seen(e, sidecars) for e in entries]
        return scan

    async def reconcile(
        self, on_total: Callable[[int], None] | None = None, *, prune: bool = False
    ) -> Summary:
        """Compare the listing with the index and fix every difference.

        A point is removed only when a complete listing did not show its blob: a listing
        that failed or stopped midway removes nothing.
        """
        started = time.perf_counter()
        usage_before = self.embedder.usage
        summary = Summary()
        if not self._loaded:
            await self.load_state()
        permanent = await asyncio.to_thread(self.journal.permanent_failures)
        scan = await asyncio.to_thread(self._list, permanent)
        self.listing_error = None if scan.complete else (scan.error or "the listing stopped")
        summary.unchanged = scan.unchanged
        if not scan.complete and scan.error:
            summary.unreadable = {self.uri: scan.error}
        for name in scan.sidecar_changed:
            entry = await asyncio.to_thread(self._entry_now, name)
            if entry is not None:
                scan.todo.append(self._seen(entry, self._sidecars_listed))
        gone = scan.gone
        if gone and scan.images == 0 and len(gone) == len(self._known) and not prune:
            raise PruneRefused(
                f"refusing to remove all {len(gone)} indexed blobs: {self.uri} lists no image "
                "blob (empty container, or a wrong prefix); if they are really gone, confirm "
                f"with `imgrag ingest {self.uri} --prune`"
            )
        todo = []
        for s in scan.todo:
            failure = permanent.get(s.rel)
            if failure is not None and failure[0] == s.signature:
                summary.fail(failure[1])  # failed for good as it is now
                continue
            todo.append(s)
        self.backlog = len(todo)
        if on_total is not None:
            on_total(len(todo))
        await self._run_many(todo, summary)
        if gone and not self.stopping:  # gone is empty unless the listing completed
            summary.removed += await self._delete(gone)
        if scan.complete:
            stale = [p for p in permanent if p not in scan.failed_seen and not p.startswith("(")]
            if stale:
                await asyncio.to_thread(self.journal.clear, stale)
        self._sidecars_listed = None
        return self._finish(summary, usage_before, started)

    async def update(self, rels: Iterable[str]) -> Summary:
        """Index (or remove) these blobs now: after an event, or to retry a failure."""
        if not self._loaded:
            await self.load_state()
        started = time.perf_counter()
        usage_before = self.embedder.usage
        summary = Summary()
        todo: list[Seen] = []
        gone: list[str] = []
        for name in dict.fromkeys(rels):
            if name.startswith("("):
                continue  # a poison message's record, not a blob
            entry = await asyncio.to_thread(self._entry_now, name)
            if entry is None:
                gone.append(name)
            elif self.wants(name):
                todo.append(self._seen(entry, None))
        await self._run_many(todo, summary)
        if gone:
            summary.removed += await self._delete([g for g in gone if g in self._known])
            await asyncio.to_thread(self.journal.clear, gone)
        return self._finish(summary, usage_before, started)

    def _entry_now(self, name: str) -> BlobEntry | None:
        """The blob as it is now, or None when it is positively not there (404)."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError
        from imgrag.connectors.blob.errors import wrap
        from imgrag.connectors.blob.listing import entry_from_properties

        blob = self.container.get_blob_client(name)
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise wrap(exc, f"reading {name}", self._secrets) from None
        entry = entry_from_properties(props)
        try:
            tags = blob.get_blob_tags()
        except AzureError:
            tags = None  # an account without index tags
        return entry if tags is None else _with_tags(entry, tags)

    async def _one(self, s: Seen, summary: Summary) -> Outcome:
        try:
            return await super()._one(s, summary)
        finally:
            self.backlog = max(0, self.backlog - 1)
            self._entries.pop(s.rel, None)

    # -- one blob ---------------------------------------------------------------------------

    async def _index_file(self, s: Seen) -> Outcome:
        entry = self._entries[s.rel]
        pid = point_id(self.source, s.rel)
        loop = asyncio.get_running_loop()
        read, etag, sidecar_etags, blob_meta = await loop.run_in_executor(
            self._downloads, self._fetch, entry, pid
        )
        info = self._info
        caption = read.sidecar.caption if info.supports_image_text else None
        key = embed_key(read.sha256, caption, info.model, "document", info.dimension)
        vector, embedding = await self._point_vector(s.rel, pid, key, read, caption)
        if embedding is None and self.thumbs is not None:
            # Embedding made the thumbnail from its decode; a reused vector decoded nothing,
            # and a blob has no file the gallery could make one from later.
            await loop.run_in_executor(self._downloads, self._thumbnail_of, pid, read)
        signature = state_signature(etag, entry.content_md5, sidecar_etags)
        payload = self._blob_payload(entry, read, key, embedding, caption, signature, blob_meta)
        state = FileState(
            id=pid,
            path=s.rel,
            size=len(read.raw),
            mtime_ns=s.mtime_ns,
            sha256=read.sha256,
            embed_key=key,
            sidecar=signature,
        )
        await self._store(Point(id=pid, vector=vector, payload=payload), state)
        return "indexed" if embedding is not None else "reused"

    def _fetch(
        self, entry: BlobEntry, pid: str
    ) -> tuple[_Read, str, dict[str, str], dict[str, Any]]:
        """Download the blob and its sidecars, check the image, make its thumbnail (blocking).

        Errors come out as the folder ingestor's kinds, so they are journaled alike.
        """
        from imgrag.connectors.blob import (
            BlobGone,
            BlobKeptChanging,
            BlobSourceError,
            BlobTooLarge,
            SidecarInvalid,
            download_to,
            read_sidecars,
        )

        dest = self._tmp / f"{uuid.uuid4().hex}.blob"
        limit = min(self.config.max_blob_bytes, MAX_FILE_BYTES)
        try:
            got = download_to(
                self.container,
                entry,
                dest,
                max_bytes=limit,
                max_attempts=self.config.max_download_attempts,
                secrets=self._secrets,
            )
            raw = dest.read_bytes()
            facts = probe(raw)
            data = read_sidecars(
                self.container,
                entry.name,
                present=self._sidecars_listed,
                secrets=self._secrets,
            )
        except BlobGone as exc:
            raise FileNotFoundError(str(exc)) from None
        except BlobKeptChanging:
            raise _Changing() from None
        except BlobTooLarge as exc:
            raise ImageRejected("too_large", str(exc)) from None
        except SidecarInvalid as exc:
            raise SidecarError(str(exc)) from None
        except BlobSourceError as exc:
            raise OSError(errno.EIO, str(exc)) from None
        finally:
            dest.unlink(missing_ok=True)
        meta = dict(data.metadata)
        if not meta.get("caption") and got.metadata.get("caption"):
            meta["caption"] = got.metadata["caption"]
        try:
            sidecar = Sidecar.model_validate(meta)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise SidecarError(f"sidecar of {entry.name}: {where}: {err['msg']}") from None
        blob_meta = {
            "etag": got.etag,
            "content_type": got.content_type,
            "metadata": dict(got.metadata),
            "index_tags": dict(entry.tags) if entry.tags is not None else None,
        }
        return _Read(raw, got.sha256, facts, sidecar), got.etag, dict(data.etags), blob_meta

    def _thumbnail_of(self, pid: str, read: _Read) -> None:
        """The gallery's thumbnail from the downloaded bytes (a blob is not read again)."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(read.raw)) as img:
                self._thumbnail(pid, read.sha256, img)
        except Exception as exc:  # the point is still worth indexing without one
            log.warning("no thumbnail for %s: %s", pid, " ".join(str(exc).split()))

    def _blob_payload(
        self,
        entry: BlobEntry,
        read: _Read,
        key: str,
        embedding: Embedding | None,
        caption: str | None,
        signature: str,
        blob_meta: dict[str, Any],
    ) -> dict[str, Any]:
        from imgrag.connectors.blob import blob_url

        folder = posixpath.dirname(entry.name)
        sidecar = read.sidecar
        meta: dict[str, Any] = {
            **blob_meta["metadata"],
            **(blob_meta["index_tags"] or {}),
            **sidecar.extra_metadata,
        }
        where: dict[str, Any] = {
            "path": entry.name,
            "folder": folder,
            "filename": posixpath.basename(entry.name),
            "source": self.source,
            "kind": "blob",
            "root": self.base_url,
            "url": blob_url(self.base_url, entry.name),
            "size": len(read.raw),
            "mtime_ns": _ns(entry.last_modified),
            "sidecar": signature,
            "blob": blob_meta,
        }
        return self._described(where, read, key, embedding, caption, meta)

    # -- queue events -------------------------------------------------------------------------

    async def apply_event(self, event: BlobEvent) -> Summary:
        """Bring one blob (or the image of a sidecar) in line after an event.

        Raises when the work should be tried again (the message then reappears)."""
        from imgrag.connectors.blob.reconcile import is_sidecar_name, sidecar_names

        names = [event.name]
        if is_sidecar_name(event.name):
            names = [n for n in self._known if event.name in sidecar_names(n)]
        if not names:
            return Summary()
        summary = await self.update(names)
        transient = {r for r in summary.failed_by_reason if r in _TRANSIENT}
        if summary.pending or transient:
            raise RuntimeError(
                f"{event.name} is not indexed yet ({', '.join(sorted(transient)) or 'changing'})"
            )
        return summary

    def record_poison(self, poison: PoisonMessage) -> None:
        """A queue message given up on is a failure in the journal, like a bad file."""
        self.journal.record(
            f"(queue message {poison.message_id})",
            poison.message_id,
            "permanent",
            "poison_message",
            f"{poison.reason}; dequeued {poison.dequeue_count} times",
        )


def _with_tags(entry: BlobEntry, tags: Mapping[str, str]) -> BlobEntry:
    from dataclasses import replace

    return replace(entry, tags=dict(tags))
