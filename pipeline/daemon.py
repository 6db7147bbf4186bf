"""The watch daemon: reconcile, then follow a source until asked to stop.

One :class:`Daemon` drives any ``Source`` through its indexer: what "follow" (a folder
watcher, a queue consumer) and "the root answers" mean comes from the source. Every
background task (follow, rescan, retry, recover) runs under the one supervisor
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

from imgrag._errors import (
    CredentialError,
    DaemonFailed,
    DiskFull,
    EmbedderError,
    FatalError,
    PruneRefused,
    StoreError,
)
from imgrag.pipeline.candidates import Rules
from imgrag.pipeline.ingest import Indexer, Summary, cause_of
from imgrag.pipeline.source import Change, Follower
from imgrag.pipeline.status import SourceStatus
from imgrag.pipeline.supervisor import Supervisor

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
# Reasons a failure is worth retrying soon (a redelivered change comes back for them).
_TRANSIENT = frozenset({"read_error", "embedder_unavailable", "store_unavailable"})


class Daemon:
    """Keeps one source in line with the index; every pass runs one at a time.

    ``Daemon(indexer)`` lists at ``rescan_minutes`` (default: the source's own interval)
    and follows the source as it says; ``settle_seconds`` and ``polling`` go to its
    follower.
    """

    def __init__(
        self,
        indexer: Indexer,
        /,
        *,
        rescan_minutes: float | None = None,
        settle_seconds: float | None = None,
        polling: bool = False,
        on_summary: Callable[[str, Summary], None] | None = None,
        renew_credential: Callable[[], Awaitable[None]] | None = None,
        progress: Callable[[str], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        self.indexer = indexer
        self.origin = indexer.origin
        self.journal = indexer.journal
        if rescan_minutes is not None:
            self.rescan_seconds = rescan_minutes * 60
        else:
            self.rescan_seconds = self.origin.list_seconds or 0.0
        self.on_summary = on_summary
        self.renew_credential = renew_credential
        self.progress = progress
        """Shows a pass's progress (by its name) while it runs."""
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
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
        self.follower: Follower = self.origin.follower(
            indexer, polling=polling, settle_seconds=settle_seconds
        )
        """How the source's changes are followed (a folder watcher, a queue consumer)."""
        self._unblocked = asyncio.Event()
        self._unblocked.set()
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- what the outside sees -------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self.indexer.pending + self.follower.waiting + len(self._deferred)

    @property
    def left(self) -> int:
        """Files not indexed at stop: skipped, abandoned in flight, or not handed over yet."""
        return self.indexer.left + self._abandoned + self.pending

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
        """How status names where this source's images are (a folder, ``az://...``)."""
        return self.origin.display_root

    @property
    def root(self) -> Path:
        """The folder files may be served from. A source without one (a blob container)
        answers the null device, which holds no file to serve; ``origin.local_root`` says
        None for it."""
        local = self.origin.local_root
        return local if local is not None else Path(os.devnull)

    @property
    def watch_mode(self) -> str:
        return self.follower.mode

    def source_status(self, rules: Rules | None = None) -> SourceStatus:
        """This source's counts, kept as work happens (nothing is walked or listed):
        indexed from what the indexer wrote, failed from the journal's count, pending from
        what this daemon saw and has not finished (the last listing's work, changes waiting
        to settle or handed over, changes held while ingestion is blocked). Until its
        first listing ends, pending is not live. ``rules`` is unused: the source's own apply."""
        indexer = self.indexer
        journal = indexer.journal
        # Copied only while ingestion is blocked (changes are held then); a copy is one C
        # call, so the loop thread changing the sets meanwhile cannot break it.
        held = indexer.outstanding | self._deferred if self._deferred else indexer.outstanding
        seen = len(held) + self.follower.waiting_besides(held)
        standing = self.origin.standing(indexer.known, journal, seen)
        return SourceStatus(
            name=indexer.source,
            root=self.display_root,
            reachable=standing.reachable,
            indexed=len(indexer.known),
            pending=standing.pending,
            failed=journal.count(),
            failed_by_reason=journal.by_reason(),
            pending_live=indexer.listed_at is not None,
        )

    def stop(self) -> None:
        """Take no new work; in-flight files finish (or are abandoned after a grace)."""
        self.indexer.stop()
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
            self.indexer.stop()
            await self._drain()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            self.follower.stop()
        if self.failed:
            raise DaemonFailed(self.failed)

    async def _main(self) -> None:
        follow, rescan = self.origin.task_names
        await self.supervise("reconcile", self._initial_reconcile)
        await asyncio.gather(
            self.supervise(follow, self._follow),
            self.supervise(rescan, self._rescan_loop),
            self.supervise("retry", self._retry_loop),
            self.supervise("recover", self._recover_loop),
        )

    async def _initial_reconcile(self) -> None:
        await self._pass("reconcile", self.indexer.reconcile)
        self.last_rescan = time.monotonic()
        self.ready.set()

    async def _drain(self) -> None:
        """Let the pass in progress finish what it started, up to the grace period."""
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout=_STOP_GRACE_SECONDS)
        except TimeoutError:
            self._abandoned = self.indexer.pending
            log.warning(
                "stopping: abandoning %d files still in flight after %.0fs",
                self.indexer.pending,
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
        key, line = self.origin.listing_problem(summary.unreadable, self.rescan_seconds)
        if line:
            self.problems[key] = line
        else:
            self.problems.pop(key, None)

    def _block(self, kind: Block, why: str) -> None:
        line = {
            "root": f"root missing: waiting for {self.display_root} to come back; "
            "nothing is removed",
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

    # -- the root and following it ----------------------------------------------------------

    def _check_root(self) -> bool:
        """Whether the root answers; the follower (re)starts when it came back or was
        replaced, and then a reconcile catches up."""
        state = self.follower.check()
        if state == "gone":
            self._root_gone()
            return False
        if state != "same":
            self._catch_up = self._catch_up or state == "restarted" or "root" in self.blocked
        return True

    def _root_gone(self) -> None:
        self.follower.stop()
        self._block("root", "")

    async def _follow(self) -> None:
        await self.follower.follow(self._apply, _ROOT_CHECK_SECONDS)

    async def _apply(self, change: Change) -> None:
        """Bring what changed in line. While ingestion is blocked the change is kept for
        the catch-up reconcile, or refused when it comes back by itself (a queue message)."""
        if self.blocked:
            if change.redeliver:
                raise RuntimeError("the daemon could not take the event now; it is tried again")
            self._deferred.update(change.items)
            self._catch_up = True
            return
        if change.items:
            name = "event" if change.redeliver else "update"
            work = functools.partial(self.indexer.apply, list(dict.fromkeys(change.items)))
            summary = await self._pass(name, work)
            if change.redeliver:
                _check_landed(change, summary)
            elif self.blocked:
                self._deferred.update(change.items)
        for prefix in change.gone_prefixes:
            async with self._lock:
                await self.indexer.remove_folder(prefix)

    async def _rescan_loop(self) -> None:
        if self.rescan_seconds <= 0:
            return
        while True:
            await asyncio.sleep(self.rescan_seconds)
            await self._unblocked.wait()
            await self._pass("rescan", self.indexer.reconcile)
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
            summary = await self._pass("retry", functools.partial(self.indexer.update, paths))
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
        await self._pass("reconcile", self.indexer.reconcile)
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


def _check_landed(change: Change, summary: Summary | None) -> None:
    """Raise unless a redelivered change is done: its message then comes back later."""
    if summary is None:
        raise RuntimeError("the daemon could not take the event now; it is tried again")
    transient = {r for r in summary.failed_by_reason if r in _TRANSIENT}
    if summary.pending or transient:
        raise RuntimeError(
            f"{', '.join(change.items)} is not indexed yet "
            f"({', '.join(sorted(transient)) or 'changing'})"
        )


def _is_store_failure(exc: BaseException) -> bool:
    """A write that failed for lack of room (or a store that is down): pause, don't crash."""
    if isinstance(exc, StoreError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "disk is full" in str(exc) or "disk I/O error" in str(exc)
