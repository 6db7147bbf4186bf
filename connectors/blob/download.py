"""Read one blob to a file, streamed, with its etag pinned; and read its sidecar blobs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContainerClient
from imgrag._errors import BlobGone, BlobKeptChanging, BlobTooLarge, SidecarInvalid

from .errors import wrap
from .listing import BlobEntry, plain_etag
from .reconcile import sidecar_names
from .uri import blob_url

log = logging.getLogger(__name__)

MAX_SIDECAR_BYTES = 64 * 1024
_READ_SIZE = 1 << 20
MAX_CAPTION_CHARS = 2000


@dataclass(frozen=True)
class Downloaded:
    """One blob as it was written to ``path``: the etag it was read at and its sha256."""

    name: str
    url: str
    """The blob's URL without any SAS: what a hit shows as ``abs_path``."""
    path: Path
    etag: str
    size: int
    sha256: str
    attempts: int
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def _too_large(name: str, size: int, limit: int) -> BlobTooLarge:
    return BlobTooLarge(
        f"{name} is {size} bytes, over the {limit}-byte limit; raise max_blob_bytes to read it"
    )


def download_to(
    container: ContainerClient,
    entry: BlobEntry,
    dest: Path,
    *,
    max_bytes: int,
    max_attempts: int = 3,
    progress_hook: Callable[[int, int | None], None] | None = None,
    secrets: Iterable[str] = (),
) -> Downloaded:
    """Stream ``entry`` into ``dest`` (via a temporary file beside it).

    The size is checked from the listing before any byte is read. Every request carries
    ``If-Match: <etag>``; when the blob changed since (HTTP 412), its properties are read
    again and the download restarts, at most ``max_attempts`` times in all. Transient
    errors are retried inside the client by the storage retry policy.
    """
    secrets = list(secrets)
    blob = container.get_blob_client(entry.name)
    etag, size = entry.etag, entry.size
    tmp = dest.with_name(dest.name + ".part")
    for attempt in range(1, max_attempts + 1):
        if size > max_bytes:
            raise _too_large(entry.name, size, max_bytes)
        digest = hashlib.sha256()
        written = 0
        try:
            stream = blob.download_blob(
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
                max_concurrency=1,
                progress_hook=progress_hook,
            )
            if stream.size > max_bytes:
                raise _too_large(entry.name, stream.size, max_bytes)
            with tmp.open("wb") as out:
                # read(n) fetches range by range, calls progress_hook and keeps at most
                # about one range in memory; chunks() would skip the hook.
                while chunk := stream.read(_READ_SIZE):
                    written += len(chunk)
                    if written > max_bytes:
                        raise _too_large(entry.name, written, max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
            props = stream.properties
            os.replace(tmp, dest)
            return Downloaded(
                name=entry.name,
                url=blob_url(container.url, entry.name),
                path=dest,
                etag=plain_etag(props.etag) or etag,
                size=written,
                sha256=digest.hexdigest(),
                attempts=attempt,
                content_type=getattr(props.content_settings, "content_type", None),
                metadata=dict(props.metadata or {}),
            )
        except ResourceModifiedError:
            # The blob was rewritten after the etag we pinned: read what it is now.
            log.info(
                "%s changed while being read (attempt %d); reading it again", entry.name, attempt
            )
            try:
                now = blob.get_blob_properties()
            except ResourceNotFoundError:
                raise BlobGone(f"{entry.name} was deleted while being read") from None
            except AzureError as exc:
                raise wrap(exc, f"reading {entry.name}", secrets) from None
            etag, size = plain_etag(now.etag), int(now.size or 0)
        except ResourceNotFoundError:
            raise BlobGone(f"{entry.name} was deleted before it could be read") from None
        except AzureError as exc:
            raise wrap(exc, f"reading {entry.name}", secrets) from None
        finally:
            tmp.unlink(missing_ok=True)
    raise BlobKeptChanging(
        f"{entry.name} changed during each of {max_attempts} reads; it is retried on the next pass"
    )


@dataclass(frozen=True)
class SidecarData:
    """What ``photo.txt`` / ``photo.json`` beside ``photo.jpg`` say, and their etags."""

    caption: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)

    @property
    def metadata(self) -> dict[str, Any]:
        out = dict(self.data)
        if self.caption and not out.get("caption"):
            out["caption"] = self.caption
        return out


def read_sidecars(
    container: ContainerClient,
    image: str,
    *,
    present: Collection[str] | None = None,
    max_bytes: int = MAX_SIDECAR_BYTES,
    secrets: Iterable[str] = (),
) -> SidecarData:
    """Read the sidecar blobs of ``image``.

    ``present`` is the set of names the listing saw; when given, absent sidecars cost no
    request. A missing sidecar is no sidecar; an oversized or malformed one is an error
    naming it.
    """
    secrets = list(secrets)
    caption: str | None = None
    data: dict[str, Any] = {}
    etags: dict[str, str] = {}
    for name in sidecar_names(image):
        if present is not None and name not in present:
            continue
        blob = container.get_blob_client(name)
        try:
            props = blob.get_blob_properties()
            if (props.size or 0) > max_bytes:
                raise SidecarInvalid(f"{name} is over {max_bytes // 1024} KB")
            stream = blob.download_blob(
                etag=props.etag, match_condition=MatchConditions.IfNotModified
            )
            raw = stream.readall()
        except ResourceNotFoundError:
            continue
        except AzureError as exc:
            raise wrap(exc, f"reading {name}", secrets) from None
        etags[name] = plain_etag(stream.properties.etag)
        if name.endswith(".txt"):
            caption = raw.decode("utf-8", "replace").strip()[:MAX_CAPTION_CHARS] or None
            continue
        try:
            loaded = json.loads(raw)
        except ValueError as exc:
            raise SidecarInvalid(f"{name} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise SidecarInvalid(f"{name} must hold a JSON object")
        data = loaded
    return SidecarData(caption=caption, data=data, etags=etags)
