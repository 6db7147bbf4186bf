"""The daemon of a blob source: list at the interval, consume the queue if there is one."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from imgrag.pipeline.blob_ingest import BlobIngestor
from imgrag.pipeline.candidates import Rules
from imgrag.pipeline.daemon import Daemon
from imgrag.pipeline.ingest import Summary
from imgrag.pipeline.sources import SourceError
from imgrag.pipeline.status import SourceStatus

if TYPE_CHECKING:
    from imgrag.connectors.blob import BlobEvent


class BlobDaemon(Daemon):
    """Keeps one blob source in line: list at the interval, and consume the queue if any.

    Supervision, blocking conditions (refused key, full store) and the retry of passing
    failures are the folder daemon's; only what "follow" means differs.
    """

    ingestor: BlobIngestor

    def __init__(
        self,
        ingestor: BlobIngestor,
        *,
        on_summary: Callable[[str, Summary], None] | None = None,
        renew_credential: Callable[[], Any] | None = None,
    ) -> None:
        config = ingestor.config
        super().__init__(
            ingestor.root,
            ingestor,
            ingestor.journal,
            settle_seconds=0.0,
            rescan_minutes=config.list_interval_seconds / 60,
            on_summary=on_summary,
            renew_credential=renew_credential,
        )
        self.ingestor = ingestor
        self.watch_mode = f"listing every {config.list_interval_seconds:g}s" + (
            f", queue {config.queue}" if config.queue else ""
        )
        self.queue_stats: Any = None

    @property
    def display_root(self) -> str:
        return self.ingestor.uri

    async def _main(self) -> None:
        await self.supervise("reconcile", self._initial_reconcile)
        await asyncio.gather(
            self.supervise("queue", self._follow),
            self.supervise("list", self._rescan_loop),
            self.supervise("retry", self._retry_loop),
            self.supervise("recover", self._recover_loop),
        )

    def _check_root(self) -> bool:
        return True  # a container has no root to stat: a listing says whether it answers

    def _note_listing(self, summary: Summary) -> None:
        error = self.ingestor.listing_error
        if error:
            self.problems["listing"] = (
                f"listing {self.ingestor.uri} failed ({error}); nothing is removed, it is "
                f"listed again in {self.rescan_seconds:g}s"
            )
        else:
            self.problems.pop("listing", None)

    def source_status(self, rules: Rules) -> SourceStatus:
        ingestor = self.ingestor
        journal = ingestor.journal
        return SourceStatus(
            name=ingestor.source,
            root=ingestor.uri,
            reachable=ingestor.listing_error is None,
            indexed=len(ingestor.known),
            pending=ingestor.backlog + len(journal.transient_paths()),
            failed=journal.count(),
            failed_by_reason=journal.by_reason(),
        )

    async def _follow(self) -> None:
        """The queue consumer: Event Grid events for this container, handled as they come."""
        config = self.ingestor.config
        if not config.queue:
            return
        from imgrag.connectors.blob import BlobConfigError, QueueWorker, open_queue

        try:
            queue = open_queue(config)
        except BlobConfigError as exc:
            raise SourceError(str(exc)) from None
        from imgrag.connectors.blob.errors import wrap

        try:
            await asyncio.to_thread(queue.get_queue_properties)
        except Exception as exc:
            raise wrap(exc, f"queue {config.queue}", self.ingestor._secrets) from None
        loop = asyncio.get_running_loop()
        wait = float(config.visibility_timeout_seconds)

        def handle(event: BlobEvent) -> None:
            work = functools.partial(self.ingestor.apply_event, event)
            done = asyncio.run_coroutine_threadsafe(self._event(work), loop)
            done.result(timeout=wait)

        worker = QueueWorker(
            queue,
            container=config.container,
            prefix=config.prefix,
            handle=handle,
            poison=self.ingestor.record_poison,
            max_dequeues=config.max_dequeues,
            visibility_timeout=config.visibility_timeout_seconds,
            # Messages of a batch wait their turn invisible to other workers, and only the
            # one being worked on is renewed: small batches share the work and keep the
            # waiting ones well inside their timeout.
            batch_size=4,
            secrets=self.ingestor._secrets,
        )
        self.queue_stats = worker.stats
        stop = threading.Event()
        try:
            await asyncio.to_thread(worker.run, stop, 1.0)
        finally:
            stop.set()
        if not self.stopping.is_set():
            raise RuntimeError(f"the queue consumer of {config.queue} stopped")

    async def _event(self, work: Callable[[], Awaitable[Summary]]) -> None:
        if await self._pass("event", work) is None:
            raise RuntimeError("the daemon could not take the event now; it is tried again")
