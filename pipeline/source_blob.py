"""An Azure Blob container prefix as a source: list page by page, download with the etag
pinned, follow an Event Grid queue.

Deletes happen only after a complete listing; each blob's failure is journaled with a
reason, as a file's is. Needs the ``blob`` extra: importing this module raises
``ExtraNotInstalled`` (one line, with the install command) without it;
``blob_source.py`` imports it in one place, only for a blob source.
"""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerClient
from imgrag._errors import (
    BlobConfigError,
    BlobGone,
    BlobKeptChanging,
    BlobSourceError,
    BlobTooLarge,
    ImageRejected,
    ItemGone,
    ItemUnavailable,
    KeptChanging,
    SidecarError,
    SidecarInvalid,
    SourceError,
)
from imgrag.connectors.blob import (
    BlobEntry,
    BlobEvent,
    BlobSourceConfig,
    BlobState,
    Listing,
    PoisonMessage,
    QueueWorker,
    Reconciler,
    WorkerStats,
    blob_url,
    download_to,
    open_queue,
    read_sidecars,
    sidecar_names,
    without_query,
)
from imgrag.connectors.blob.errors import wrap
from imgrag.connectors.blob.listing import entry_from_properties
from imgrag.connectors.blob.reconcile import is_sidecar_name
from imgrag.connectors.index import FileState
from imgrag.pipeline.candidates import Rules, Seen
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.known import KnownFiles
from imgrag.pipeline.sidecars import Sidecar
from imgrag.pipeline.source import (
    MAX_FILE_BYTES,
    Change,
    Handler,
    Indexed,
    ItemRead,
    Scan,
    Standing,
    Watched,
)
from pydantic import ValidationError

log = logging.getLogger("imgrag.blob")

_DOWNLOAD_THREADS = 8


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


def blob_state(state: FileState) -> BlobState:
    """The stored state of a blob as the connector's reconciler compares it."""
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
class _Listed:
    """One listing's rows, kept to what must be indexed."""

    entries: list[BlobEntry] = field(default_factory=list)
    sidecars: dict[str, str] = field(default_factory=dict)
    images: int = 0
    failed_seen: set[str] = field(default_factory=set)


