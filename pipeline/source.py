"""The ``Source`` protocol: where images come from, seen by the one indexer and one daemon.

A source lists (or scans) its items, reads one item, describes it for the payload, says how
to follow its changes and how it stands for status. The indexer (``ingest.Indexer``) and
the daemon (``daemon.Daemon``) know nothing else about it. Implementations: a folder
(``source_folder``) and an Azure Blob container prefix (``source_blob``); a new kind of
source is one new module implementing this protocol. (``sources.py`` is something else:
the registry of named sources.)

Every outcome of reading one item comes out of the source as one of a few named errors:
``KeptChanging`` (try again once it is stable), ``ItemGone`` (removed meanwhile),
``ItemUnavailable`` (the store could not be read now: transient), ``ImageRejected``
(``too_large``), ``ReadRefused`` (not ours: not a regular file inside the root) and
``SidecarError``; anything else is a bug, journaled as ``internal_error``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from imgrag.connectors.index import FileState
from imgrag.pipeline.candidates import Rules, Seen
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.known import KnownFiles
from imgrag.pipeline.sidecars import Sidecar

__all__ = [
    "MAX_FILE_BYTES",
    "Change",
    "Follower",
    "Handler",
    "ItemRead",
    "Scan",
    "Seen",
    "Source",
    "Standing",
    "Watched",
    "is_unchanged",
    "needs_work",
]

# No camera writes a bigger image; a bigger "photo" is a video or a disk image by mistake.
MAX_FILE_BYTES = 512 * 10**6


# -- what reconciliation compares -----------------------------------------------------------


def needs_work(known: FileState | None, s: Seen, failed_signature: str | None) -> bool:
    """Whether an item is to be indexed: the index does not hold it as it is now, and it
    did not fail for good with this same signature. The one definition of pending."""
    if known is not None and is_unchanged(known, s):
        return False
    return failed_signature != s.signature


def is_unchanged(known: FileState, s: Seen) -> bool:
    """Whether the index already holds this item as it is (size, mtime, sidecar signature)."""
    return (
        known.size == s.size and known.mtime_ns == s.mtime_ns and (known.sidecar or "") == s.sidecar
    )


@dataclass(slots=True)
class Scan:
    """One listing of a source compared with what the index holds."""

    changed: list[Seen] = field(default_factory=list)
    """Items whose facts differ from the stored ones (new, changed, or sidecars changed)."""
    unchanged: int = 0
    """Items the listing found as the index holds them (counted, no record each)."""
    present: int = 0
    """Items the listing found at all (a listing that finds none may not empty the index)."""
    mine: int = 0
    """Stored items the listing covers (its scope)."""
    gone: list[str] = field(default_factory=list)
    """Stored items positively gone: a complete listing of where they were lacks them."""
    stale_failures: list[str] = field(default_factory=list)
    """Journaled permanent failures of items positively gone (their records are cleared)."""
    unreadable: dict[str, str] = field(default_factory=dict)
    """What could not be listed (where → why); nothing under it is removed."""
    root_missing: bool = False
    """The root itself does not answer (moved, unmounted): nothing is removed."""


@dataclass(slots=True)
class ItemRead:
    """One item read: its bytes, their hash, its sidecar text, and the facts the index keeps."""

    item: Seen
    """The facts as read (a folder: after settling; a blob: size of the bytes, signature of
    the etags downloaded) — what the stored file state records."""
    raw: bytes
    sha256: str
    sidecar: Sidecar
    key: str
    """What the point id hashes with the source name (the path as the OS names it)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """The source's own facts of the read, for ``describe`` (etags, blob metadata...)."""


@dataclass(frozen=True, slots=True)
class Standing:
    """How a source stands for status: whether it answers, and how many items wait."""

    reachable: bool
    pending: int


# -- following changes ---------------------------------------------------------------------


@dataclass(slots=True)
class Change:
    """What a follower saw settle: items to bring in line, and prefixes (folders) gone."""

    items: list[str] = field(default_factory=list)
    gone_prefixes: list[str] = field(default_factory=list)
    redeliver: bool = False
    """The change comes back when it is not handled (a queue message): the handler raises
    instead of keeping it for later."""


Handler = Callable[[Change], Coroutine[Any, Any, None]]
"""What a follower hands each change to (the daemon's ``_apply``)."""

