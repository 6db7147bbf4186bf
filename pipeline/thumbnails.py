"""Thumbnails and full images for the gallery, found by point id and never by a path taken
from a request: the index's payload names the file, and only a file that really lies below
the point's recorded root (and, when given, one of the registered roots) is served."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from imgrag._errors import NotServable
from PIL import Image, ImageOps, UnidentifiedImageError

THUMB_SIZE = 256
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


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


def cached_path(point_id: str, sha256: str, cache: Path) -> Path:
    """Where the thumbnail of ``point_id`` at content ``sha256`` lives in ``cache``.

    The name holds the content hash, so an edited file gets a fresh thumbnail.
    """
    digest = sha256[:16]
    if not re.fullmatch(r"[0-9a-f]*", digest):
        digest = ""
    return cache / f"{point_id}-{digest or 'x'}.webp"


def save_thumbnail(point_id: str, sha256: str, image: Image.Image, cache: Path) -> Path:
    """Write the ~256 px WebP of an already opened ``image`` into ``cache``; return its path.

    Ingestion calls this with the image it has just decoded, so the gallery never decodes
    the original again; a thumbnail already cached is kept.
    """
    if not valid_id(point_id):
        raise NotServable("not an image id")
    target = cached_path(point_id, sha256, cache)
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    try:
        image.draft("RGB", (THUMB_SIZE * 2, THUMB_SIZE * 2))  # JPEG: decode at a lower scale
        small = ImageOps.exif_transpose(image)
        small.thumbnail((THUMB_SIZE, THUMB_SIZE))
        if small.mode not in ("RGB", "RGBA"):
            small = small.convert("RGBA" if "A" in small.getbands() else "RGB")
        partial = target.with_suffix(f".{os.getpid()}.part")
        small.save(partial, format="WEBP", quality=80)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as exc:
        raise NotServable(f"no thumbnail can be made of this image: {exc}") from None
    os.replace(partial, target)  # whole files only, even with two writers racing
    for older in cache.glob(f"{point_id}-*.webp"):  # an edited file's former thumbnail
        if older != target:
            older.unlink(missing_ok=True)
    return target


def discard(point_ids: Iterable[str], cache: Path) -> int:
    """Delete the cached thumbnails of points that left the index; how many were removed."""
    removed = 0
    for point_id in point_ids:
        if not valid_id(point_id):
            continue
        for path in cache.glob(f"{point_id}-*.webp"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


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
    target = cached_path(point_id, sha256, cache)
    if target.is_file():
        return target
    try:
        with opener(source) as img:
            return save_thumbnail(point_id, sha256, img, cache)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as exc:
        raise NotServable(f"no thumbnail can be made of this image: {exc}") from None
