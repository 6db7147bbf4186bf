"""Reading a file of the folder safely: only a regular file whose real path is inside the
root, its size checked before a byte is read, and an open that never blocks."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from imgrag._errors import ReadRefused
from imgrag.pipeline.names import stored

_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO opens at once instead of waiting for a writer
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_NOFOLLOW", 0)  # the path is already resolved; a swapped-in link fails
    | getattr(os, "O_CLOEXEC", 0)
)


def read_inside(path: Path, real_root: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """The bytes of ``path`` and its stat, taken from the same open file.

    ``real_root`` must be a resolved path. FileNotFoundError means the file is gone; every
    other refusal is ReadRefused.
    """
    try:
        real = os.path.realpath(path, strict=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ReadRefused(f"{stored(path.name)}: a loop of symbolic links") from None
        raise
    if os.path.commonpath([real, real_root]) != str(real_root):
        raise ReadRefused(f"{stored(path.name)}: a link to a file outside the folder")
    try:
        fd = os.open(real, _FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a link since it was resolved
            message = f"{stored(path.name)}: changed into a symbolic link while read"
            raise ReadRefused(message) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ReadRefused(f"{stored(path.name)}: not a regular file ({_kind(st.st_mode)})")
        if st.st_size > limit:
            raise ReadRefused(
                f"{stored(path.name)}: {st.st_size:,} bytes is over the {limit:,}-byte limit",
                too_large=True,
            )
        chunks: list[bytes] = []
        left = st.st_size + 1  # one byte more tells that it grew while read
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise ReadRefused(f"{stored(path.name)}: over the {limit:,}-byte limit", too_large=True)
        return data, st
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"