Watched = Literal["gone", "same", "started", "restarted"]
"""A follower's check of its root: does not answer; as before; following starts; following
starts again after it stopped or the root was replaced (a catch-up reconcile is due)."""


class Follower(Protocol):
    """Follows a source's changes (a folder watcher, a queue consumer)."""

    @property
    def mode(self) -> str:
        """How it follows, for status (``native``, ``polling``, ``listing every 60s``...)."""
        ...

    @property
    def waiting(self) -> int:
        """Changes seen and not yet handed over."""
        ...

    def waiting_besides(self, held: AbstractSet[str]) -> int:
        """Changes seen and not yet handed over, but for the items in ``held`` (which the
        daemon counts already): an item is pending once, however often it changes."""
        ...

    def check(self) -> Watched:
        """Whether the root answers; (re)starts following when it came back. Blocking, cheap."""
        ...

    async def follow(self, handle: Handler, tick: float) -> None:
        """Hand every change to ``handle`` until cancelled; raises when following died."""
        ...

    def stop(self) -> None: ...


class Indexed(Protocol):
    """What a follower may ask of the indexer it feeds."""

    @property
    def known(self) -> Mapping[str, FileState]: ...

    journal: Journal


# -- the source ----------------------------------------------------------------------------


class Source(Protocol):
    """Where a source's images are, and everything the indexer and daemon ask of it."""

    name: str
    """The source's name (point ids, journal scope, registry)."""
    rules: Rules
    """Which names are images to index."""

    @property
    def display_root(self) -> str:
        """Where the images are, as status and logs show it (a folder, ``az://...``)."""
        ...

    @property
    def payload_root(self) -> str:
        """What a point's payload records as ``root`` (points from before sources with this
        root are adopted)."""
        ...

    @property
    def local_root(self) -> Path | None:
        """The folder files may be served from; None when items are not local files (then
        the gallery's thumbnails are made from the bytes at hand, also on a reused vector)."""
        ...

    @property
    def task_names(self) -> tuple[str, str]:
        """The daemon's names of the follow and the periodic listing tasks."""
        ...

    @property
    def list_seconds(self) -> float | None:
        """The source's own interval between full listings (None: the daemon's setting)."""
        ...

    def scan(
        self,
        known: KnownFiles,
        permanent: Mapping[str, tuple[str, str]],
        stopping: Callable[[], bool],
    ) -> Scan:
        """List every item and compare with ``known``. Blocking."""
        ...

    def look(self, rel: str) -> Seen | None:
        """One item's facts now; None when it is not there as an image of this source."""
        ...

    def known_gone(self, rels: Iterable[str]) -> list[str]:
        """Of items not found, those positively gone (a missing root proves nothing)."""
        ...

    def prefix_gone(self, prefix: str) -> bool:
        """Whether a folder (a prefix) is positively gone. Blocking."""
        ...

    def expand(self, names: Sequence[str], known: Mapping[str, FileState]) -> list[str]:
        """The items changed names stand for (the image of a sidecar)."""
        ...

    async def read(self, item: Seen) -> ItemRead:
        """Read one item once it is stable; raises the errors of the module docstring."""
        ...

    def describe(self, read: ItemRead) -> tuple[dict[str, Any], dict[str, Any]]:
        """(where the item lives, for the payload; its metadata for ``meta``)."""
        ...

    def refuse_prune(self, count: int) -> str:
        """Why a pass refuses to remove every one of ``count`` indexed items, with the fix."""
        ...

    def listing_problem(self, unreadable: Mapping[str, str], next_in: float) -> tuple[str, str]:
        """(problem key, line or "" when none) after a full listing."""
        ...

    def standing(self, known: Mapping[str, FileState], journal: Journal, backlog: int) -> Standing:
        """Whether it answers (cheaply: never a listing) and how many items wait, given
        ``backlog``: what the daemon saw and has not finished (its kept count)."""
        ...

    def follower(
        self, indexed: Indexed, *, polling: bool = False, settle_seconds: float | None = None
    ) -> Follower:
        """How changes are followed (a folder's: ``polling`` observer, events held until
        ``settle_seconds`` passed; None: the source's own settle time)."""
        ...

    def close(self, *, wait: bool) -> None: ...