class BlobSource:
    """The image blobs under one container prefix."""

    def __init__(
        self,
        config: BlobSourceConfig,
        container: ContainerClient,
        *,
        name: str,
        rules: Rules,
        uri: str,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.container = container
        self.name = name
        self.rules = rules
        self.uri = uri
        self.base_url = without_query(container.url).rstrip("/")
        self.secrets = config.secret_values(environ)
        self.listing_error: str | None = None
        """Why the last listing stopped before its end; None when it completed."""
        self._entries: dict[str, tuple[BlobEntry, Mapping[str, str] | None]] = {}
        self._absent: set[str] = set()
        self._downloads = ThreadPoolExecutor(_DOWNLOAD_THREADS, thread_name_prefix="imgrag-blob")
        self._tmp = Path(tempfile.mkdtemp(prefix="imgrag-blob-"))

    @property
    def display_root(self) -> str:
        return self.uri

    @property
    def payload_root(self) -> str:
        return self.base_url

    @property
    def local_root(self) -> None:
        return None

    @property
    def task_names(self) -> tuple[str, str]:
        return "queue", "list"

    @property
    def list_seconds(self) -> float:
        return float(self.config.list_interval_seconds)

    def wants(self, name: str) -> bool:
        return name.startswith(self.config.prefix) and self.rules.wants(name)

    def close(self, *, wait: bool) -> None:
        self._downloads.shutdown(wait=wait, cancel_futures=True)
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- listing ---------------------------------------------------------------------------

    def _seen(self, entry: BlobEntry, sidecars: Mapping[str, str] | None) -> Seen:
        """The facts of a listed blob; the entry is kept for its download (etag pinned)."""
        listed = sidecars or {}
        near = {s: listed[s] for s in sidecar_names(entry.name) if s in listed}
        self._entries[entry.name] = (entry, sidecars)  # the listing's, shared: no copy
        return Seen(
            rel=entry.name,
            size=entry.size,
            mtime_ns=_ns(entry.last_modified),
            sidecar=state_signature(entry.etag, entry.content_md5, near),
        )

    def _list(
        self, rec: Reconciler, permanent: Mapping[str, Any], stopping: Callable[[], bool]
    ) -> tuple[_Listed, Listing]:
        config = self.config
        listing = Listing(
            self.container, config.prefix, page_size=config.page_size, secrets=self.secrets
        )
        out = _Listed()
        for entry in listing:
            if is_sidecar_name(entry.name):
                out.sidecars[entry.name] = entry.etag
            decision = rec.feed(entry)
            if decision is None:
                continue
            out.images += 1
            if entry.name in permanent:
                out.failed_seen.add(entry.name)
            if decision.kind != "unchanged":
                out.entries.append(entry)
            if stopping():
                break
        return out, listing

    def scan(
        self,
        known: KnownFiles,
        permanent: Mapping[str, tuple[str, str]],
        stopping: Callable[[], bool],
    ) -> Scan:
        """List the prefix page by page, keeping only what must be indexed. A point is
        removed only when a complete listing did not show its blob."""
        self._entries.clear()  # a new listing: entries of a stopped pass are not read now
        rec = Reconciler({n: blob_state(known[n]) for n in known}, is_image=self.wants)
        listed, listing = self._list(rec, permanent, stopping)
        result = rec.finish(listing.complete)
        self.listing_error = None if listing.complete else (listing.error or "the listing stopped")
        changed = [self._seen(e, listed.sidecars) for e in listed.entries]
        for name in result.sidecar_changed:
            entry = self._entry_now(name)
            if entry is not None:
                changed.append(self._seen(entry, listed.sidecars))
        stale = []
        if listing.complete:
            stale = [p for p in permanent if p not in listed.failed_seen and not p.startswith("(")]
        return Scan(
            changed=changed,
            unchanged=rec.unchanged - len(result.sidecar_changed),
            present=listed.images,
            mine=len(known),
            gone=list(result.gone),  # empty unless the listing completed
            stale_failures=stale,
            unreadable={self.uri: listing.error} if not listing.complete and listing.error else {},
        )

    def look(self, rel: str) -> Seen | None:
        if rel.startswith("("):
            return None  # a poison message's record, not a blob
        entry = self._entry_now(rel)
        if entry is None:
            self._absent.add(rel)
            return None
        return self._seen(entry, None) if self.wants(rel) else None

    def known_gone(self, rels: Iterable[str]) -> list[str]:
        """Blobs the service said are not there (404); nothing else is taken for gone."""
        gone = [r for r in rels if r in self._absent]
        self._absent.difference_update(gone)
        return gone

    def prefix_gone(self, prefix: str) -> bool:
        return False  # a container has no folders to delete

    def expand(self, names: Sequence[str], known: Mapping[str, FileState]) -> list[str]:
        out: list[str] = []
        for name in names:
            if is_sidecar_name(name):
                out += [n for n in known if name in sidecar_names(n)]
            else:
                out.append(name)
        return list(dict.fromkeys(out))

    def _entry_now(self, name: str) -> BlobEntry | None:
        """The blob as it is now, or None when it is positively not there (404)."""
        blob = self.container.get_blob_client(name)
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise wrap(exc, f"reading {name}", self.secrets) from None
        entry = entry_from_properties(props)
        try:
            tags = blob.get_blob_tags()
        except AzureError:
            tags = None  # an account without index tags
        return entry if tags is None else replace(entry, tags=dict(tags))

    def refuse_prune(self, count: int) -> str:
        return (
            f"refusing to remove all {count} indexed blobs: {self.uri} lists no image "
            "blob (empty container, or a wrong prefix); if they are really gone, confirm "
            f"with `imgrag ingest {self.uri} --prune`"
        )

    def listing_problem(self, unreadable: Mapping[str, str], next_in: float) -> tuple[str, str]:
        if not self.listing_error:
            return "listing", ""
        return "listing", (
            f"listing {self.uri} failed ({self.listing_error}); nothing is removed, it is "
            f"listed again in {next_in:g}s"
        )

    def standing(self, known: Mapping[str, FileState], journal: Journal, backlog: int) -> Standing:
        # ``backlog`` (the daemon's kept count) holds the items failed for a passing reason.
        return Standing(self.listing_error is None, backlog)

    # -- one blob ---------------------------------------------------------------------------

    async def read(self, item: Seen) -> ItemRead:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._downloads, self._fetch, item)

    def _fetch(self, item: Seen) -> ItemRead:
        """Download the blob and its sidecars (blocking); the connector's errors come out as
        the source's outcomes."""
        entry, listed = self._entries.pop(item.rel)
        dest = self._tmp / f"{uuid.uuid4().hex}.blob"
        limit = min(self.config.max_blob_bytes, MAX_FILE_BYTES)
        try:
            got = download_to(
                self.container,
                entry,
                dest,
                max_bytes=limit,
                max_attempts=self.config.max_download_attempts,
                secrets=self.secrets,
            )
            raw = dest.read_bytes()
            data = read_sidecars(self.container, entry.name, present=listed, secrets=self.secrets)
        except BlobGone as exc:
            raise ItemGone(str(exc)) from None
        except BlobKeptChanging:
            raise KeptChanging() from None
        except BlobTooLarge as exc:
            raise ImageRejected("too_large", str(exc)) from None
        except SidecarInvalid as exc:
            raise SidecarError(str(exc)) from None
        except BlobSourceError as exc:
            raise ItemUnavailable(str(exc)) from None
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
        signature = state_signature(got.etag, entry.content_md5, dict(data.etags))
        facts = Seen(item.rel, len(raw), item.mtime_ns, signature)
        return ItemRead(facts, raw, got.sha256, sidecar, key=item.rel, extra=blob_meta)

    def describe(self, read: ItemRead) -> tuple[dict[str, Any], dict[str, Any]]:
        name = read.item.rel
        blob_meta = read.extra
        meta: dict[str, Any] = {
            **blob_meta["metadata"],
            **(blob_meta["index_tags"] or {}),
            **read.sidecar.extra_metadata,
        }
        where: dict[str, Any] = {
            "path": name,
            "folder": posixpath.dirname(name),
            "filename": posixpath.basename(name),
            "source": self.name,
            "kind": "blob",
            "root": self.base_url,
            "url": blob_url(self.base_url, name),
            "size": read.item.size,
            "mtime_ns": read.item.mtime_ns,
            "sidecar": read.item.sidecar,
            "blob": blob_meta,
        }
        return where, meta

    # -- following -------------------------------------------------------------------------

    def follower(
        self, indexed: Indexed, *, polling: bool = False, settle_seconds: float | None = None
    ) -> BlobFollower:
        return BlobFollower(self, indexed)


