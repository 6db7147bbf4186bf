"""Requests/min, tokens/min and concurrency limits, answered like the service: 429 + retry hints."""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Sequence
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
    """Sliding windows for requests (1 s, 10 s, 60 s) and tokens (60 s), plus an in-flight
    counter.

    Limits are read on every call so changes to the options take effect at once; 0 = no limit.
    Refused requests do not consume quota, as with the service.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._times: list[float] = []  # admission times, ascending
        self._tokens: list[int] = []  # tokens charged to each admission
        self._in_flight: dict[int, float] = {}  # ticket -> start time
        self._next_ticket = 0

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def reset(self) -> None:
        """Forget the window (tests start from a clean quota)."""
        with self._lock:
            self._times.clear()
            self._tokens.clear()

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

    def admit(
        self, tokens: int, rpm: int, tpm: int, windows: Sequence[float] = (WINDOW_SECONDS,)
    ) -> Throttle | None:
        """Charge one request of ``tokens``, or say when it would fit.

        Requests are counted over every window in ``windows`` (each allows ``rpm * w / 60``),
        as the service evaluates its per-minute request limit over 1 s and 10 s windows.
        Tokens are counted over the minute, and a request is let in while any token quota is
        left, so ``remaining`` tokens can go below zero as they do on the service.
        """
        with self._lock:
            now = self._clock()
            self._trim(now)
            if rpm:
                for window in sorted(windows):
                    allowed = max(1, math.floor(rpm * window / WINDOW_SECONDS + 1e-9))
                    first = bisect.bisect_right(self._times, now - window)
                    if len(self._times) - first >= allowed:
                        # Room frees when the allowed-th latest request leaves this window.
                        oldest = self._times[len(self._times) - allowed]
                        return Throttle("requests", max(0.001, oldest + window - now))
            if tpm:
                used = sum(self._tokens)
                if used >= tpm:
                    return Throttle("tokens", self._tokens_free_at(used, tpm) - now)
            self._times.append(now)
            self._tokens.append(tokens)
            return None

    def _trim(self, now: float) -> None:
        cut = bisect.bisect_right(self._times, now - WINDOW_SECONDS)
        if cut:
            del self._times[:cut]
            del self._tokens[:cut]

    def _tokens_free_at(self, used: int, tpm: int) -> float:
        need = used - tpm + 1
        for when, spent in zip(self._times, self._tokens, strict=True):
            need -= spent
            if need <= 0:
                return when + WINDOW_SECONDS
        return self._clock() + WINDOW_SECONDS

    def remaining(self, rpm: int, tpm: int) -> tuple[int | None, int | None]:
        """Requests and tokens left in the current minute (None = unlimited); tokens may be
        negative after a request larger than what was left."""
        with self._lock:
            self._trim(self._clock())
            reqs = max(0, rpm - len(self._times)) if rpm else None
            toks = tpm - sum(self._tokens) if tpm else None
            return reqs, toks
