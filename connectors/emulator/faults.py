"""Scripted faults (exact, for tests) and random faults (a seeded failure rate)."""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """One forced answer for the next embeddings request."""

    status: int
    retry_after: float | None = None
    retry_after_ms: int | None = None
    body: bytes | None = None
    """Raw body to send instead of the usual error JSON (with 200: a malformed answer)."""
    headers: dict[str, str] = field(default_factory=dict)


class FaultScript:
    """A thread-safe queue of forced answers, consumed one per embeddings request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[InjectedFault] = deque()

    def push(self, fault: InjectedFault, count: int) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        if not 100 <= fault.status <= 599:
            raise ValueError(f"not an HTTP status: {fault.status}")
        with self._lock:
            self._queue.extend([fault] * count)

    def pop(self) -> InjectedFault | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)


class RandomFaults:
    """Decides, reproducibly for a seed, which requests fail and how long they take."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def failure(self, rate: float) -> int | None:
        """500 or 503 with probability ``rate``, else None."""
        if rate <= 0:
            return None
        with self._lock:
            if self._rng.random() >= rate:
                return None
            return self._rng.choice((500, 503))

    def uniform(self, low: float, high: float) -> float:
        with self._lock:
            return self._rng.uniform(low, high)

    def latency_s(self, latency_ms: float, jitter: float) -> float:
        if latency_ms <= 0:
            return 0.0
        with self._lock:
            factor = 1.0 + self._rng.uniform(-jitter, jitter)
        return max(0.0, latency_ms * factor / 1000.0)
