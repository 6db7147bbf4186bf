"""Keep connection strings, account keys and SAS tokens out of every message we emit."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

REDACTED = "***"

# Parts of a connection string or SAS that are secret on their own. A SAS's `sig` is the
# signature; an account key is base64. Both are redacted even when we were not told them.
_PATTERNS = (
    re.compile(r"(?i)(AccountKey=)[^;\s'\"]+"),
    re.compile(r"(?i)(SharedAccessSignature=)[^;\s'\"]+"),
    re.compile(r"(?i)([?&]sig=)[^&\s'\"]+"),
    re.compile(r"(?i)(\bsig=)[^&\s'\"]+"),
)


def _fragments(secret: str) -> Iterable[str]:
    """The secret and the parts of it that are secret by themselves (key, signature)."""
    yield secret
    for part in re.split(r"[;&]", secret):
        _, _, value = part.partition("=")
        if len(value) >= 16:
            yield value


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret and every key/signature pattern replaced."""
    for secret in sorted({f for s in secrets if s for f in _fragments(s)}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(rf"\g<1>{REDACTED}", text)
    return text


# Loggers that may print a request URL as sent. A SAS must travel in the query string,
# and urllib3 logs "GET <path>?<query>" at DEBUG; the storage SDK's own logging already
# masks `sig`. The filter only rewrites messages that contain a secret.
_URL_LOGGERS = (
    "urllib3.connectionpool",
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.storage.blob._shared.policies",
    "azure.storage.queue._shared.policies",
)


class _RedactingFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = _RedactingFilter()


def protect_logs(secrets: Iterable[str]) -> None:
    """Mask ``secrets`` (and any SAS signature) in the HTTP loggers the SDK stack uses.

    Called when a client with a secret is opened, never on import.
    """
    _FILTER.secrets.update(s for s in secrets if s)
    for name in _URL_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
