"""When to retry and how long to wait."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime

import httpx

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_BASE_DELAY = 0.5
_MAX_DELAY = 60.0


def server_delay(headers: httpx.Headers, now_epoch: float) -> float | None:
    """The wait the service asked for, from ``retry-after-ms``, ``x-ms-retry-after-ms`` or
    ``Retry-After`` (seconds or an HTTP date), or None when it named none."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value:
            try:
                return max(float(value) / 1000.0, 0.0)
            except ValueError:
                pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now_epoch, 0.0)


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with jitter for the ``attempt``-th retry (1-based)."""
    ceiling = min(_MAX_DELAY, _BASE_DELAY * 2 ** (attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)
