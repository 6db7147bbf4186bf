"""The watch daemon: reconcile, then follow the folder until asked to stop.

Every background task (follow, rescan, retry, recover, the API) runs under a supervisor:
an unexpected exception is logged with its traceback and the task restarts with backoff,
while health says ``degraded`` and why. A task that keeps failing ends the daemon with
one line (exit code 1) rather than leaving a zombie that serves its API and indexes
nothing. Conditions that block ingestion without being bugs (the root is missing, the
service refuses the key, the store cannot write) pause ingestion: changes are kept, the
``recover`` task checks again with backoff, and a reconcile catches up once they clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hmac
import logging
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import uvicorn
from imgrag.connectors.errors import CredentialError, DiskFull, EmbedderError, StoreError
from imgrag.pipeline.api import SignalFreeServer, create_api
from imgrag.pipeline.candidates import Rules, walk
from imgrag.pipeline.config import Settings, load_settings
from imgrag.pipeline.credentials import RenewableEmbedder
from imgrag.pipeline.daemon_client import (
    DaemonInfo,
    index_of,
    read_daemon_file,
    write_daemon_file,
)
from imgrag.pipeline.ingest import FatalError, Ingestor, PruneRefused, Summary, cause_of
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.progress import Board
from imgrag.pipeline.retrieval import SearchService
from imgrag.pipeline.runtime import (
    Runtime,
    open_runtime,
    resolve_source,
    rules_for,
    source_list,
    state_paths,
)
from imgrag.pipeline.sources import Resolved
from imgrag.pipeline.status import FailureOut, SourceStatus, StatusReport, source_status
from imgrag.pipeline.thumbnails import LiveRoots
from imgrag.pipeline.watcher import Changes, FolderWatcher

if TYPE_CHECKING:
    from imgrag.connectors.blob import BlobSourceConfig

log = logging.getLogger("imgrag.daemon")

_RETRY_MIN_SECONDS = 5.0
_RETRY_MAX_SECONDS = 300.0
# Supervision: restart delays double from MIN to MAX; a task that fails this many times in a
# row (without running HEALTHY seconds in between) ends the daemon.
_RESTART_MIN_SECONDS = 1.0
_RESTART_MAX_SECONDS = 60.0
_MAX_FAILURES = 5
_HEALTHY_SECONDS = 300.0
# Recovery from a blocked state: the root is checked every ROOT seconds (a stat); a refused
# key or a failing store is tried again with backoff from MIN to MAX.
_ROOT_CHECK_SECONDS = 1.0
_RECOVER_MIN_SECONDS = 2.0
_RECOVER_MAX_SECONDS = 120.0
# On SIGTERM, in-flight files get this long to finish before they are abandoned.
_STOP_GRACE_SECONDS = 5.0

Block = Literal["root", "credential", "store"]


class DaemonFailed(FatalError):
    """A background task kept failing; the daemon stops rather than run as a zombie."""


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
        self.problems: dict[str, str] = {}
        """What makes the daemon degraded right now (key → one line)."""
        self.restarts: dict[str, int] = {}
        self.failed: str | None = None
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
        """Run ``work`` until it returns; restart it with backoff when it raises."""
        failures = 0
        key = f"task:{name}"
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                await work()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - started > _HEALTHY_SECONDS:
                    failures = 0
                failures += 1
                self.restarts[name] = self.restarts.get(name, 0) + 1
                what = f"{type(exc).__name__}: {exc}"
                if failures >= _MAX_FAILURES:
                    self.failed = (
                        f"the {name} task failed {failures} times in a row (last: {what}); "
                        "the daemon stops (the log above has each traceback)"
                    )
                    log.error("%s", self.failed, exc_info=exc)
                    self.problems[key] = self.failed
                    self.stopping.set()
                    return
                delay = min(_RESTART_MIN_SECONDS * 2 ** (failures - 1), _RESTART_MAX_SECONDS)
                self.problems[key] = f"{name} task down ({what}); restarting in {delay:.0f}s"
                log.error(
                    "the %s task failed (%s); restarting in %.0fs", name, what, delay, exc_info=exc
                )
                await asyncio.sleep(delay)
                self.problems.pop(key, None)

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


class Fleet:
    """One daemon per source, sharing one embedder, index and API: ``imgrag watch A B``, and
    sources added later through ``POST /sources``. Stopping one stops all."""

    def __init__(self, settings: Settings, runtime: Runtime, make: Callable[[Resolved], Daemon]):
        self.settings = settings
        self.runtime = runtime
        self._make = make
        self.daemons: dict[str, Daemon] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self.started_at = time.time()
        self._adding = asyncio.Lock()

    def add(self, source: Resolved) -> tuple[Daemon, bool]:
        """Watch ``source`` (its whole root); (its daemon, whether it is new)."""
        if source.name in self.daemons:
            return self.daemons[source.name], False
        return self.add_daemon(source.name, self._make(Resolved(source.name, source.root))), True

    def add_daemon(self, name: str, daemon: Daemon) -> Daemon:
        """Run a daemon made elsewhere (a blob source's) as one of the fleet."""
        self.daemons[name] = daemon
        task = asyncio.create_task(daemon.run())
        task.add_done_callback(lambda _t: self.stop())  # one failing daemon ends the process
        self._tasks[name] = task
        return daemon

    def stop(self) -> None:
        for daemon in self.daemons.values():
            daemon.stop()
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)

    async def run(self) -> None:
        await self.stopping.wait()
        results = await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for daemon in self.daemons.values():
            await daemon.ingestor.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    @property
    def primary(self) -> Daemon:
        return next(iter(self.daemons.values()))

    @property
    def left(self) -> int:
        return sum(d.left for d in self.daemons.values())

    def health_report(self) -> dict[str, Any]:
        reports = [d.health_report() for d in self.daemons.values()]
        states = {r["status"] for r in reports}
        status = (
            "stopping" if "stopping" in states else "degraded" if "degraded" in states else "ok"
        )
        restarts: dict[str, int] = {}
        for r in reports:
            for k, v in r["restarts"].items():
                restarts[k] = restarts.get(k, 0) + v
        return {
            "status": status,
            "problems": [p for r in reports for p in r["problems"]],
            "restarts": restarts,
            "sources": list(self.daemons),
        }

    async def ingest(self, source: Resolved, prune: bool) -> Summary:
        """One reconcile pass for a source, as ``imgrag ingest`` asked through the API: the
        watched source's own daemon runs it in turn; another source gets a passing ingestor."""
        daemon = self.daemons.get(source.name)
        if daemon is not None:
            summary = await daemon._pass(
                "reconcile", functools.partial(daemon.ingestor.reconcile, prune=prune)
            )
            if summary is None:
                raise FatalError(
                    "the daemon could not run the pass: " + "; ".join(daemon.problems.values())
                    if daemon.problems
                    else "the daemon is stopping"
                )
            return summary
        ingestor = self.runtime.ingestor(source)
        try:
            return await ingestor.reconcile(prune=prune)
        finally:
            await ingestor.close()


