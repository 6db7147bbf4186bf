"""``imgrag forget SOURCE``: remove one source's points, failures and registration."""

from __future__ import annotations

import asyncio
from pathlib import Path

from imgrag.connectors.stores import open_index
from imgrag.pipeline.config import Settings
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.names import stored
from imgrag.pipeline.runtime import registry, state_paths
from imgrag.pipeline.sources import SourceError, absolute
from imgrag.pipeline.thumbnails import discard
from pydantic import BaseModel


class Forgotten(BaseModel):
    source: str
    removed: int


async def forget(settings: Settings, source: str) -> Forgotten:
    """Remove every point of ``source`` (a name, or a root folder; a root recorded by points
    from before sources also works). Other sources' points are never read for deletion."""
    reg = registry(settings)
    entry = reg.get(source)
    name = entry.name if entry is not None else None
    root = entry.root if entry is not None else stored(str(absolute(Path(source))))
    paths = state_paths(settings)

    def remove() -> int:
        index = open_index(settings.store, paths)
        try:
            spec = index.recorded_spec(settings.store.collection)
            if spec is None:
                return 0
            index.ensure_collection(spec)
            ids = [
                s.id
                for s in index.file_states()
                if (name is not None and s.source == name) or (s.source is None and s.root == root)
            ]
            for start in range(0, len(ids), 256):
                index.delete_ids(ids[start : start + 256])
            discard(ids, settings.state_dir / "thumbs")
            return len(ids)
        finally:
            index.close()

    removed = await asyncio.to_thread(remove)
    if name is None and removed == 0:
        raise SourceError(f"{source}: no such source; `imgrag sources` lists them")
    if name is not None:
        journal = Journal(paths.journal)
        try:
            journal.forget_source(name)
        finally:
            journal.close()
        reg.remove(name)
    return Forgotten(source=name or root, removed=removed)
