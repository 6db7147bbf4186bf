"""Disk space for the embedded store: check before writing, reserve what the engine maps.

qdrant-edge creates its write-ahead log segments, vector chunks and payload pages as sparse
files (32 MiB each) and writes them through mmap. On a full filesystem a write into a hole
cannot fail with an error: the kernel kills the process with SIGBUS. So every write first
checks that the free space covers the largest new files one call can start, and, while
the filesystem is tight, the files already there are allocated for real (fallocate), so a
disk filled by another program meanwhile cannot reach them.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path

from imgrag._errors import DiskFull

MB = 1_000_000
MIB = 1024 * 1024

WRITE_ROOM = 72 * MIB
"""Free space an upsert needs besides its own bytes: one call may start a new vector chunk
and a new payload page (32 MiB each, written through mmap in the same call)."""

SMALL_ROOM = 4 * MIB
"""Free space a delete, a flush or an open needs: they only touch files already there."""

RESERVE_BELOW = 1024 * MIB
"""Below this much free space, sparse store files are allocated for real after each write.

Not always: allocated, even an empty store takes the full size of its files (two 32 MiB WAL
segments, a 32 MiB vector chunk and a 32 MiB payload page, and a few small ones),
and with this much room the check before each write already keeps writes out of holes; only
another program filling the last gigabyte between two writes could get past it."""


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def disk_full(report: Path, need: int, probe: Path | None = None) -> DiskFull:
    """The one-line error, with the free space measured now."""
    try:
        free = free_bytes(probe or report)
    except OSError:
        free = 0
    return DiskFull(str(report), free // MB, max(1, math.ceil(need / MB)))


def ensure_room(path: Path, need: int, report: Path) -> None:
    """Raise DiskFull unless the filesystem of ``path`` has ``need`` bytes free."""
    try:
        free = free_bytes(path)
    except OSError:
        return  # cannot tell (the folder may be going away); the write reports its own error
    if free < need:
        raise DiskFull(str(report), free // MB, max(1, math.ceil(need / MB)))


def is_no_space(exc: BaseException) -> bool:
    """Whether an error (ours, the OS's or the engine's text) says the disk is full."""
    if isinstance(exc, DiskFull):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "os error 28" in text or "Disk quota" in text


def reserve(root: Path) -> int:
    """Allocate every sparse file below ``root`` for real; returns the bytes it asked for.

    Raises DiskFull-worthy OSError(ENOSPC) when there is no room; other failures (a
    filesystem without fallocate, a file removed meanwhile) are ignored: the free-space
    check still stands in front of every write.
    """
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows: nothing to do
        return 0
    asked = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
                if st.st_blocks * 512 >= st.st_size:
                    continue
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                # Mode 0 only fills holes with zeroed blocks; data already there is kept.
                os.posix_fallocate(fd, 0, st.st_size)
                asked += st.st_size
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
            finally:
                os.close(fd)
    return asked
