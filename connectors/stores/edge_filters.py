"""Translate qdrant-client filters (the Index protocol's filter language) into qdrant-edge ones."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import qdrant_edge as qe
from imgrag._errors import StoreError

if TYPE_CHECKING:
    from qdrant_client.http import models as qm
else:
    from imgrag.connectors._qdrant_models import qm


def to_edge_filter(flt: qm.Filter | None) -> qe.Filter | None:
    """The same filter for qdrant-edge; StoreError names any condition it cannot express."""
    if flt is None:
        return None
    min_should = None
    if flt.min_should is not None:
        min_should = qe.MinShould(
            [_condition(c) for c in flt.min_should.conditions], flt.min_should.min_count
        )
    return qe.Filter(
        must=_conditions(flt.must),
        should=_conditions(flt.should),
        must_not=_conditions(flt.must_not),
        min_should=min_should,
    )


def _conditions(value: Any) -> list[Any] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return [_condition(c) for c in items]


def _condition(cond: Any) -> Any:
    if isinstance(cond, qm.Filter):
        return to_edge_filter(cond)
    if isinstance(cond, qm.FieldCondition):
        return _field(cond)
    if isinstance(cond, qm.IsEmptyCondition):
        return qe.IsEmptyCondition(cond.is_empty.key)
    if isinstance(cond, qm.IsNullCondition):
        return qe.IsNullCondition(cond.is_null.key)
    if isinstance(cond, qm.HasIdCondition):
        return qe.HasIdCondition({_point_id(i) for i in cond.has_id})
    if isinstance(cond, qm.HasVectorCondition):
        return qe.HasVectorCondition(cond.has_vector)
    if isinstance(cond, qm.NestedCondition):
        inner = to_edge_filter(cond.nested.filter)
        assert inner is not None
        return qe.NestedCondition(cond.nested.key, inner)
    raise StoreError(f"the embedded store cannot filter on {type(cond).__name__}")


def _point_id(value: Any) -> Any:
    if isinstance(value, int):
        return value
    return str(uuid.UUID(str(value)))


def _field(cond: qm.FieldCondition) -> qe.FieldCondition:
    if cond.geo_bounding_box or cond.geo_radius or cond.geo_polygon:
        raise StoreError("the embedded store does not take geo filters from imgrag")
    values_count = None
    if cond.values_count is not None:
        vc = cond.values_count
        values_count = qe.ValuesCount(lt=vc.lt, gt=vc.gt, lte=vc.lte, gte=vc.gte)
    return qe.FieldCondition(
        cond.key,
        match=_match(cond.match) if cond.match is not None else None,
        range=_range(cond.range) if cond.range is not None else None,
        values_count=values_count,
        is_empty=cond.is_empty,
        is_null=cond.is_null,
    )


def _match(match: Any) -> Any:
    if isinstance(match, qm.MatchValue):
        return qe.MatchValue(match.value)
    if isinstance(match, qm.MatchAny):
        return qe.MatchAny(list(match.any))
    if isinstance(match, qm.MatchExcept):
        return qe.MatchExcept(list(match.except_))
    if isinstance(match, qm.MatchPrefix):
        return qe.MatchPrefix(match.prefix)
    if isinstance(match, qm.MatchSubstring):
        return qe.MatchSubstring(match.substring)
    if isinstance(match, qm.MatchText):
        return qe.MatchText(match.text)
    if isinstance(match, qm.MatchTextAny):
        return qe.MatchTextAny(match.text_any)
    if isinstance(match, qm.MatchPhrase):
        return qe.MatchPhrase(match.phrase)
    raise StoreError(f"the embedded store cannot match with {type(match).__name__}")


def _range(rng: Any) -> Any:
    if isinstance(rng, qm.DatetimeRange):
        return qe.RangeDateTime(
            gte=_iso(rng.gte), gt=_iso(rng.gt), lte=_iso(rng.lte), lt=_iso(rng.lt)
        )
    return qe.RangeFloat(gte=rng.gte, gt=rng.gt, lte=rng.lte, lt=rng.lt)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        # A naive datetime means UTC, as it does for the Qdrant server.
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).isoformat()
    return str(value)
