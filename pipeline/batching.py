"""Micro-batching: callers submit one item and await its result; items leave in batches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ItemFailed:
    """A handler's result for one item that failed alone: its waiter gets ``error``, the
    others in the batch their own results."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class Batcher(Generic[T, R]):
    """Collects items until ``max_items`` or ``linger`` seconds, then runs ``handler`` on the
    batch; at most ``max_in_flight`` batches run at once. An exception from the handler
    reaches every item of the batch; an ``ItemFailed`` result reaches only its own."""

    def __init__(
        self,
        handler: Callable[[Sequence[T]], Awaitable[Sequence[R | ItemFailed]]],
        *,
        max_items: int,
        linger: float,
        max_in_flight: int = 1,
    ) -> None:
        self._handler = handler
        self._max = max(1, max_items)
        self._linger = linger
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._slots = asyncio.Semaphore(max(1, max_in_flight))
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._max:
            self._dispatch()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._dispatch)
        return await future

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        async with self._slots:
            try:
                results = await self._handler([item for item, _ in batch])
            except BaseException as exc:  # every waiter learns about the failure
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, ItemFailed):
                    fut.set_exception(result.error)
                else:
                    fut.set_result(result)

    async def flush(self) -> None:
        """Send what is pending now and wait for every batch in flight."""
        self._dispatch()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
