"""Forgetting one source: its points, thumbnails, failures and registration."""

from __future__ import annotations

from pathlib import Path

from imgrag._errors import SourceError
from imgrag.connectors.index import Index
from imgrag.pipeline.core import Core
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.names import stored
from imgrag.pipeline.sources import absolute
from imgrag.pipeline.thumbnails import adopt_flat_cache, discard, held_in, recorded_sha256
from pydantic import BaseModel


class Forgotten(BaseModel):
    source: str
    removed: int


def forget_source(core: Core, index: Index | None, journal: Journal, source: str) -> Forgotten:
    """Remove every point of ``source`` (a name, or a root folder; a root recorded by points
    from before sources also works). Other sources' points are never read for deletion.
    ``index`` is None when the collection does not exist. Blocking."""
    entry = core.registry.get(source)
    name = entry.name if entry is not None else None
    root = entry.root if entry is not None else stored(str(absolute(Path(source))))
    ids: list[str] = []
    if index is not None:
        if name is None:
            name = _index_only(index, source)
        adopt_flat_cache(core.thumbs, recorded_sha256(index.payload_by_id))
        states = index.file_states(source=name) if name is not None else index.file_states()
        mine = [s for s in states if s.source == name or (s.source is None and s.root == root)]
        ids = [s.id for s in mine]
        for start in range(0, len(ids), 256):
            index.delete_ids(ids[start : start + 256])
        # A content another source (or another copy) still holds keeps its thumbnail.
        discard([s.sha256 for s in mine], core.thumbs, held_in(index))
    if name is None and not ids:
        raise SourceError(f"{source}: no such source; `imgrag sources` lists them")
    if name is not None:
        journal.forget_source(name)
        core.registry.remove(name)
    return Forgotten(source=name or root, removed=len(ids))


def _index_only(index: Index, source: str) -> str | None:
    """A source name only the index knows (no registration here), when ``source`` is one."""
    for state in index.file_states(source=source):
        return state.source
    return None
