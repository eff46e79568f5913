"""Records → feature vectors. The same function serves training rows and prediction requests.

Per-entity features look only at the entity's records strictly before the moment being
featurized, so a request is enriched exactly as a training row of a record at the same instant
would be, whatever order records arrived in — and a record never sees itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from conveyor_contracts.project import (
    AggregateFeature,
    CategoricalFeature,
    ModelProject,
    NumericFeature,
    SinceLastFeature,
)


class PastRecord(NamedTuple):
    """What the online store keeps of an entity's record. (A named tuple: a request's history
    is read by the hundred rows, and a frozen dataclass cost three times as much to build.)"""

    record_id: str
    event_time: datetime
    values: dict[str, Any]


def numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            x = float(value)  # an int beyond 1.8e308 overflows
        except OverflowError:
            return None
        return x if math.isfinite(x) else None
    return None


_TRANSFORMS = {
    "identity": lambda x: x,
    "log1p": lambda x: math.log1p(max(x, 0.0)),
    "sqrt": lambda x: math.sqrt(max(x, 0.0)),
    "abs": abs,
}


def _finite(x: float, default: float) -> float:
    return x if math.isfinite(x) else default


def featurize(
    spec: ModelProject, fields: dict[str, Any], at: datetime, history: Sequence[PastRecord]
) -> list[float]:
    """The model inputs for `fields` at event time `at`, in `spec.feature_names()` order."""
    earlier = [r for r in history if r.event_time < at]
    ages = [(at - r.event_time).total_seconds() for r in earlier]  # shared by every window
    out: list[float] = []
    for feature in spec.features:
        if isinstance(feature, NumericFeature):
            x = numeric(fields.get(feature.field))
            out.append(
                feature.default
                if x is None
                else _finite(_TRANSFORMS[feature.transform](x), feature.default)
            )
        elif isinstance(feature, CategoricalFeature):
            value = fields.get(feature.field)
            out.extend(1.0 if value == c else 0.0 for c in feature.categories)
        elif isinstance(feature, AggregateFeature):
            out.append(_aggregate(feature, earlier, ages))
        elif isinstance(feature, SinceLastFeature):
            latest = max((r.event_time for r in earlier), default=None)
            out.append(feature.default if latest is None else (at - latest).total_seconds())
    return out


def _aggregate(
    feature: AggregateFeature, earlier: Sequence[PastRecord], ages: Sequence[float]
) -> float:
    """`feature` over the records at most its window old (`ages`: each record's, in seconds)."""
    window = feature.window_s
    in_window = [r for r, age in zip(earlier, ages, strict=True) if age <= window]
    if feature.agg == "count":
        return float(len(in_window))
    assert feature.field is not None
    xs = [x for r in in_window if (x := numeric(r.values.get(feature.field))) is not None]
    if not xs:
        return feature.default
    # fsum is exactly rounded: the same records give the same value in any arrival order.
    if feature.agg == "sum":
        return math.fsum(xs)
    if feature.agg == "mean":
        return math.fsum(xs) / len(xs)
    return float(min(xs) if feature.agg == "min" else max(xs))


def kept_fields(spec: ModelProject) -> list[str]:
    """The fields of a record the online store must keep for per-entity features."""
    return sorted(
        {f.field for f in spec.features if isinstance(f, AggregateFeature) and f.field is not None}
    )


def retention_s(spec: ModelProject) -> float:
    """How long an entity's records matter: the longest window, and a day for `since_last`."""
    windows = [f.window_s for f in spec.features if isinstance(f, AggregateFeature)]
    return max([86_400.0, *windows])


def entity_positions(spec: ModelProject) -> list[int]:
    """The columns that depend on the entity's history (aggregates, time since last)."""
    return [
        i
        for i, (feature, _) in enumerate(spec.columns())
        if isinstance(feature, AggregateFeature | SinceLastFeature)
    ]


def state_fields(spec: ModelProject) -> list[str]:
    """The fields of an entity's newest record that the online state keeps (plain features)."""
    return sorted(
        {f.field for f in spec.features if isinstance(f, NumericFeature | CategoricalFeature)}
    )


def affected_by(spec: ModelProject, late: PastRecord, history: Sequence[PastRecord]) -> list[str]:
    """Ids of the entity's later records whose history-dependent features `late` changes: those
    within the longest window after it, and the next one (its time since last)."""
    later = sorted((r for r in history if r.event_time > late.event_time), key=_at)
    if not later:
        return []
    windows = [f.window_s for f in spec.features if isinstance(f, AggregateFeature)]
    reach = max(windows, default=0.0)
    ids = [r.record_id for r in later if (r.event_time - late.event_time).total_seconds() <= reach]
    if (
        any(isinstance(f, SinceLastFeature) for f in spec.features)
        and later[0].record_id not in ids
    ):
        ids.append(later[0].record_id)
    return ids


def revise(
    spec: ModelProject, old: Sequence[float], at: datetime, history: Sequence[PastRecord]
) -> list[float]:
    """A row's values with its history-dependent columns computed again from `history` (its
    plain columns depend on the record alone and stay)."""
    fresh = featurize(spec, {}, at, history)
    values = list(old)
    for i in entity_positions(spec):
        values[i] = fresh[i]
    return values


def status(at: datetime, source_time: datetime | None, ttl_s: float | None) -> str:
    """`present`, `expired` (its source is older than the TTL) or `missing` (no source)."""
    if source_time is None or source_time > at:
        return "missing"
    if ttl_s is not None and (at - source_time).total_seconds() > ttl_s:
        return "expired"
    return "present"


def _at(record: PastRecord) -> datetime:
    return record.event_time
