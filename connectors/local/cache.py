"""Where the exported networks and prompt banks live, and how they are written safely."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path


def default_cache_dir() -> Path:
    """``./.imgrag/cache``: used only when no cache folder is given (the pipeline always
    passes its ``StatePaths.cache``)."""
    return Path(".imgrag") / "cache"


def dist_version(dist: str) -> str:
    """Installed version of a distribution, or "absent"."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def versions_key(*parts: str) -> str:
    """Short stable hash of the given parts (versions, recipe fingerprints)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:12]


def onnx_cache_path(cache_dir: Path, stem: str, build_version: str, *dists: str) -> Path:
    """Cache file of a built network, keyed by every version that shapes its bytes: the
    graph-building code (with its opset) and the distributions that carry the weights."""
    from imgrag.connectors.local.graph_builder import OPSET

    key = versions_key(build_version, str(OPSET), *(dist_version(d) for d in dists))
    return cache_dir / f"{stem}-{key}.onnx"


def remove_stale(current: Path) -> None:
    """Delete other builds of the same network (older code or weights) next to ``current``.

    Only files named ``<stem>-<12-character key>.onnx`` are touched, the names this module
    gives; the stems of the two networks do not prefix each other.
    """
    stem = current.name.rsplit("-", 1)[0]
    for old in current.parent.glob(f"{stem}-????????????.onnx"):
        if old != current:
            old.unlink(missing_ok=True)


def write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Let ``write`` fill a temporary file next to ``target``, then rename it into place.

    Readers never see a half-written file and two processes racing write the same bytes,
    so the last rename simply wins.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
