"""The one supervisor every background task of the daemon runs under, the local API included.

An unexpected exception is logged with its traceback and the task restarts with backoff,
while health says ``degraded`` and why. A task that keeps failing stops its owner with one
line rather than leaving a zombie that serves its API and indexes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("imgrag.daemon")

# Restart delays double from MIN to MAX; a task that fails this many times in a row (without
# running HEALTHY seconds in between) stops its owner.
_RESTART_MIN_SECONDS = 1.0
_RESTART_MAX_SECONDS = 60.0
_MAX_FAILURES = 5
_HEALTHY_SECONDS = 300.0


class Supervisor:
    """Runs named tasks until they return or ``stopping`` is set; restarts them when they
    raise. ``problems`` and ``restarts`` are what health shows; ``failed`` is set (and
    ``stopping`` with it) when a task failed too often."""

    def __init__(self, stopping: asyncio.Event | None = None) -> None:
        self.stopping = stopping if stopping is not None else asyncio.Event()
        self.problems: dict[str, str] = {}
        """What is wrong right now (key → one line)."""
        self.restarts: dict[str, int] = {}
        self.failed: str | None = None

    async def run(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
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
                    self._give_up(name, key, failures, what, exc)
                    return
                delay = min(_RESTART_MIN_SECONDS * 2 ** (failures - 1), _RESTART_MAX_SECONDS)
                self.problems[key] = f"{name} task down ({what}); restarting in {delay:.0f}s"
                log.error(
                    "the %s task failed (%s); restarting in %.0fs", name, what, delay, exc_info=exc
                )
                await asyncio.sleep(delay)
                self.problems.pop(key, None)

    def _give_up(self, name: str, key: str, failures: int, what: str, exc: Exception) -> None:
        self.failed = (
            f"the {name} task failed {failures} times in a row (last: {what}); "
            "the daemon stops (the log above has each traceback)"
        )
        log.error("%s", self.failed, exc_info=exc)
        self.problems[key] = self.failed
        self.stopping.set()
