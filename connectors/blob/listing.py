"""Paged, streamed listing of a container prefix that says whether it saw everything."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.blob import BlobProperties, ContainerClient

from .errors import describe

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BlobEntry:
    """What one listing row says about a blob; enough to decide whether to read it."""

    name: str
    etag: str
    size: int
    last_modified: datetime | None
    content_md5: str | None = None
    """Hex Content-MD5 when the service kept one (single-shot uploads); a free content hash."""
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] | None = None
    """Blob index tags; ``None`` when the listing could not include them."""


def plain_etag(etag: object) -> str:
    """An etag without the quotes HTTP headers carry; listings give it bare."""
    return str(etag or "").strip('"')


def entry_from_properties(props: BlobProperties) -> BlobEntry:
    settings = props.content_settings
    md5 = getattr(settings, "content_md5", None) if settings is not None else None
    tags: Any = getattr(props, "tags", None)
    return BlobEntry(
        name=props.name,
        etag=plain_etag(props.etag),
        size=int(props.size or 0),
        last_modified=props.last_modified,
        content_md5=bytes(md5).hex() if md5 else None,
        content_type=getattr(settings, "content_type", None) if settings is not None else None,
        metadata=dict(props.metadata or {}),
        tags=dict(tags) if tags is not None else None,
    )


class Listing:
    """Iterate once over every blob under ``prefix``, one page in memory at a time.

    After the iteration, :attr:`complete` is true only if the service returned the last
    page. A listing that failed midway, or that the caller stopped early, is not complete,
    and :attr:`error` says why when it failed; nothing may be judged deleted from it.
    """

    def __init__(
        self,
        container: ContainerClient,
        prefix: str = "",
        *,
        page_size: int = 1000,
        include_tags: bool = True,
        secrets: Iterable[str] = (),
    ) -> None:
        self._container = container
        self.prefix = prefix
        self.page_size = page_size
        self.include_tags = include_tags
        self._secrets = list(secrets)
        self.complete = False
        self.error: str | None = None
        self.pages = 0
        self.count = 0
        self._started = False

    def _pages(self, include: list[str]) -> Iterator[Iterable[BlobProperties]]:
        pager = self._container.list_blobs(
            name_starts_with=self.prefix or None, include=include, results_per_page=self.page_size
        )
        return pager.by_page()

    def __iter__(self) -> Iterator[BlobEntry]:
        if self._started:
            raise RuntimeError("a Listing is iterated once; make a new one for the next pass")
        self._started = True
        include = ["metadata", "tags"] if self.include_tags else ["metadata"]
        try:
            pages = self._pages(include)
            try:
                first = list(next(pages, []))
            except HttpResponseError as exc:
                # Accounts without blob index tags (hierarchical namespace, some emulators)
                # refuse `include=tags`; list without them rather than not at all.
                if "tags" not in include or exc.status_code not in (400, 403, 409, 501):
                    raise
                log.info(
                    "listing %s: index tags not available (%s)", self.prefix or "/", exc.status_code
                )
                self.include_tags = False
                include = ["metadata"]
                pages = self._pages(include)
                first = list(next(pages, []))
            yield from self._rows(first)
            for page in pages:
                yield from self._rows(page)
        except AzureError as exc:
            self.error, _, _ = describe(exc, self._secrets)
            log.warning(
                "listing %s stopped after %d blobs (%d pages): %s; nothing is treated as deleted",
                self.prefix or "/",
                self.count,
                self.pages,
                self.error,
            )
            return
        self.complete = True

    def _rows(self, page: Iterable[BlobProperties]) -> Iterator[BlobEntry]:
        for props in page:
            self.count += 1
            yield entry_from_properties(props)
        self.pages += 1
