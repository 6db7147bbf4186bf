"""When to retry and how long to wait."""

from __future__ import annotations

import random
import re
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


# "Rate limit is exceeded. Try again in 30 seconds." / "Please retry after 33 seconds."
_MESSAGE_WAIT = re.compile(
    r"(?:try again in|retry after)\s+(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|sec|seconds?)\b",
    re.IGNORECASE,
)


def message_delay(message: str) -> float | None:
    """The wait a 429 names only in its message, or None."""
    match = _MESSAGE_WAIT.search(message)
    if match is None:
        return None
    value = float(match[1])
    return value / 1000.0 if match[2].lower().startswith("m") else value


def ratelimit_header(headers: httpx.Headers, name: str) -> int | None:
    """An ``x-ratelimit-*`` count; it can be negative once a large request overdraws it."""
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None
