"""What a pass is doing while it does it: a bar when stderr is a terminal; otherwise a plain
line every ``[ingest] progress_seconds`` (``reconcile photos: indexed 120/5000, failed 3,
rate 11.8/s, about 7 min left``); and at ``-v`` a line per file (``indexed PATH``; failures
are always logged, with their reason, by the ingestor)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from imgrag.pipeline.logs import FILES
from imgrag.pipeline.names import printable
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeRemainingColumn

if TYPE_CHECKING:
    from imgrag.pipeline.ingest import Indexer, Outcome

log = logging.getLogger("imgrag.progress")
files_log = logging.getLogger(FILES)


class Board:
    """The progress of every pass running in this process (one per source at most)."""

    def __init__(self, console: Console, *, interval: float, bar: bool | None = None) -> None:
        self.console = console
        self.interval = interval
        self.bar = console.is_terminal if bar is None else bar
        self._progress: Progress | None = None

    @contextlib.contextmanager
    def track(self, ingestor: Indexer, name: str, source: str) -> Iterator[None]:
        """Follow the passes ``ingestor`` runs inside the block."""
        tracker = _Tracker(self, f"{name} {printable(source)}")
        before = ingestor.on_progress, ingestor.on_total
        ingestor.on_progress, ingestor.on_total = tracker.advance, tracker.start
        try:
            yield
        finally:
            ingestor.on_progress, ingestor.on_total = before
            tracker.close()

    def _add(self, description: str, total: int) -> TaskID:
        if self._progress is None:
            self._progress = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        return self._progress.add_task(description, total=total)

    def _advance(self, task: TaskID) -> None:
        if self._progress is not None:
            self._progress.advance(task)

    def _remove(self, task: TaskID) -> None:
        if self._progress is None:
            return
        self._progress.remove_task(task)
        if not self._progress.tasks:
            self.close()

    def close(self) -> None:
        """Take the bar off the terminal."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class _Tracker:
    def __init__(self, board: Board, what: str) -> None:
        self.board = board
        self.what = what
        self.total = self.done = self.indexed = self.failed = 0
        self.started = time.monotonic()
        self._task: TaskID | None = None
        self._timer: asyncio.Task[None] | None = None

    def start(self, total: int) -> None:
        self.total += total
        if total <= 0:
            return
        if self.board.bar:
            if self._task is None:
                self._task = self.board._add(self.what, self.total)
            elif self.board._progress is not None:
                self.board._progress.update(self._task, total=self.total)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.board.interval)
            log.info("%s", self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.what}: indexed {self.indexed}/{self.total}, failed {self.failed}, "
        text += f"rate {rate:.1f}/s"
        left = self.total - self.done
        if rate > 0 and left > 0:
            minutes = left / rate / 60
            text += f", about {minutes:.0f} min left" if minutes >= 1 else ", under a minute left"
        return text

    def advance(self, rel: str, outcome: Outcome) -> None:
        self.done += 1
        if outcome in ("indexed", "reused"):
            self.indexed += 1
            reused = " (stored vector reused)" if outcome == "reused" else ""
            files_log.info("indexed %s%s", printable(rel), reused)
        elif outcome == "failed":
            self.failed += 1  # the ingestor has logged it with its reason
        elif outcome == "pending":
            files_log.info("waiting %s: still changing, picked up once it settles", printable(rel))
        if self._task is not None:
            self.board._advance(self._task)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self.board._remove(self._task)
            self._task = None
