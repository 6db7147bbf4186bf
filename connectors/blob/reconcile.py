"""Compare a listing with the stored per-blob state: unchanged, new or changed, gone.

Plain data in, plain data out: the pipeline owns the index and decides what to write.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .listing import BlobEntry

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
)
SIDECAR_SUFFIXES = (".txt", ".json")


def is_image_name(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in IMAGE_SUFFIXES


def sidecar_names(image: str) -> tuple[str, ...]:
    """``a/photo.jpg`` → (``a/photo.txt``, ``a/photo.json``), as for files on disk."""
    stem = posixpath.splitext(image)[0]
    return tuple(stem + suffix for suffix in SIDECAR_SUFFIXES)


def is_sidecar_name(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in SIDECAR_SUFFIXES


@dataclass(frozen=True, slots=True)
class BlobState:
    """What the index stored for one blob when it was last written."""

    etag: str
    size: int
    last_modified: datetime | None = None
    content_hash: str | None = None
    """The hex Content-MD5 the listing gave then, if any."""
    sidecars: Mapping[str, str] = field(default_factory=dict)
    """Sidecar blob name → etag, as read with the image."""


Kind = Literal["new", "changed", "unchanged"]


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Kind
    entry: BlobEntry
    reason: str = ""
    reuse_from: str | None = None
    """A stored blob with the same content hash: a copy or move can reuse its vector."""


@dataclass(frozen=True)
class ReconcileResult:
    complete: bool
    gone: list[str]
    """Stored blobs not in the listing; empty unless the listing was complete."""
    sidecar_changed: list[str]
    """Unchanged images whose sidecar blobs were added, edited or removed."""


class Reconciler:
    """Feed listing entries one at a time; then :meth:`finish` with the listing's completeness.

    Only the stored state (which the caller holds anyway) and the sidecar etags seen are
    kept; the listing itself streams through.
    """

    def __init__(
        self,
        stored: Mapping[str, BlobState],
        *,
        is_image: Callable[[str], bool] = is_image_name,
    ) -> None:
        self._stored = stored
        self._is_image = is_image
        self._unseen = set(stored)
        self._touched: set[str] = set()
        self._sidecars: dict[str, str] = {}
        self._by_hash: dict[str, str] | None = None
        self.unchanged = 0

    def _hash_index(self) -> dict[str, str]:
        if self._by_hash is None:
            self._by_hash = {}
            for name, state in self._stored.items():
                if state.content_hash:
                    self._by_hash.setdefault(state.content_hash, name)
        return self._by_hash

    def feed(self, entry: BlobEntry) -> Decision | None:
        """The decision for an image blob; ``None`` for sidecars and other blobs."""
        if is_sidecar_name(entry.name):
            self._sidecars[entry.name] = entry.etag
        if not self._is_image(entry.name):
            return None
        self._unseen.discard(entry.name)
        old = self._stored.get(entry.name)
        if old is not None and old.etag == entry.etag and old.size == entry.size:
            self.unchanged += 1
            return Decision("unchanged", entry)
        self._touched.add(entry.name)
        reuse = None
        if entry.content_md5:
            if old is not None and old.content_hash == entry.content_md5:
                reuse = entry.name
            else:
                reuse = self._hash_index().get(entry.content_md5)
        if old is None:
            return Decision("new", entry, "not in the index", reuse)
        reason = "same content, new etag" if reuse == entry.name else "etag changed"
        return Decision("changed", entry, reason, reuse)

    def finish(self, complete: bool) -> ReconcileResult:
        """What is gone and which sidecars changed, judged only from a complete listing."""
        if not complete:
            return ReconcileResult(False, [], [])
        sidecar_changed = []
        for name, state in self._stored.items():
            if name in self._unseen or name in self._touched:
                continue
            now = {s: self._sidecars[s] for s in sidecar_names(name) if s in self._sidecars}
            if now != dict(state.sidecars):
                sidecar_changed.append(name)
        return ReconcileResult(True, sorted(self._unseen), sidecar_changed)


@dataclass(frozen=True)
class Reconciliation:
    """Everything :func:`reconcile` decided, for callers that want it at once."""

    to_index: list[Decision]
    unchanged: int
    result: ReconcileResult

    @property
    def complete(self) -> bool:
        return self.result.complete

    @property
    def gone(self) -> list[str]:
        return self.result.gone


def reconcile(
    stored: Mapping[str, BlobState],
    listing: Iterable[BlobEntry],
    *,
    complete: Callable[[], bool] | None = None,
    is_image: Callable[[str], bool] = is_image_name,
) -> Reconciliation:
    """Run a whole listing through a :class:`Reconciler`.

    ``complete`` tells whether the listing finished; by default it is read from the
    listing's own ``complete`` attribute (a :class:`~.listing.Listing`), else assumed false.
    """
    rec = Reconciler(stored, is_image=is_image)
    to_index = [d for e in listing if (d := rec.feed(e)) is not None and d.kind != "unchanged"]
    done = complete() if complete is not None else bool(getattr(listing, "complete", False))
    return Reconciliation(to_index, rec.unchanged, rec.finish(done))
