"""``imgrag doctor``: ask the embedder what it serves, on demand, and compare with the index.

Searches trust the collection's record and send nothing but their own request; this is the
one command that spends a request to check that record still holds: the endpoint answers,
the key is accepted, and the deployment serves the model and dimension the index was made
with.
"""

from __future__ import annotations

from imgrag.pipeline.core import Core
from imgrag.pipeline.door import open_door
from imgrag.pipeline.runtime import probe
from pydantic import BaseModel


class Checkup(BaseModel):
    """What ``imgrag doctor`` found."""

    ok: bool
    answered_by: str
    """Who holds the index: "no daemon running", or the daemon's pid and sources."""
    store: dict[str, object]
    collection: dict[str, object]
    """What the collection was made with ({} when it does not exist yet)."""
    embedder: dict[str, object]
    """What the configured embedder serves now (it was just asked)."""
    problems: list[str]


async def checkup(core: Core) -> Checkup:
    """Probe the embedder (one small billed request for a remote one) and compare."""
    async with await open_door(core) as door:
        report = await door.status()
        where = door.where
    made = {k: v for k, v in report.embedder.items() if v is not None}
    family = str(made.get("family") or "")
    embedder = core.create_embedder(family=family)
    try:
        await probe(embedder)
        info = embedder.info
    finally:
        await embedder.aclose()
    now: dict[str, object] = {
        "provider": info.provider,
        "model": info.model,
        "family": info.family,
        "dimension": info.dimension,
    }
    problems = _differences(made, now)
    return Checkup(
        ok=not problems,
        answered_by=where,
        store=dict(report.store),
        collection=made,
        embedder=now,
        problems=problems,
    )


def _differences(made: dict[str, object], now: dict[str, object]) -> list[str]:
    if not made.get("model"):
        return []  # no collection yet: the first ingest makes it for this embedder
    problems = []
    if str(made["model"]).lower() != str(now["model"]).lower():
        problems.append(
            f"the index was made with {made['model']}, the config names {now['model']}: "
            "set [embedder] model back, or use another collection ([store] collection)"
        )
    if made.get("dimension") not in (None, now["dimension"]):
        problems.append(
            f"the index holds {made['dimension']}-dimension vectors, the deployment now "
            f"serves {now['dimension']}: set [embedder] dimensions, or use another collection"
        )
    return problems
