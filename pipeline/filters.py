"""Simple search filters (a dict) turned into Qdrant filters."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator, Mapping
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
MAX_DEPTH = 32
"""Deepest nesting a filter may have (objects and lists both count)."""
_INT64 = 2**63
_KEY = re.compile(r"[A-Za-z_][\w-]*(\[\d*\])?(\.[A-Za-z_][\w-]*(\[\d*\])?)*", re.ASCII)
"""A payload key: a name, dotted names for nested fields, ``[]`` for arrays."""


def build_filter(spec: Mapping[str, Any] | qm.Filter | None) -> qm.Filter | None:
    """``{"folder": "cats", "tags": ["beach"], "taken_after": "2024-01-01"}`` → qm.Filter.

    ``tags`` requires every listed tag; ``folder`` and other keys match payload values
    exactly (a list matches any of its values). A ``qm.Filter``, or its dict form with
    must/should/must_not, passes through unchanged.
    """
    if spec is None:
        return None
    if isinstance(spec, qm.Filter):
        return checked(spec)
    if not isinstance(spec, Mapping):
        raise FilterError(f'filter: give an object such as {{"folder": "cats"}}, not {spec!r}')
    if too_deep(spec, MAX_DEPTH):
        raise FilterError(f"filter: nested more than {MAX_DEPTH} deep")
    try:
        if any(k in spec for k in ("must", "should", "must_not", "min_should")):
            flt: qm.Filter | None = qm.Filter.model_validate(spec)
        else:
            flt = _simple(spec)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise FilterError(f"filter {where}: {err['msg']}") from None
    return checked(flt) if flt is not None else None


def _simple(spec: Mapping[str, Any]) -> qm.Filter | None:
    must: list[qm.Condition] = []
    for key, value in spec.items():
        _key(key)
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
    problem = f"filter {key!r}: {value!r} is not a size in bytes like 100000"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FilterError(problem)
    try:
        size = int(value)
    except ValueError:
        raise FilterError(problem) from None
    if not 0 <= size < _INT64:
        raise FilterError(problem)
    return size


def too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` (JSON-like: dicts, lists) nests deeper than ``limit``; iterative,
    so a hostile depth costs no recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple | set):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def checked(flt: qm.Filter, depth: int = 1) -> qm.Filter:
    """``flt`` when every index can run it: bounded depth, valid payload keys, point ids
    that are UUIDs, 64-bit integers, finite ranges, no geo conditions; else a FilterError
    naming what is wrong."""
    if depth > MAX_DEPTH:
        raise FilterError(f"filter: nested more than {MAX_DEPTH} deep")
    for cond in _all_conditions(flt):
        if isinstance(cond, qm.Filter):
            checked(cond, depth + 1)
        elif isinstance(cond, qm.FieldCondition):
            _field(cond)
        elif isinstance(cond, qm.HasIdCondition):
            for pid in cond.has_id:
                _point_id(pid)
        elif isinstance(cond, qm.IsEmptyCondition):
            _key(cond.is_empty.key)
        elif isinstance(cond, qm.IsNullCondition):
            _key(cond.is_null.key)
        elif isinstance(cond, qm.NestedCondition):
            _key(cond.nested.key)
            checked(cond.nested.filter, depth + 1)
        elif not isinstance(cond, qm.HasVectorCondition):
            raise FilterError(f"filter: {type(cond).__name__} is not supported")
    return flt


def _all_conditions(flt: qm.Filter) -> Iterator[Any]:
    for group in (flt.must, flt.should, flt.must_not):
        if group is not None:
            yield from group if isinstance(group, list) else [group]
    if flt.min_should is not None:
        yield from flt.min_should.conditions


def _key(key: Any) -> None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise FilterError(
            f"filter: {key!r} is not a payload key (letters, digits, _ and -, dotted for nested)"
        )


def _point_id(pid: Any) -> None:
    if isinstance(pid, int) and not isinstance(pid, bool) and 0 <= pid < 2 * _INT64:
        return
    try:
        uuid.UUID(str(pid))
    except ValueError:
        raise FilterError(f"filter has_id: {pid!r} is not a point id (a UUID)") from None


def _field(cond: qm.FieldCondition) -> None:
    _key(cond.key)
    if cond.geo_bounding_box or cond.geo_radius or cond.geo_polygon:
        raise FilterError(f"filter {cond.key!r}: geo conditions are not supported")
    numbers: list[Any] = []
    match = cond.match
    if isinstance(match, qm.MatchValue):
        numbers.append(match.value)
    elif isinstance(match, qm.MatchAny):
        numbers += list(match.any)
    elif isinstance(match, qm.MatchExcept):
        numbers += list(match.except_)
    for value in numbers:
        if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
            raise FilterError(f"filter {cond.key!r}: {value} is out of the 64-bit integer range")
    bounds = [cond.range, cond.values_count]
    for rng in bounds:
        if rng is None or isinstance(rng, qm.DatetimeRange):
            continue
        for value in (rng.gt, rng.gte, rng.lt, rng.lte):
            if value is not None and not (math.isfinite(value) and abs(value) < _INT64):
                raise FilterError(f"filter {cond.key!r}: range bound {value} is out of range")


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