class BlobFollower:
    """The queue consumer: Event Grid events for this container, handled as they come.
    Without a queue, the periodic listing is all the following there is."""

    def __init__(self, source: BlobSource, indexed: Indexed) -> None:
        self.source = source
        self.indexed = indexed
        config = source.config
        self.mode = f"listing every {config.list_interval_seconds:g}s" + (
            f", queue {config.queue}" if config.queue else ""
        )
        self.stats: WorkerStats | None = None

    @property
    def waiting(self) -> int:
        return 0

    def waiting_besides(self, held: AbstractSet[str]) -> int:
        return 0

    def check(self) -> Watched:
        return "same"  # a container has no root to stat: a listing says whether it answers

    def stop(self) -> None:
        pass

    def record_poison(self, poison: PoisonMessage) -> None:
        """A queue message given up on is a failure in the journal, like a bad file."""
        self.indexed.journal.record(
            f"(queue message {poison.message_id})",
            poison.message_id,
            "permanent",
            "poison_message",
            f"{poison.reason}; dequeued {poison.dequeue_count} times",
        )

    async def follow(self, handle: Handler, tick: float) -> None:
        config = self.source.config
        if not config.queue:
            return
        try:
            queue = open_queue(config)
        except BlobConfigError as exc:
            raise SourceError(str(exc)) from None
        try:
            await asyncio.to_thread(queue.get_queue_properties)
        except Exception as exc:
            raise wrap(exc, f"queue {config.queue}", self.source.secrets) from None
        loop = asyncio.get_running_loop()
        wait = float(config.visibility_timeout_seconds)

        def on_event(event: BlobEvent) -> None:
            change = Change(items=[event.name], redeliver=True)
            asyncio.run_coroutine_threadsafe(handle(change), loop).result(timeout=wait)

        worker = QueueWorker(
            queue,
            container=config.container,
            prefix=config.prefix,
            handle=on_event,
            poison=self.record_poison,
            max_dequeues=config.max_dequeues,
            visibility_timeout=config.visibility_timeout_seconds,
            # Messages of a batch wait their turn invisible to other workers, and only the
            # one being worked on is renewed: small batches share the work and keep the
            # waiting ones well inside their timeout.
            batch_size=4,
            secrets=self.source.secrets,
        )
        self.stats = worker.stats
        stop = threading.Event()
        try:
            await asyncio.to_thread(worker.run, stop, 1.0)
        finally:
            stop.set()
        raise RuntimeError(f"the queue consumer of {config.queue} stopped")
