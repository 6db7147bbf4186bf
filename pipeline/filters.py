"""Simple search filters (a dict) turned into Qdrant filters."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from imgrag._errors import FilterError
from pydantic import ValidationError

if TYPE_CHECKING:
    from qdrant_client.http import models as qm
else:
    from imgrag.connectors._qdrant_models import qm

_RANGES = {
    "taken_after": ("taken_at", "gte"),
    "taken_before": ("taken_at", "lt"),
    "ingested_after": ("ingested_at", "gte"),
    "ingested_before": ("ingested_at", "lt"),
}
_SIZES = {"min_size": "gte", "max_size": "lte"}


def build_filter(spec: Mapping[str, Any] | qm.Filter | None) -> qm.Filter | None:
    """``{"folder": "cats", "tags": ["beach"], "taken_after": "2024-01-01"}`` → qm.Filter.

    ``tags`` requires every listed tag; ``folder`` and other keys match payload values
    exactly (a list matches any of its values). A ``qm.Filter``, or its dict form with
    must/should/must_not, passes through unchanged.
    """
    if spec is None or isinstance(spec, qm.Filter):
        return spec
    if not isinstance(spec, Mapping):
        raise FilterError(f'filter: give an object such as {{"folder": "cats"}}, not {spec!r}')
    if any(k in spec for k in ("must", "should", "must_not", "min_should")):
        try:
            return qm.Filter.model_validate(spec)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise FilterError(f"filter {where}: {err['msg']}") from None
    must: list[qm.Condition] = []
    for key, value in spec.items():
        if key in _RANGES:
            field, op = _RANGES[key]
            must.append(
                qm.FieldCondition(key=field, range=qm.DatetimeRange(**{op: _when(key, value)}))
            )
        elif key in _SIZES:
            must.append(
                qm.FieldCondition(key="size", range=qm.Range(**{_SIZES[key]: _bytes(key, value)}))
            )
        elif key == "tags":
            tags = [value] if isinstance(value, str) else value
            if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
                raise FilterError(f"filter 'tags': give a tag or a list of tags, not {value!r}")
            must += [qm.FieldCondition(key="tags", match=qm.MatchValue(value=t)) for t in tags]
        elif isinstance(value, list | tuple | set):
            must.append(qm.FieldCondition(key=key, match=qm.MatchAny(any=list(value))))
        elif isinstance(value, str | int | bool):
            must.append(qm.FieldCondition(key=key, match=qm.MatchValue(value=value)))
        else:
            raise FilterError(f"filter {key!r}: cannot match a {type(value).__name__}")
    return qm.Filter(must=must) if must else None


def _bytes(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FilterError(f"filter {key!r}: {value!r} is not a size in bytes like 100000")
    try:
        return int(value)
    except ValueError:
        raise FilterError(f"filter {key!r}: {value!r} is not a size in bytes like 100000") from None


def _when(key: str, value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise FilterError(f"filter {key!r}: {value!r} is not a date like 2024-01-31") from None


def parse_cli_filters(pairs: list[str]) -> dict[str, Any]:
    """``["folder=cats", "tags=beach", "tags=dog"]`` → ``{"folder": "cats", "tags": [...]}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise FilterError(f"--filter {pair!r}: write key=value, e.g. --filter folder=cats")
        parsed: Any = _bytes(key, value) if key in _SIZES else value
        if key == "tags":
            out.setdefault("tags", []).append(value)
        else:
            out[key] = parsed
    return out
