"""Requests/min, tokens/min and concurrency limits, answered like the service: 429 + retry hints."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Throttle:
    """Why a request was refused and how long until capacity frees."""

    reason: str
    retry_after_s: float

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, never 0, as ``Retry-After`` carries."""
        return str(max(1, math.ceil(self.retry_after_s)))

    @property
    def retry_after_ms_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s * 1000)))


class QuotaLimiter:
    """A sliding one-minute window for requests and tokens, plus an in-flight counter.

    Limits are read on every call so changes to the options take effect at once; 0 = no limit.
    Refused requests do not consume quota, as with the service.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._admitted: deque[tuple[float, int]] = deque()  # (time, tokens)
        self._in_flight: dict[int, float] = {}  # ticket -> start time
        self._next_ticket = 0

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def reset(self) -> None:
        """Forget the window (tests start from a clean quota)."""
        with self._lock:
            self._admitted.clear()

    def enter(self, max_concurrency: int, expected_s: float) -> int | Throttle:
        """Take a concurrency slot: a ticket to pass to ``leave``, or the refusal."""
        with self._lock:
            now = self._clock()
            if max_concurrency and len(self._in_flight) >= max_concurrency:
                oldest = min(self._in_flight.values())
                # The earliest slot frees when the oldest request should finish.
                wait = max(0.05, oldest + max(expected_s, 0.1) - now)
                return Throttle("concurrency", wait)
            self._next_ticket += 1
            self._in_flight[self._next_ticket] = now
            return self._next_ticket

    def leave(self, ticket: int) -> None:
        with self._lock:
            self._in_flight.pop(ticket, None)

    def admit(self, tokens: int, rpm: int, tpm: int) -> Throttle | None:
        """Charge one request of ``tokens`` to the window, or say when it would fit."""
        with self._lock:
            now = self._clock()
            while self._admitted and self._admitted[0][0] <= now - WINDOW_SECONDS:
                self._admitted.popleft()
            if rpm and len(self._admitted) >= rpm:
                # Free once enough old requests leave the window to make room for one.
                start = self._admitted[len(self._admitted) - rpm][0]
                return Throttle("requests", start + WINDOW_SECONDS - now)
            if tpm:
                used = sum(t for _, t in self._admitted)
                if used + tokens > tpm:
                    return Throttle("tokens", self._tokens_free_at(tokens, tpm, used) - now)
            self._admitted.append((now, tokens))
            return None

    def _tokens_free_at(self, tokens: int, tpm: int, used: int) -> float:
        if tokens > tpm:  # never fits; say "a full window" like a saturated deployment
            return self._clock() + WINDOW_SECONDS
        need = used + tokens - tpm
        for when, spent in self._admitted:
            need -= spent
            if need <= 0:
                return when + WINDOW_SECONDS
        return self._clock() + WINDOW_SECONDS

    def remaining(self, rpm: int, tpm: int) -> tuple[int | None, int | None]:
        """Requests and tokens left in the current window (None = unlimited)."""
        with self._lock:
            now = self._clock()
            live = [(t, n) for t, n in self._admitted if t > now - WINDOW_SECONDS]
            reqs = max(0, rpm - len(live)) if rpm else None
            toks = max(0, tpm - sum(n for _, n in live)) if tpm else None
            return reqs, toks
