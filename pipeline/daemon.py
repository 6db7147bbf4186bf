"""The watch daemon: reconcile, then follow the folder until asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import uvicorn
from imgrag.connectors.errors import StoreError
from imgrag.pipeline.api import create_api
from imgrag.pipeline.candidates import walk
from imgrag.pipeline.config import Settings
from imgrag.pipeline.daemon_client import DaemonInfo, write_daemon_file
from imgrag.pipeline.ingest import Ingestor, Summary
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.retrieval import SearchService
from imgrag.pipeline.runtime import open_runtime, rules_for, state_paths
from imgrag.pipeline.status import StatusReport, build_status
from imgrag.pipeline.watcher import Changes, FolderWatcher

log = logging.getLogger("imgrag.daemon")

_RETRY_MIN_SECONDS = 5.0
_RETRY_MAX_SECONDS = 300.0


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
    ) -> None:
        self.root = root
        self.ingestor = ingestor
        self.journal = journal
        self.settle_seconds = settle_seconds
        self.rescan_seconds = rescan_minutes * 60
        self.polling = polling
        self.on_summary = on_summary
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.watch_mode = ""
        self.started_at = time.time()
        self.waiting_for: str | None = None
        self._lock = asyncio.Lock()
        self._watcher: FolderWatcher | None = None

    def stop(self) -> None:
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)

    async def run(self) -> None:
        """Reconcile, watch, rescan and retry until ``stop()``; in-flight work finishes."""
        # Watch first so nothing that changes during the initial reconcile is missed.
        self._watcher = FolderWatcher(
            self.root, self.ingestor.rules, settle_seconds=self.settle_seconds, polling=self.polling
        )
        self.watch_mode = self._watcher.start()
        try:
            await self._pass("reconcile", self.ingestor.reconcile())
            self.ready.set()
            tasks = [
                asyncio.create_task(self._follow()),
                asyncio.create_task(self._rescan_loop()),
                asyncio.create_task(self._retry_loop()),
            ]
            await self.stopping.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            async with self._lock:  # let a pass in progress finish before closing
                pass
        finally:
            self._watcher.stop()

    async def _pass(self, name: str, work: Awaitable[Summary]) -> Summary:
        async with self._lock:
            summary = await work
        if self.on_summary is not None:
            self.on_summary(name, summary)
        return summary

    async def _follow(self) -> None:
        assert self._watcher is not None
        while True:
            changes = await self._watcher.next_changes()
            await self._apply(changes)

    async def _apply(self, changes: Changes) -> None:
        files = list(changes.files)
        for folder in changes.new_folders:
            files += await asyncio.to_thread(self._files_below, folder)
        if files:
            await self._pass("update", self.ingestor.update(dict.fromkeys(files)))
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
            await self._pass("rescan", self.ingestor.reconcile())

    async def _retry_loop(self) -> None:
        """Files that failed for a passing reason (service down, quota) are tried again."""
        delay = _RETRY_MIN_SECONDS
        while True:
            await asyncio.sleep(delay)
            paths = await asyncio.to_thread(self.journal.transient_paths)
            if not paths:
                self.waiting_for = None
                delay = _RETRY_MIN_SECONDS
                continue
            summary = await self._pass("retry", self.ingestor.update(paths))
            if summary.pending:
                reasons = ", ".join(sorted(summary.failed_by_reason))
                self.waiting_for = f"{summary.pending} files waiting ({reasons})"
                log.warning("%s; retrying in %.0fs", self.waiting_for, delay)
                delay = min(delay * 2, _RETRY_MAX_SECONDS)
            else:
                self.waiting_for = None
                delay = _RETRY_MIN_SECONDS


class _ApiServer(uvicorn.Server):
    """uvicorn without its signal handling: the daemon owns SIGINT/SIGTERM. (uvicorn takes
    them over in ``capture_signals``; it stopped calling ``install_signal_handlers``, which
    we used to blank out, so a SIGTERM closed the API before the daemon heard of it.)"""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_watch(
    settings: Settings,
    root: Path,
    *,
    polling: bool = False,
    api: bool = True,
    announce: Callable[[str], None] = lambda line: None,
    on_summary: Callable[[str, Summary], None] | None = None,
) -> None:
    """``imgrag watch``: the daemon with its local API, until SIGINT/SIGTERM."""
    async with open_runtime(settings, wait_for_embedder=True) as runtime:
        metrics_box: list[Metrics] = []
        ingestor = runtime.ingestor(
            root, observe_embed=lambda s: metrics_box[0].embed_seconds.observe(s)
        )
        daemon = Daemon(
            root,
            ingestor,
            runtime.journal,
            settle_seconds=settings.ingest.settle_seconds,
            rescan_minutes=settings.ingest.rescan_minutes,
            polling=polling,
            on_summary=on_summary,
        )
        info = runtime.embedder.info

        def report() -> StatusReport:
            return build_status(
                known=ingestor.known,
                journal=runtime.journal,
                root=root,
                rules=rules_for(settings),
                usage=runtime.embedder.usage,
                embedder={
                    "provider": info.provider,
                    "model": info.model,
                    "dimension": info.dimension,
                },
                store={"kind": settings.store.kind, "collection": settings.store.collection},
                daemon={
                    "pid": os.getpid(),
                    "root": str(root.absolute()),
                    "watching": daemon.watch_mode,
                    "started_at": daemon.started_at,
                },
                waiting_for=daemon.waiting_for,
            )

        metrics_box.append(Metrics(report))
        daemon.install_signal_handlers()
        server: uvicorn.Server | None = None
        serving: asyncio.Task[None] | None = None
        daemon_file = state_paths(settings).daemon
        if api:
            service = SearchService(
                runtime.embedder,
                runtime.index,
                source=settings.store.collection,
                image_format=settings.embedder.image_format,
            )
            app = create_api(service, report, metrics_box[0], settings.api.token)
            server = _ApiServer(
                uvicorn.Config(
                    app,
                    host=settings.api.host,
                    port=settings.api.port,
                    log_level="warning",
                    access_log=False,
                    lifespan="off",
                )
            )
            serving = asyncio.create_task(server.serve())
            while not server.started:
                if serving.done():
                    serving.result()  # raises the reason it could not start
                    raise StoreError(f"the local API could not listen on port {settings.api.port}")
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            write_daemon_file(
                daemon_file,
                DaemonInfo(
                    pid=os.getpid(),
                    host=settings.api.host,
                    port=port,
                    root=str(root.absolute()),
                    started_at=daemon.started_at,
                ),
            )
            announce(f"local API on http://{settings.api.host}:{port}")
        announce(
            f"watching {root} (model {info.model}, store "
            f"{settings.store.kind}:{settings.store.collection}); Ctrl+C stops"
        )
        try:
            await daemon.run()
        finally:
            await ingestor.close()
            if server is not None and serving is not None:
                server.should_exit = True
                await serving
                daemon_file.unlink(missing_ok=True)
        announce("stopped: in-flight work finished and flushed")
