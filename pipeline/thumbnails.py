"""Thumbnails and full images for the gallery, found by point id and never by a path taken
from a request: the index's payload names the file, and only a file that really lies below
the point's recorded root (and, when given, one of the registered roots) is served.

The cache holds one WebP per content, ``thumbs/<sha256[:2]>/<sha256>.webp``: writing,
finding and removing one is an exact name, never a listing, and a moved, renamed or
copied file shares its thumbnail. A content's thumbnail goes when no point of the index
holds that content any more (``discard``)."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from imgrag._errors import NotServable
from imgrag.connectors.index import Index
from imgrag.pipeline.filters import build_filter
from PIL import Image, ImageOps, UnidentifiedImageError

THUMB_SIZE = 256
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SHA = re.compile(r"^[0-9a-f]{64}\Z")
_FLAT = re.compile(  # the former layout: {point id}-{sha256[:16] or x}.webp, and its partials
    r"^(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"-(?P<digest>[0-9a-f]{1,16}|x)\.(?P<ext>webp|[0-9]+\.part)\Z"
)
LAYOUT = "content-sha256/2"
"""What ``LAYOUT_MARKER`` holds: thumbnails named by content in 256 fan-out folders."""
LAYOUT_MARKER = "LAYOUT"
_ADOPTING = threading.Lock()
_UNWRITABLE: set[Path] = set()
"""Caches this process could not prepare: not tried (listed) again on every request."""
log = logging.getLogger("imgrag.thumbnails")


class LiveRoots(Sequence[Path]):
    """The folders files may be served from, asked of ``current`` on each use: sources are
    added while a server runs."""

    def __init__(self, current: Callable[[], list[Path]]) -> None:
        self._current = current

    def __iter__(self) -> Iterator[Path]:
        return iter(self._current())

    @overload
    def __getitem__(self, index: int) -> Path: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Path]: ...
    def __getitem__(self, index: int | slice) -> Path | Sequence[Path]:
        return self._current()[index]

    def __len__(self) -> int:
        return len(self._current())


def valid_id(point_id: str) -> bool:
    """Whether ``point_id`` has the shape of a point id (a UUID), so it names no file."""
    return bool(_ID.match(point_id))


def file_of(payload: dict[str, Any] | None, roots: Sequence[Path] | None = None) -> Path:
    """The real path of a point's file, checked to lie below its recorded root.

    Raises NotServable when the point is unknown, its root is not registered, the path
    escapes the root (``..``, a link pointing out) or the file is gone.
    """
    if payload is None:
        raise NotServable("no such image in the index")
    root, rel = payload.get("root"), payload.get("path")
    if not isinstance(root, str) or not isinstance(rel, str) or not root or not rel:
        raise NotServable("the index records no file for this image")
    real_root = os.path.realpath(root)
    if roots is not None and real_root not in {os.path.realpath(r) for r in roots}:
        raise NotServable("the image's folder is not one this server serves")
    real = os.path.realpath(os.path.join(real_root, rel))
    if os.path.commonpath([real_root, real]) != real_root or real == real_root:
        raise NotServable("the image's path leaves its folder")
    if not os.path.isfile(real):
        raise NotServable("the image's file is gone")
    return Path(real)


def cached_path(sha256: str, cache: Path) -> Path | None:
    """Where the thumbnail of content ``sha256`` lives in ``cache`` (None: not a SHA-256).

    Named by content alone, so a moved, renamed or copied file shares its thumbnail and an
    edited one gets a fresh one; fanned out by the first two hex digits so no folder holds
    more than 1/256 of the cache. Never a listing: one exact name.
    """
    if not _SHA.match(sha256):
        return None
    return cache / sha256[:2] / f"{sha256}.webp"


def save_thumbnail(sha256: str, image: Image.Image, cache: Path) -> Path:
    """Write the ~256 px WebP of an already opened ``image`` into ``cache``; return its path.

    Ingestion calls this with the image it has just decoded, so the gallery never decodes
    the original again; a thumbnail already cached is kept.
    """
    target = cached_path(sha256, cache)
    if target is None:
        raise NotServable("the index records no content hash for this image")
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
    try:
        image.draft("RGB", (THUMB_SIZE * 2, THUMB_SIZE * 2))  # JPEG: decode at a lower scale
        small = ImageOps.exif_transpose(image)
        small.thumbnail((THUMB_SIZE, THUMB_SIZE))
        if small.mode not in ("RGB", "RGBA"):
            small = small.convert("RGBA" if "A" in small.getbands() else "RGB")
        small.save(partial, format="WEBP", quality=80)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise NotServable(f"no thumbnail can be made of this image: {exc}") from None
    os.replace(partial, target)  # whole files only, even with two writers racing
    return target


def discard(hashes: Iterable[str], cache: Path, held: Callable[[str], bool]) -> int:
    """Delete the thumbnails of contents no point holds any more; how many were removed.

    ``held(sha256)`` says whether a point of the index still has that content (one indexed
    count): a copy elsewhere, or the new name of a renamed file, keeps the thumbnail.
    """
    removed = 0
    for sha256 in dict.fromkeys(hashes):
        target = cached_path(sha256, cache)
        if target is None or held(sha256):
            continue
        try:
            target.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def held_in(index: Index) -> Callable[[str], bool]:
    """``discard``'s question for ``index``: does a point still have this content? One
    count over the keyword-indexed ``sha256`` field, never a scan."""
    return lambda sha256: index.count(build_filter({"sha256": sha256})) > 0


def recorded_sha256(
    payload_of: Callable[[str], dict[str, Any] | None],
) -> Callable[[str], str | None]:
    """``adopt_flat_cache``'s question, asked of a point's payload."""

    def sha256_of(point_id: str) -> str | None:
        payload = payload_of(point_id)
        value = payload.get("sha256") if payload is not None else None
        return value if isinstance(value, str) else None

    return sha256_of


def adopt_flat_cache(cache: Path, sha256_of: Callable[[str], str | None]) -> int:
    """Bring a cache of the former flat layout (``{point id}-{sha256[:16]}.webp``, found by
    listing the whole folder per file) into the content layout, once: each thumbnail whose
    point still holds that content is moved to its content name, the rest are deleted.
    ``sha256_of(point_id)`` is the point's recorded content hash (None: no such point).

    The marker file ``LAYOUT`` says it was done (one stat on every later call); the listing
    of the cache happens this once. Returns how many thumbnails were adopted."""
    marker = cache / LAYOUT_MARKER
    if marker.is_file() or cache in _UNWRITABLE:
        return 0
    with _ADOPTING:
        if marker.is_file() or cache in _UNWRITABLE:
            return 0
        try:
            adopted = _adopt(cache, sha256_of) if cache.is_dir() else 0
            cache.mkdir(parents=True, exist_ok=True)
            marker.write_text(LAYOUT + "\n")
        except OSError as exc:  # a cache that cannot be written: each write says so itself
            log.debug("thumbnail cache %s not prepared: %s", cache, exc)
            _UNWRITABLE.add(cache)
            return 0
    if adopted:
        log.info("moved %d thumbnails into the content-named cache layout", adopted)
    return adopted


def _adopt(cache: Path, sha256_of: Callable[[str], str | None]) -> int:
    adopted = 0
    with os.scandir(cache) as entries:
        flat = [e.name for e in entries if e.is_file(follow_symlinks=False)]
    for name in flat:
        old = _FLAT.match(name)
        if old is None:
            continue  # not a file this cache ever wrote
        sha256 = sha256_of(old["id"]) if old["ext"] == "webp" else None
        target = cached_path(sha256 or "", cache)
        if target is not None and sha256 is not None and sha256[:16] == old["digest"]:
            target.parent.mkdir(exist_ok=True)
            if not target.exists():
                os.replace(cache / name, target)
                adopted += 1
                continue
        (cache / name).unlink(missing_ok=True)
    return adopted


def thumbnail(
    point_id: str,
    payload: dict[str, Any] | None,
    cache: Path,
    roots: Sequence[Path] | None = None,
    opener: Callable[[Path], Image.Image] = Image.open,
) -> Path:
    """A ~256 px WebP of the point's image, made on first request and cached in ``cache``."""
    if not valid_id(point_id):
        raise NotServable("not an image id")
    source = file_of(payload, roots)
    assert payload is not None  # file_of checked it
    sha256 = str(payload.get("sha256") or "")
    target = cached_path(sha256, cache)
    if target is None:
        raise NotServable("the index records no content hash for this image")
    if target.is_file():
        return target
    try:
        with opener(source) as img:
            return save_thumbnail(sha256, img, cache)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as exc:
        raise NotServable(f"no thumbnail can be made of this image: {exc}") from None
