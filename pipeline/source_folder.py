"""A folder as a source: walk it, read a file inside it, watch it with watchdog.

Images and sidecars are read only when they are regular files whose real path is inside
the root, their sizes checked first; a file is read once its size, mtime and sidecars held
still for ``settle_seconds``. A point is removed only when its file is positively gone: its
folder was listed and the file was not there.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from imgrag._errors import ImageRejected, ItemGone, KeptChanging, ReadRefused
from imgrag.connectors.index import FileState
from imgrag.pipeline.candidates import Listing, Rules, Seen, seen, walk, walk_rows
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.known import KnownFiles
from imgrag.pipeline.names import stored
from imgrag.pipeline.reading import read_inside
from imgrag.pipeline.sidecars import read_sidecar
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
from imgrag.pipeline.watcher import FolderWatcher

log = logging.getLogger("imgrag.ingest")

_READ_ATTEMPTS = 3


class FolderSource:
    """The images below ``root`` (or its subfolder ``scope`` for a reconcile)."""

    def __init__(
        self,
        root: Path,
        *,
        name: str,
        rules: Rules,
        scope: str = "",
        settle_seconds: float = 1.0,
    ) -> None:
        self.root = root.absolute()
        self.name = name
        self.rules = rules
        self.scope = scope.strip("/")
        """The subfolder (relative to ``root``) a reconcile covers; "" for the whole root."""
        self.settle_seconds = settle_seconds
        self._pool = ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 2), thread_name_prefix="imgrag-read"
        )

    # -- naming ----------------------------------------------------------------------------

    @property
    def display_root(self) -> str:
        return str(self.root)

    @property
    def payload_root(self) -> str:
        return stored(str(self.root))

    @property
    def local_root(self) -> Path:
        return self.root

    @property
    def task_names(self) -> tuple[str, str]:
        return "follow", "rescan"

    @property
    def list_seconds(self) -> float | None:
        return None

    def in_scope(self, rel: str) -> bool:
        return not self.scope or rel == self.scope or rel.startswith(self.scope + "/")

    def close(self, *, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # -- listing ---------------------------------------------------------------------------

    def scan(
        self,
        known: KnownFiles,
        permanent: Mapping[str, tuple[str, str]],
        stopping: Callable[[], bool],
    ) -> Scan:
        """Walk the folder (or the scope). Unchanged files are told apart in the walk,
        without an object each; only the others become Seen records."""
        listing = Listing()
        present: set[str] = set()
        rows = [
            row
            for batch in walk_rows(
                self.root,
                self.rules,
                below=self.scope,
                listing=listing,
                present=present,
                unchanged=known.unchanged,
            )
            for row in batch
        ]
        if self.scope:
            mine = sum(1 for p in known if self.in_scope(p))
            missing = [p for p in known if self.in_scope(p) and p not in present]
        else:
            mine = len(known)
            missing = known.missing_from(present)
        stale = [
            p for p in permanent if self.in_scope(p) and p not in present and listing.covers(p)
        ]
        return Scan(
            changed=[Seen(*row) for row in rows],
            unchanged=len(present) - len(rows),
            present=len(present),
            mine=mine,
            gone=[p for p in missing if listing.covers(p)],
            stale_failures=stale,
            unreadable=dict(listing.unreadable),
            root_missing=listing.root_missing
            or (bool(self.scope) and self.scope in listing.unreadable),
        )

    def look(self, rel: str) -> Seen | None:
        return seen(self.root, rel, self.rules)

    def known_gone(self, rels: Iterable[str]) -> list[str]:
        """Of files not found, those positively gone: the nearest folder on their way that
        exists could be listed (a missing or unreadable root proves nothing)."""
        if not _listable(self.root):
            return []
        out = []
        listable: dict[Path, bool] = {}
        for rel in rels:
            folder = (self.root / rel).parent
            while folder != self.root and not folder.is_dir():
                folder = folder.parent
            if folder not in listable:
                listable[folder] = _listable(folder)
            if listable[folder]:
                out.append(rel)
        return out

    def prefix_gone(self, prefix: str) -> bool:
        """A folder deleted or moved away: its parent lists without it."""
        return bool(self.known_gone([prefix])) and not (self.root / prefix).exists()

    def expand(self, names: Sequence[str], known: Mapping[str, FileState]) -> list[str]:
        return list(names)  # the watcher already maps a sidecar to its image

    def refuse_prune(self, count: int) -> str:
        return (
            f"refusing to remove all {count} indexed files: {self.root} has no file "
            "matching [ingest] include (empty, unmounted, or include matches nothing); "
            f"if they are really gone, confirm with `imgrag ingest {self.root} --prune`"
        )

    def listing_problem(self, unreadable: Mapping[str, str], next_in: float) -> tuple[str, str]:
        if not unreadable:
            return "unreadable", ""
        shown = ", ".join(f"{f} ({why})" for f, why in list(unreadable.items())[:5])
        more = len(unreadable) - 5
        return "unreadable", (
            f"cannot read {len(unreadable)} folders: {shown}"
            + (f" and {more} more" if more > 0 else "")
            + "; nothing under them is removed"
        )

    def standing(self, known: Mapping[str, FileState], journal: Journal, backlog: int) -> Standing:
        """Whether the root is a folder (one stat), and ``backlog``: what the daemon saw
        and has not finished (``status.count_pending`` walks, for a folder nobody watches)."""
        if not self.root.is_dir():
            return Standing(False, 0)
        return Standing(True, backlog)

    # -- one file ----------------------------------------------------------------------------

    async def read(self, item: Seen) -> ItemRead:
        """The file once stable; read again (up to three times) when it changed meanwhile."""
        loop = asyncio.get_running_loop()
        for attempt in range(_READ_ATTEMPTS):
            item = await self._settled(item)
            try:
                return await loop.run_in_executor(self._pool, self._read, item)
            except KeptChanging:
                if attempt == _READ_ATTEMPTS - 1:
                    raise
                again = await asyncio.to_thread(self.look, item.rel)
                item = again or item
        raise AssertionError("unreachable")  # pragma: no cover

    async def _settled(self, s: Seen) -> Seen:
        """The file as it is once its size, mtime and sidecars have held still for
        ``settle_seconds`` (at once when it was last modified longer ago than that)."""
        age = time.time() - s.mtime_ns / 1e9
        if age >= self.settle_seconds:
            return s
        # Recently written, or dated in the future: watch it rather than trust the clock.
        deadline = time.monotonic() + max(30.0, 30 * self.settle_seconds)
        last = s
        while True:
            await asyncio.sleep(self.settle_seconds)
            now = await asyncio.to_thread(self.look, s.rel)
            if now is None:
                raise ItemGone(s.rel)
            if now.signature == last.signature:
                return now
            if time.monotonic() > deadline:
                raise KeptChanging()
            last = now

    def _read(self, s: Seen) -> ItemRead:
        """The file's bytes and sidecar: read only when it is a regular file whose real path
        is inside the root, its size checked before reading, never blocking."""
        try:
            return self._read_file(s)
        except FileNotFoundError:
            raise ItemGone(s.rel) from None

    def _read_file(self, s: Seen) -> ItemRead:
        path = self.root / s.disk
        limit = MAX_FILE_BYTES
        try:
            raw, st = read_inside(path, Path(os.path.realpath(self.root)), limit)
        except ReadRefused as exc:
            if not exc.too_large:
                raise
            size = path.stat().st_size
            raise ImageRejected(
                "too_large", f"{size / 1e6:.0f} MB is over the {limit // 10**6} MB file limit"
            ) from None
        if (st.st_size, st.st_mtime_ns) != (s.size, s.mtime_ns):
            raise KeptChanging()  # changed since it was seen: settle again
        after = path.stat()
        if (after.st_size, after.st_mtime_ns) != (s.size, s.mtime_ns) or len(raw) != s.size:
            raise KeptChanging()
        sidecar, _ = read_sidecar(path, self.root)
        return ItemRead(s, raw, hashlib.sha256(raw).hexdigest(), sidecar, key=s.disk)

    def describe(self, read: ItemRead) -> tuple[dict[str, Any], dict[str, Any]]:
        s = read.item
        rel = PurePosixPath(s.rel)  # the stored form: valid text whatever the bytes on disk
        folder = str(rel.parent) if str(rel.parent) != "." else ""
        where: dict[str, Any] = {
            "path": s.rel,
            "folder": folder,
            "filename": rel.name,
            "source": self.name,
            "root": self.payload_root,
            "size": s.size,
            "mtime_ns": s.mtime_ns,
            "sidecar": s.sidecar,
        }
        return where, read.sidecar.extra_metadata

    # -- following -----------------------------------------------------------------------------

    def follower(
        self, indexed: Indexed, *, polling: bool = False, settle_seconds: float | None = None
    ) -> FolderFollower:
        settle = self.settle_seconds if settle_seconds is None else settle_seconds
        return FolderFollower(self, polling=polling, settle_seconds=settle)


class FolderFollower:
    """A watchdog observer on the root, restarted when the root comes back or is replaced."""

    def __init__(self, source: FolderSource, *, polling: bool, settle_seconds: float) -> None:
        self.source = source
        self.polling = polling
        self.settle_seconds = settle_seconds
        self._watcher: FolderWatcher | None = None
        self._root_id: tuple[int, int] | None = None
        self.mode = ""

    @property
    def waiting(self) -> int:
        return self._watcher.waiting if self._watcher is not None else 0

    def waiting_besides(self, held: AbstractSet[str]) -> int:
        return self._watcher.waiting_besides(held) if self._watcher is not None else 0

    def check(self) -> Watched:
        """Whether the root lists; (re)starts the watcher when it came back or was replaced."""
        root = self.source.root
        try:
            st = os.stat(root)
            with os.scandir(root):
                pass
        except OSError:
            self.stop()
            return "gone"
        ident = (st.st_dev, st.st_ino)
        if self._watcher is not None and ident == self._root_id and self._watcher.alive:
            return "same"
        # Back, replaced by a new folder, or its observer died: catch up once watched.
        again = self._root_id is not None
        self._stop_watcher()
        self._watcher = FolderWatcher(
            root,
            self.source.rules,
            settle_seconds=self.settle_seconds,
            polling=self.polling,
        )
        self.mode = self._watcher.start()
        self._root_id = ident
        return "restarted" if again else "started"

    def stop(self) -> None:
        self._stop_watcher()
        self._root_id = None

    def _stop_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    async def follow(self, handle: Handler, tick: float) -> None:
        while True:
            watcher = self._watcher
            if watcher is None:
                await asyncio.sleep(tick)  # the daemon's root check restarts it
                continue
            changes = await watcher.next_changes(timeout=tick)
            if changes:
                files = list(changes.files)
                for folder in changes.new_folders:
                    files += await asyncio.to_thread(self._files_below, folder)
                await handle(Change(items=files, gone_prefixes=list(changes.gone_folders)))
            if not watcher.alive and watcher is self._watcher:
                self._stop_watcher()
                if await asyncio.to_thread(_listable, self.source.root):
                    raise RuntimeError(f"the folder watcher on {self.source.root} stopped")

    def _files_below(self, folder: str) -> list[str]:
        return [s.rel for s in walk(self.source.root, self.source.rules, below=folder)]


def _listable(folder: Path) -> bool:
    try:
        with os.scandir(folder):
            return True
    except OSError:
        return False
