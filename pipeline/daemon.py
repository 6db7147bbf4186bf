"""The watch daemon: reconcile, then follow the folder until asked to stop.

Every background task (follow, rescan, retry, recover) runs under the one supervisor
(``supervisor.py``). Conditions that block ingestion without being bugs (the root is
missing, the service refuses the key, the store cannot write) pause ingestion: changes are
kept, the ``recover`` task checks again with backoff, and a reconcile catches up once they
clear. ``watch.py`` runs one daemon per source in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from imgrag._errors import DaemonFailed
from imgrag.connectors.errors import CredentialError, DiskFull, EmbedderError, StoreError
from imgrag.pipeline.candidates import Rules, walk
from imgrag.pipeline.ingest import FatalError, Ingestor, PruneRefused, Summary, cause_of
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.status import SourceStatus, source_status
from imgrag.pipeline.supervisor import Supervisor
from imgrag.pipeline.watcher import Changes, FolderWatcher

log = logging.getLogger("imgrag.daemon")

_RETRY_MIN_SECONDS = 5.0
_RETRY_MAX_SECONDS = 300.0
# Recovery from a blocked state: the root is checked every ROOT seconds (a stat); a refused
# key or a failing store is tried again with backoff from MIN to MAX.
_ROOT_CHECK_SECONDS = 1.0
_RECOVER_MIN_SECONDS = 2.0
_RECOVER_MAX_SECONDS = 120.0
# On SIGTERM, in-flight files get this long to finish before they are abandoned.
_STOP_GRACE_SECONDS = 5.0

Block = Literal["root", "credential", "store"]


class Daemon:
    """Owns the ingestor for one folder; every pass runs one at a time."""

    def __init__(
        self,
        root: Path,
        ingestor: Ingestor,
        journal: Journal,
        *,
        settle_seconds: float,
        rescan_minutes: float,
        polling: bool = False,
        on_summary: Callable[[str, Summary], None] | None = None,
        renew_credential: Callable[[], Awaitable[None]] | None = None,
        progress: Callable[[str], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        self.root = root
        self.ingestor = ingestor
        self.journal = journal
        self.settle_seconds = settle_seconds
        self.rescan_seconds = rescan_minutes * 60
        self.polling = polling
        self.on_summary = on_summary
        self.renew_credential = renew_credential
        self.progress = progress
        """Shows a pass's progress (by its name) while it runs."""
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.watch_mode = ""
        self.started_at = time.time()
        self.last_rescan = 0.0
        self.waiting_for: str | None = None
        self.supervisor = Supervisor(self.stopping)
        self.problems = self.supervisor.problems
        """What makes the daemon degraded right now (key → one line)."""
        self.restarts = self.supervisor.restarts
        self.blocked: dict[Block, str] = {}
        self._deferred: set[str] = set()
        self._catch_up = False
        self._abandoned = 0
        self._lock = asyncio.Lock()
        self._watcher: FolderWatcher | None = None
        self._root_id: tuple[int, int] | None = None
        self._unblocked = asyncio.Event()
        self._unblocked.set()
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- what the outside sees -------------------------------------------------------------

    @property
    def pending(self) -> int:
        waiting = self._watcher.waiting if self._watcher is not None else 0
        return self.ingestor.pending + waiting + len(self._deferred)

    @property
    def left(self) -> int:
        """Files not indexed at stop: skipped, abandoned in flight, or not handed over yet."""
        return self.ingestor.left + self._abandoned + self.pending

    @property
    def health(self) -> str:
        if self.stopping.is_set():
            return "stopping"
        return "degraded" if self.problems else "ok"

    def health_report(self) -> dict[str, Any]:
        return {
            "status": self.health,
            "problems": list(self.problems.values()),
            "restarts": dict(self.restarts),
        }

    @property
    def display_root(self) -> str:
        """How status names where this source's images are."""
        return str(self.root)

    def source_status(self, rules: Rules) -> SourceStatus:
        """This source's counts (walks the folder: blocking)."""
        ingestor = self.ingestor
        return source_status(ingestor.source, self.root, ingestor.known, ingestor.journal, rules)

    def stop(self) -> None:
        """Take no new work; in-flight files finish (or are abandoned after a grace)."""
        self.ingestor.stop()
        self.stopping.set()

    # -- the life cycle --------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile, watch, rescan and retry until ``stop()``.

        Raises DaemonFailed when a background task kept failing.
        """
        # Watch first so nothing that changes during the initial reconcile is missed.
        self._check_root()
        self._tasks = [asyncio.create_task(self._main())]
        try:
            await self.stopping.wait()
            self.ingestor.stop()
            await self._drain()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            self._stop_watcher()
        if self.failed:
            raise DaemonFailed(self.failed)

    async def _main(self) -> None:
        await self.supervise("reconcile", self._initial_reconcile)
        await asyncio.gather(
            self.supervise("follow", self._follow),
            self.supervise("rescan", self._rescan_loop),
            self.supervise("retry", self._retry_loop),
            self.supervise("recover", self._recover_loop),
        )

    async def _initial_reconcile(self) -> None:
        await self._pass("reconcile", self.ingestor.reconcile)
        self.last_rescan = time.monotonic()
        self.ready.set()

    async def _drain(self) -> None:
        """Let the pass in progress finish what it started, up to the grace period."""
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout=_STOP_GRACE_SECONDS)
        except TimeoutError:
            self._abandoned = self.ingestor.pending
            log.warning(
                "stopping: abandoning %d files still in flight after %.0fs",
                self.ingestor.pending,
                _STOP_GRACE_SECONDS,
            )
        else:
            self._lock.release()

    async def supervise(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` under this daemon's supervisor (restarted with backoff on failure)."""
        await self.supervisor.run(name, work)

    @property
    def failed(self) -> str | None:
        """Why a background task made the daemon stop, when one did."""
        return self.supervisor.failed

    # -- passes ------------------------------------------------------------------------------

    async def _pass(self, name: str, work: Callable[[], Awaitable[Summary]]) -> Summary | None:
        """Run one pass under the lock; blocking conditions pause ingestion, not the task."""
        async with self._lock:
            if self.stopping.is_set():
                return None
            try:
                with self.progress(name) if self.progress else contextlib.nullcontext():
                    summary = await work()
            except PruneRefused as exc:
                self.problems["prune"] = f"{exc} (stop the daemon first)"
                log.warning("%s", exc)
                return None
            except (FatalError, CredentialError) as exc:
                cause = cause_of(exc) if isinstance(exc, FatalError) else exc
                if isinstance(cause, DiskFull):  # run-level for `ingest`; a pause for the daemon
                    self._block("store", f"the store cannot write ({cause})")
                    return None
                if not isinstance(cause, CredentialError):
                    raise
                self._block("credential", f"the service refuses the key ({cause})")
                return None
            except (StoreError, OSError, sqlite3.OperationalError) as exc:
                if not _is_store_failure(exc):
                    raise
                self._block("store", f"the store cannot write ({exc})")
                return None
        if name in ("reconcile", "rescan"):  # only a full walk says how the folder looks
            self.problems.pop("prune", None)
            self._note_listing(summary)
        if summary.failed_by_reason.get("store_unavailable"):
            self._block("store", "the store cannot write; files are kept pending")
        if self.on_summary is not None:
            self.on_summary(name, summary)
        return summary

    def _note_listing(self, summary: Summary) -> None:
        if summary.root_missing:
            self._root_gone()
            return
        if summary.unreadable:
            shown = ", ".join(f"{f} ({why})" for f, why in list(summary.unreadable.items())[:5])
            more = len(summary.unreadable) - 5
            self.problems["unreadable"] = (
                f"cannot read {len(summary.unreadable)} folders: {shown}"
                + (f" and {more} more" if more > 0 else "")
                + "; nothing under them is removed"
            )
        else:
            self.problems.pop("unreadable", None)

    def _block(self, kind: Block, why: str) -> None:
        line = {
            "root": f"root missing: waiting for {self.root} to come back; nothing is removed",
            "credential": f"{why}; files are kept pending and the key is re-read with backoff "
            "(fix AZURE_INFERENCE_CREDENTIAL or [embedder] api_key)",
            "store": f"{why}; ingestion is paused and resumes when writes succeed "
            "(free space under the state directory)",
        }[kind]
        if self.blocked.get(kind) != line:
            log.warning("%s", line)
        self.blocked[kind] = line
        self.problems[kind] = line
        self._unblocked.clear()
        self._kick.set()

    def _unblock(self, kind: Block) -> None:
        if self.blocked.pop(kind, None) is not None:
            log.warning("%s: resolved, ingestion resumes", kind)
        self.problems.pop(kind, None)
        if not self.blocked:
            self._unblocked.set()

    # -- the root and its watcher ----------------------------------------------------------

    def _check_root(self) -> bool:
        """Whether the root lists; (re)starts the watcher when it came back or was replaced."""
        try:
            st = os.stat(self.root)
            with os.scandir(self.root):
                pass
        except OSError:
            self._root_gone()
            return False
        ident = (st.st_dev, st.st_ino)
        if self._watcher is None or ident != self._root_id or not self._watcher.alive:
            # Back, replaced by a new folder, or its observer died: catch up once watched.
            self._catch_up = self._catch_up or self._root_id is not None or "root" in self.blocked
            self._stop_watcher()
            self._watcher = FolderWatcher(
                self.root,
                self.ingestor.rules,
                settle_seconds=self.settle_seconds,
                polling=self.polling,
            )
            self.watch_mode = self._watcher.start()
            self._root_id = ident
        return True

    def _root_gone(self) -> None:
        self._stop_watcher()
        self._root_id = None
        self._block("root", "")

    def _stop_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    # -- background tasks ------------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            watcher = self._watcher
            if watcher is None:
                await asyncio.sleep(_ROOT_CHECK_SECONDS)  # the recover task restarts it
                continue
            changes = await watcher.next_changes(timeout=_ROOT_CHECK_SECONDS)
            if changes:
                await self._apply(changes)
            if not watcher.alive and watcher is self._watcher:
                self._stop_watcher()
                if await asyncio.to_thread(self._root_lists):
                    raise RuntimeError(f"the folder watcher on {self.root} stopped")

    def _root_lists(self) -> bool:
        try:
            with os.scandir(self.root):
                return True
        except OSError:
            return False

    async def _apply(self, changes: Changes) -> None:
        files = list(changes.files)
        for folder in changes.new_folders:
            files += await asyncio.to_thread(self._files_below, folder)
        if self.blocked:
            self._deferred.update(files)
            self._catch_up = True
            return
        if files:
            await self._pass(
                "update", functools.partial(self.ingestor.update, dict.fromkeys(files))
            )
            if self.blocked:
                self._deferred.update(files)
        for folder in changes.gone_folders:
            if not (self.root / folder).is_dir():
                async with self._lock:
                    await self.ingestor.remove_folder(folder)

    def _files_below(self, folder: str) -> list[str]:
        return [s.rel for s in walk(self.root, self.ingestor.rules, below=folder)]

    async def _rescan_loop(self) -> None:
        if self.rescan_seconds <= 0:
            return
        while True:
            await asyncio.sleep(self.rescan_seconds)
            await self._unblocked.wait()
            await self._pass("rescan", self.ingestor.reconcile)
            self.last_rescan = time.monotonic()

    async def _retry_loop(self) -> None:
        """Files that failed for a passing reason (service down, quota) are tried again."""
        delay = _RETRY_MIN_SECONDS
        while True:
            await asyncio.sleep(delay)
            await self._unblocked.wait()
            paths = await asyncio.to_thread(self.journal.transient_paths)
            if not paths:
                self.waiting_for = None
                delay = _RETRY_MIN_SECONDS
                continue
            summary = await self._pass("retry", functools.partial(self.ingestor.update, paths))
            if summary is not None and summary.pending:
                reasons = ", ".join(sorted(summary.failed_by_reason))
                self.waiting_for = f"{summary.pending} files waiting ({reasons})"
                log.warning("%s; retrying in %.0fs", self.waiting_for, delay)
                delay = min(delay * 2, _RETRY_MAX_SECONDS)
            else:
                self.waiting_for = None
                delay = _RETRY_MIN_SECONDS

    async def _recover_loop(self) -> None:
        """Watch the root; while ingestion is blocked, try again with backoff."""
        delay = _RECOVER_MIN_SECONDS
        next_try = 0.0
        while True:
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=_ROOT_CHECK_SECONDS)
            root_ok = self._check_root()
            if not root_ok:
                continue
            if not self.blocked and not self._catch_up:
                delay = _RECOVER_MIN_SECONDS
                continue
            if time.monotonic() < next_try:
                continue
            if await self._try_recover():
                delay = _RECOVER_MIN_SECONDS
                next_try = 0.0
            else:
                next_try = time.monotonic() + delay
                log.warning(
                    "still blocked (%s); trying again in %.0fs", ", ".join(self.blocked), delay
                )
                delay = min(delay * 2, _RECOVER_MAX_SECONDS)

    async def _try_recover(self) -> bool:
        """Re-read the key if it was refused, then catch up with a full reconcile."""
        if "credential" in self.blocked and self.renew_credential is not None:
            try:
                await self.renew_credential()
            except CredentialError as exc:
                self._block("credential", f"the service refuses the key ({exc})")
                return False
            except EmbedderError as exc:  # unreachable or throttled: not an answer about the key
                log.warning("could not check the key yet: %s", exc)
                return False
        blocked_before = set(self.blocked)
        for kind in blocked_before:
            self.blocked.pop(kind, None)
        await self._pass("reconcile", self.ingestor.reconcile)
        if self.blocked or self.stopping.is_set():  # a refused prune is a problem, not a block
            self._catch_up = True
            for kind in blocked_before - set(self.blocked):
                self.blocked[kind] = self.problems.get(kind, kind)
            return False
        for kind in blocked_before:
            self._unblock(kind)
        self._deferred.clear()  # the reconcile covered them
        self._catch_up = False
        self._unblocked.set()
        self.last_rescan = time.monotonic()
        return True


def _is_store_failure(exc: BaseException) -> bool:
    """A write that failed for lack of room (or a store that is down): pause, don't crash."""
    if isinstance(exc, StoreError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "disk is full" in str(exc) or "disk I/O error" in str(exc)
