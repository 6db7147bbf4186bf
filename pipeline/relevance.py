"""Relevance floors: the score below which a hit is only as close as unrelated things are.

Cosine scores mean different things per model and per query kind (an image query scores
every photo higher than a text query does). Each floor is the median best score of unrelated
queries on scikit-image's bundled photos, measured by ``python -m bench.relevance_floor``
(the README says how): half of unrelated queries fall below it. A hit below its floor is
``weak``; a search whose hits are all weak found nothing relevant.
"""

from __future__ import annotations

from typing import Literal

QueryKind = Literal["text", "image"]

# Measured with `python -m bench.relevance_floor` (see the JSON it prints: "floor").
# The offline model: half of its correct text hits, and every cropped copy, stay above.
FLOORS: dict[str, dict[QueryKind, float]] = {
    "tiny": {"text": 0.05, "image": 0.55},
    "imgrag-local-conse": {"text": 0.36, "image": 0.95},
}
_LOCAL_PREFIX = "imgrag-local-conse"


def relevance_floor(model: str, kind: QueryKind) -> float | None:
    """The floor for ``model``'s ``kind`` of query, or None when it was never measured."""
    floors = FLOORS.get(model)
    if floors is None and model.startswith(_LOCAL_PREFIX):
        floors = FLOORS.get(_LOCAL_PREFIX)  # every version of the offline recipe
    return None if floors is None else floors.get(kind)
