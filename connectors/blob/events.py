"""Event Grid blob events as Azure Storage Queue messages, decoded.

Event Grid delivers one event per queue message, base64-encoded JSON (older subscriptions
wrote the JSON as plain text; both are read). Two schemas are accepted:

- Event Grid schema: ``{"id", "topic", "subject", "eventType", "eventTime", "data",
  "dataVersion", "metadataVersion"}``;
- CloudEvents 1.0: ``{"specversion", "id", "source", "subject", "type", "time", "data"}``.

For ``Microsoft.Storage.BlobCreated`` / ``Microsoft.Storage.BlobDeleted`` the subject is
``/blobServices/default/containers/<container>/blobs/<name>`` and ``data`` carries ``url``,
``eTag`` (created only), ``contentLength``, ``contentType``, ``api``, ``blobType`` and
``sequencer``.

Sources (Microsoft): "Azure Blob Storage as an Event Grid source"
(learn.microsoft.com/azure/event-grid/event-schema-blob-storage), "Azure Event Grid event
schema" (learn.microsoft.com/azure/event-grid/event-schema), "CloudEvents v1.0 schema with
Azure Event Grid" (learn.microsoft.com/azure/event-grid/cloud-event-schema), and on the
queue encoding, MicrosoftDocs/azure-docs#102923 (Event Grid's queue messages are base64).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from imgrag._errors import EventDecodeError

from .uri import without_query

CREATED = "Microsoft.Storage.BlobCreated"
DELETED = "Microsoft.Storage.BlobDeleted"
_SUBJECT = "/blobServices/default/containers/"


@dataclass(frozen=True, slots=True)
class BlobEvent:
    kind: Literal["created", "deleted"]
    container: str
    name: str
    url: str
    """The blob's URL as the event gives it, without any query."""
    account: str | None = None
    etag: str | None = None
    size: int | None = None
    sequencer: str | None = None
    """Opaque; for one blob name, a larger string is a later event."""
    event_id: str | None = None
    event_time: datetime | None = None
    api: str | None = None


def _text(content: str | bytes) -> str:
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    text = content.strip()
    if text[:1] in ("{", "["):
        return text
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise EventDecodeError("message is neither JSON nor base64-encoded JSON") from None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _one(event: Any) -> BlobEvent | None:
    if not isinstance(event, dict):
        raise EventDecodeError("an event must be a JSON object")
    etype = event.get("eventType") or event.get("type")
    if etype not in (CREATED, DELETED):
        return None
    data = event.get("data") or {}
    if not isinstance(data, dict):
        raise EventDecodeError(f"{etype} event without a data object")
    subject = str(event.get("subject") or "")
    url = str(data.get("url") or "")
    container = name = ""
    if subject.startswith(_SUBJECT):
        container, _, rest = subject[len(_SUBJECT) :].partition("/")
        if rest.startswith("blobs/"):
            name = rest[len("blobs/") :]
    if (not container or not name) and url:
        parts = urlsplit(url)
        path = unquote(parts.path).lstrip("/")
        if not (parts.hostname or "").endswith(".core.windows.net"):
            # Emulators use path-style URLs: /<account>/<container>/<name>.
            path = path.partition("/")[2]
        container, _, name = path.partition("/")
    if not container or not name:
        raise EventDecodeError(f"{etype} event names no blob (subject {subject!r})")
    host = urlsplit(url).hostname or ""
    account = host.split(".")[0] if host.endswith(".core.windows.net") else None
    if account is None:
        source = str(event.get("topic") or event.get("source") or "")
        if "/storageAccounts/" in source:
            account = source.rsplit("/storageAccounts/", 1)[1].split("/")[0]
    size = data.get("contentLength")
    return BlobEvent(
        kind="created" if etype == CREATED else "deleted",
        container=container,
        name=name,
        url=without_query(url) if url else "",
        account=account,
        etag=str(data["eTag"]).strip('"') if data.get("eTag") else None,
        size=int(size) if isinstance(size, int | str) and str(size).isdigit() else None,
        sequencer=data.get("sequencer"),
        event_id=event.get("id"),
        event_time=_time(event.get("eventTime") or event.get("time")),
        api=data.get("api"),
    )


def decode_message(content: str | bytes) -> list[BlobEvent]:
    """The blob events in one queue message (other event types are left out).

    Raises :class:`EventDecodeError` for a message that is not Event Grid JSON.
    """
    text = _text(content)
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise EventDecodeError(f"message is not valid JSON: {exc.__class__.__name__}") from None
    events = payload if isinstance(payload, list) else [payload]
    return [e for e in (_one(ev) for ev in events) if e is not None]
