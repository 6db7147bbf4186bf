"""Watch a folder with watchdog and hand settled changes to the ingestor.

Events only make imgrag fast; they are never trusted to be complete (the periodic rescan
is the safety net). A path is handed over once no event has touched it for the settle
period; the ingestor then checks size and mtime once more before reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

from imgrag.pipeline.candidates import Rules, relative
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    FileClosedNoWriteEvent,
    FileDeletedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger("imgrag.watch")


@dataclass(slots=True)
class Changes:
    """What settled since the last hand-over."""

    files: list[str] = field(default_factory=list)
    new_folders: list[str] = field(default_factory=list)
    gone_folders: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.files or self.new_folders or self.gone_folders)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._watcher._loop.call_soon_threadsafe(self._watcher._note, event)


class FolderWatcher:
    """Collects filesystem events below ``root`` into settled batches of work."""

    def __init__(
        self,
        root: Path,
        rules: Rules,
        *,
        settle_seconds: float,
        polling: bool = False,
        poll_interval: float = 1.0,
    ) -> None:
        self.root = root.absolute()
        self.rules = rules
        self.settle_seconds = settle_seconds
        self.polling = polling
        self.poll_interval = poll_interval
        self.mode = "polling" if polling else "native"
        self._loop = asyncio.get_running_loop()
        self._files: dict[str, float] = {}
        self._gone: set[str] = set()
        """Files of ``_files`` last seen deleted or moved away: handed over (their points
        go), but nothing to index, so not pending."""
        self._new_dirs: dict[str, float] = {}
        self._gone_dirs: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._observer: BaseObserver | None = None

    @property
    def waiting(self) -> int:
        """Paths seen changing and not yet handed over."""
        return len(self._files) + len(self._new_dirs)

    def waiting_besides(self, held: AbstractSet[str]) -> int:
        """The files waiting to be indexed, but for those in ``held`` (a new folder counts
        once); a file deleted or moved away waits too, but not to be indexed."""
        files, gone = list(self._files), set(self._gone)  # one C call each: the loop thread
        # may add to them meanwhile
        return sum(1 for rel in files if rel not in held and rel not in gone) + len(self._new_dirs)

    def start(self) -> str:
        """Start observing; falls back to polling when the inotify watch limit is hit."""
        try:
            self._observer = self._start(polling=self.polling)
        except OSError as exc:
            if self.polling or exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            log.warning(
                "the inotify watch limit is reached (raise fs.inotify.max_user_watches, "
                "e.g. `sysctl fs.inotify.max_user_watches=524288`); falling back to polling"
            )
            self._observer = self._start(polling=True)
            self.mode = "polling"
        return self.mode

    def _start(self, *, polling: bool) -> BaseObserver:
        observer: BaseObserver = (
            PollingObserver(timeout=self.poll_interval) if polling else Observer()
        )
        observer.schedule(_Handler(self), str(self.root), recursive=True)
        observer.start()
        return observer

    @property
    def alive(self) -> bool:
        """Whether events still arrive: the observer and its emitter threads run (an
        emitter ends when its folder is deleted or moved away)."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        return all(emitter.is_alive() for emitter in observer.emitters)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def _note(self, event: FileSystemEvent) -> None:
        now = time.monotonic()
        if isinstance(event, DirModifiedEvent | FileOpenedEvent | FileClosedNoWriteEvent):
            return  # reads (the indexer's own included) change nothing
        paths = [event.src_path]
        if isinstance(event, FileSystemMovedEvent):
            paths.append(event.dest_path)
        for i, raw in enumerate(paths):
            rel = relative(self.root, Path(raw if isinstance(raw, str) else raw.decode()))
            if rel is None or any(part.startswith(".") for part in rel.split("/")):
                continue
            if event.is_directory:
                moved_away = isinstance(event, FileSystemMovedEvent) and i == 0
                if isinstance(event, DirDeletedEvent) or moved_away:
                    self._gone_dirs[rel] = now
                elif isinstance(event, DirCreatedEvent | FileSystemMovedEvent):
                    self._new_dirs[rel] = now
            elif self.rules.wants(rel):
                self._files[rel] = now
                moved_away = isinstance(event, FileSystemMovedEvent) and i == 0
                if isinstance(event, FileDeletedEvent) or moved_away:
                    self._gone.add(rel)
                else:
                    self._gone.discard(rel)
            elif rel.lower().endswith((".txt", ".json")):
                self._sidecar_changed(rel, now)
        self._wake.set()

    def _sidecar_changed(self, rel: str, now: float) -> None:
        """A caption file changed: its image (any included extension) needs an update."""
        stem = rel.rsplit(".", 1)[0]
        folder = (self.root / rel).parent
        try:
            names = [p.name for p in folder.iterdir() if p.stem == Path(stem).name]
        except OSError:
            return
        for name in names:
            image_rel = relative(self.root, folder / name)
            if image_rel and self.rules.wants(image_rel):
                self._files[image_rel] = now

    async def next_changes(self, timeout: float | None = None) -> Changes:
        """Wait until some change has settled (or ``timeout``), and take it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            changes = self._take_settled(now)
            if changes:
                return changes
            pending = [*self._files.values(), *self._new_dirs.values(), *self._gone_dirs.values()]
            # Nothing seen: sleep until an event (or the deadline); with a settle time of 0
            # a timeout of settle_seconds would spin.
            wait = None if not pending else max(0.01, min(pending) + self.settle_seconds - now)
            if deadline is not None:
                if now >= deadline:
                    return Changes()
                wait = deadline - now if wait is None else min(wait, deadline - now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    def _take_settled(self, now: float) -> Changes:
        changes = Changes()
        for store, out in (
            (self._files, changes.files),
            (self._new_dirs, changes.new_folders),
            (self._gone_dirs, changes.gone_folders),
        ):
            for rel, at in list(store.items()):
                if now - at >= self.settle_seconds:
                    out.append(rel)
                    del store[rel]
                    self._gone.discard(rel)
        return changes