def _add_routes(app: Any, settings: Settings, fleet: Fleet) -> None:
    """``POST /sources`` (watch one more folder) and ``POST /ingest`` (one pass), the routes
    ``imgrag watch`` and ``imgrag ingest`` use when this daemon owns the index."""
    from imgrag.pipeline.sources import SourceError
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    token = settings.api.token

    def refused(request: Request) -> Response | None:
        if token is None:
            return None
        given = request.headers.get("authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode()):
            return None
        return JSONResponse({"error": "missing or wrong bearer token (IMGRAG_API_TOKEN)"}, 401)

    async def body(request: Request) -> tuple[Resolved, dict[str, Any]]:
        # JSON only: a page elsewhere cannot send it without the browser asking first (CORS),
        # so no web page can make the daemon watch a folder.
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise SourceError("send the body as JSON (Content-Type: application/json)")
        data = await request.json()
        shape = 'the body must be {"path": "/absolute/folder", "name": null}'
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise SourceError(shape)
        name, path = data.get("name"), Path(data["path"])
        if name is not None and not isinstance(name, str):
            raise SourceError(f"name: a source name is text, not {name!r}; {shape}")
        if not path.is_absolute() or not path.is_dir():
            raise SourceError(f"{path} is not an existing folder given by its absolute path")
        resolved = resolve_source(settings, path, name if name else None)
        return resolved, data

    async def add_source(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        try:
            resolved, _ = await body(request)
        except (SourceError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        async with fleet._adding:
            _, added = fleet.add(resolved)
        log.warning("%s source %s (%s)", "watching" if added else "already watching",
                    resolved.name, resolved.root)  # fmt: skip
        return JSONResponse(
            {"name": resolved.name, "root": str(resolved.root), "added": added,
             "sources": list(fleet.daemons)}
        )  # fmt: skip

    async def ingest(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        try:
            resolved, data = await body(request)
            summary = await fleet.ingest(resolved, bool(data.get("prune")))
        except (SourceError, ValueError, FatalError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return Response(summary.model_dump_json(), media_type="application/json")

    app.add_route("/sources", add_source, methods=["POST"])
    app.add_route("/ingest", ingest, methods=["POST"])


async def run_watch(
    settings: Settings,
    roots: Path | Sequence[Path],
    *,
    polling: bool = False,
    api: bool = True,
    announce: Callable[[str], None] = lambda line: None,
    on_summary: Callable[[str, Summary], None] | None = None,
    blobs: Sequence[BlobSourceConfig] = (),
    progress: Board | None = None,
) -> None:
    """``imgrag watch A [B ...]``: one daemon for every folder (and every blob source in
    ``blobs``), with its local API, until SIGINT/SIGTERM. A subfolder of a source is watched
    as its whole source. ``progress`` shows each pass as it runs."""
    folders = [roots] if isinstance(roots, Path) else list(roots)
    sources = list({s.name: s for s in (resolve_source(settings, r) for r in folders)}.values())
    first_root = str(sources[0].root) if sources else _blob_uri(blobs[0])
    daemon_file = state_paths(settings).daemon

    def starting() -> None:
        # The store is ours: say so at once, so status and search wait instead of failing.
        write_daemon_file(
            daemon_file,
            DaemonInfo(
                pid=os.getpid(),
                host=settings.api.host,
                port=0,
                root=first_root,
                started_at=time.time(),
                index=index_of(settings),
            ),
        )

    # Until the daemon takes SIGINT/SIGTERM itself (it flushes), a stop while the store opens,
    # the model loads or the embedder is waited for ends the start with its exit line.
    me = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: me.cancel() if me is not None else None)
    try:
        async with open_runtime(
            settings, wait_for_embedder=True, on_store_open=starting if api else None
        ) as runtime:
            await _serve(
                settings, runtime, sources, polling, api, announce, on_summary, blobs, progress
            )
    except asyncio.CancelledError:
        if me is None or not me.cancelling():
            raise
        me.uncancel()
        announce("stopped while starting: nothing indexed; every file is left for the next start")
    finally:
        info = read_daemon_file(daemon_file, starting=True)
        if info is not None and info.pid == os.getpid():
            daemon_file.unlink(missing_ok=True)


async def _serve(
    settings: Settings,
    runtime: Runtime,
    sources: list[Resolved],
    polling: bool,
    api: bool,
    announce: Callable[[str], None],
    on_summary: Callable[[str, Summary], None] | None,
    blobs: Sequence[BlobSourceConfig] = (),
    board: Board | None = None,
) -> None:
    from imgrag.connectors.factory import create_embedder

    embedder = RenewableEmbedder(runtime.embedder)
    runtime.embedder = embedder
    metrics_box: list[Metrics] = []
    current_key = [settings.embedder.api_key]
    runtime_first = [embedder.inner]

    async def renew_credential() -> None:
        """Re-read the key (config file and environment); probe with it."""
        try:
            fresh = load_settings(settings.config_path)
        except Exception as exc:  # a half-edited file: keep the key in use
            log.warning("could not re-read the settings: %s", exc)
            fresh = settings
        key = fresh.embedder.api_key
        if key is not None and key != current_key[0]:
            new = create_embedder(
                settings.embedder.model_copy(update={"api_key": key}),
                state_paths(settings),
            )
            old = embedder.inner
            embedder.replace(new)
            current_key[0] = key
            if old is not runtime_first[0]:
                await old.aclose()
            log.warning("re-read the embedder key from the settings")
        await embedder.probe()

    def make(source: Resolved) -> Daemon:
        ingestor = runtime.ingestor(
            source, observe_embed=lambda s: metrics_box[0].embed_seconds.observe(s)
        )
        return Daemon(
            source.root,
            ingestor,
            ingestor.journal,
            settle_seconds=settings.ingest.settle_seconds,
            rescan_minutes=settings.ingest.rescan_minutes,
            polling=polling,
            on_summary=on_summary,
            renew_credential=renew_credential,
            progress=functools.partial(board.track, ingestor, source=source.name)
            if board is not None
            else None,
        )

    fleet = Fleet(settings, runtime, make)
    for source in sources:
        fleet.add(source)
    if blobs:
        from imgrag.pipeline.blob_source import make_blob_daemon

        for config in blobs:
            blob = make_blob_daemon(
                runtime,
                config,
                observe_embed=lambda s: metrics_box[0].embed_seconds.observe(s),
                on_summary=on_summary,
                renew_credential=renew_credential,
            )
            fleet.add_daemon(blob.ingestor.source, blob)
    info = embedder.info
    rules = rules_for(settings)

    def report() -> StatusReport:
        per: list[SourceStatus] = []
        for daemon in list(fleet.daemons.values()):
            per.append(daemon.source_status(rules))
        journal = runtime.journal
        recent = [
            FailureOut(path=f.path, reason=f.reason, message=f.message, kind=f.kind)
            for f in journal.recent(10)
        ]
        primary = fleet.primary
        return StatusReport(
            indexed=sum(p.indexed for p in per),
            pending=sum(p.pending for p in per),
            failed=journal.count(),
            failed_by_reason=journal.by_reason(),
            failures=recent,
            usage=embedder.usage,
            embedder={"provider": info.provider, "model": info.model, "dimension": info.dimension},
            store={"kind": settings.store.kind, "collection": settings.store.collection},
            daemon={
                "pid": os.getpid(),
                "root": primary.display_root,
                "roots": [d.display_root for d in fleet.daemons.values()],
                "watching": primary.watch_mode,
                "started_at": fleet.started_at,
            },
            waiting_for=next(
                (d.waiting_for for d in fleet.daemons.values() if d.waiting_for), None
            ),
            health=fleet.health_report()["status"],
            problems=[p for d in fleet.daemons.values() for p in d.problems.values()],
            sources=per,
        )

    metrics_box.append(Metrics(report))
    fleet.install_signal_handlers()
    serving: asyncio.Task[None] | None = None
    servers: list[uvicorn.Server] = []
    daemon_file = state_paths(settings).daemon
    try:
        if api:
            service = SearchService(
                embedder,
                runtime.index,
                source=settings.store.collection,
                image_format=settings.embedder.image_format,
                sources=source_list(settings),
            )
            app = create_api(
                service,
                report,
                metrics_box[0],
                settings.api.token,
                fleet.health_report,
                thumbs_dir=settings.state_dir / "thumbs",
                roots=LiveRoots(lambda: [d.root for d in fleet.daemons.values()]),
                allowed_hosts=[settings.api.host, *settings.api.allowed_hosts],
            )
            _add_routes(app, settings, fleet)
            first = asyncio.get_running_loop().create_future()

            async def serve_api() -> None:
                port = settings.api.port
                if servers and servers[-1].servers:  # a restart keeps the port it had
                    port = servers[-1].servers[0].sockets[0].getsockname()[1]
                server = SignalFreeServer(
                    uvicorn.Config(
                        app,
                        host=settings.api.host,
                        port=port,
                        log_config=None,  # its loggers go through imgrag's one format
                        log_level="warning",
                        access_log=False,
                        lifespan="off",
                        timeout_graceful_shutdown=2,
                    )
                )
                servers.append(server)
                # Bound here: a port in use is an OSError, where uvicorn would sys.exit out
                # of the event loop with a traceback.
                family = socket.AF_INET6 if ":" in settings.api.host else socket.AF_INET
                sock = socket.create_server((settings.api.host, port), family=family)
                task = asyncio.create_task(server.serve(sockets=[sock]))
                while not server.started:
                    if task.done():
                        task.result()  # raises the reason it could not start
                        raise OSError(f"the local API could not listen on port {port}")
                    await asyncio.sleep(0.01)
                bound = server.servers[0].sockets[0].getsockname()[1]
                write_daemon_file(
                    daemon_file,
                    DaemonInfo(
                        pid=os.getpid(),
                        host=settings.api.host,
                        port=bound,
                        root=fleet.primary.display_root,
                        started_at=fleet.started_at,
                        index=index_of(settings),
                    ),
                )
                if not first.done():
                    first.set_result(bound)
                await task
                if not server.should_exit:
                    raise RuntimeError("the local API stopped serving")

            async def api_task() -> None:
                try:
                    await serve_api()
                except BaseException as exc:
                    if not first.done():
                        first.set_exception(exc)
                        return
                    raise

            async def supervised_api() -> None:
                await fleet.primary.supervise("api", api_task)

            serving = asyncio.create_task(supervised_api())
            try:
                port = await first
            except OSError as exc:
                fleet.stop()
                await fleet.run()
                raise StoreError(
                    f"the local API could not listen on {settings.api.host}:"
                    f"{settings.api.port} ({exc.strerror or exc}); set [api] port "
                    "(IMGRAG_API__PORT) to a free port"
                ) from None
            announce(f"local API on http://{settings.api.host}:{port}")
        for source in sources:
            announce(
                f"watching {source.root} as source {source.name} (model {info.model}, store "
                f"{settings.store.kind}:{settings.store.collection}); Ctrl+C stops"
            )
        for name, d in fleet.daemons.items():
            if d.display_root.startswith("az://"):
                announce(f"watching {d.display_root} as source {name} ({d.watch_mode})")
        try:
            await fleet.run()
        finally:
            await embedder.aclose()
            if servers:
                servers[-1].should_exit = True
            if serving is not None:
                await serving
            daemon_file.unlink(missing_ok=True)
    finally:
        if serving is not None and not serving.done():
            serving.cancel()
    left = fleet.left
    announce(
        f"stopped: in-flight work flushed; {left} files left for the next start"
        if left
        else "stopped: in-flight work finished and flushed; nothing left"
    )


def _blob_uri(config: BlobSourceConfig) -> str:
    from imgrag.pipeline.blob_source import location_uri

    return location_uri(config)
