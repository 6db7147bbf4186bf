"""What the index holds per file, kept in memory compactly between rescans.

A pydantic FileState costs about a kilobyte (an object, its dict, five strings); a rescan
of millions of files needs only size, mtime and the sidecar signature to see a file is
unchanged. So a row here is a tuple of those three and one packed ``bytes`` of the rest
(point id, sha256, embed key: 80 bytes instead of 164 characters), and a FileState is
rebuilt only for the files that changed. ``bench/rescan.py`` measures the bytes per file.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, MutableMapping

from imgrag.connectors.index import FileState

_Row = tuple[int, int, str, bytes] | FileState
_NO_KEY = b""


class KnownFiles(MutableMapping[str, FileState]):
    """path → FileState, stored packed; values that do not pack (an id that is not a
    canonical UUID, a hash that is not 64 lowercase hex digits) are kept as they are."""

    __slots__ = ("_rows",)

    def __init__(self, states: Iterable[FileState] = ()) -> None:
        self._rows: dict[str, _Row] = {}
        for state in states:
            self._rows[state.path] = _pack(state)

    def unchanged(self, path: str, size: int, mtime_ns: int, sidecar: str) -> bool:
        """Whether the index holds ``path`` with this size, mtime and sidecar signature,
        without building its FileState (the whole cost of a rescan of an unchanged file)."""
        row = self._rows.get(path)
        if row is None:
            return False
        if isinstance(row, FileState):
            return row.size == size and row.mtime_ns == mtime_ns and row.sidecar == sidecar
        return row[0] == size and row[1] == mtime_ns and row[2] == sidecar

    def missing_from(self, present: set[str]) -> list[str]:
        """The known paths not in ``present``."""
        return list(self._rows.keys() - present)

    def __getitem__(self, path: str) -> FileState:
        row = self._rows[path]
        if isinstance(row, FileState):
            return row
        size, mtime_ns, sidecar, packed = row
        key = packed[48:]
        return FileState.model_construct(
            id=str(uuid.UUID(bytes=packed[:16])),
            path=path,
            size=size,
            mtime_ns=mtime_ns,
            sha256=packed[16:48].hex(),
            embed_key=key.hex() if key else None,
            sidecar=sidecar,
        )

    def __setitem__(self, path: str, state: FileState) -> None:
        self._rows[path] = _pack(state)

    def __delitem__(self, path: str) -> None:
        del self._rows[path]

    def __contains__(self, path: object) -> bool:
        return path in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def _pack(state: FileState) -> _Row:
    try:
        ident = uuid.UUID(state.id)
        sha = bytes.fromhex(state.sha256)
        key = bytes.fromhex(state.embed_key) if state.embed_key is not None else _NO_KEY
    except ValueError:
        return state
    if (
        str(ident) != state.id
        or len(sha) != 32
        or sha.hex() != state.sha256
        or (state.embed_key is not None and (len(key) != 32 or key.hex() != state.embed_key))
    ):
        return state  # packing would not give back the same strings
    return (state.size, state.mtime_ns, state.sidecar or "", ident.bytes + sha + key)
