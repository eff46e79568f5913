"""Records → feature vectors. The same function serves training rows and prediction requests.

Per-entity features look only at the entity's records strictly before the moment being
featurized, so a request is enriched exactly as a training row of a record at the same instant
would be, whatever order records arrived in — and a record never sees itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor_contracts.project import (
    AggregateFeature,
    CategoricalFeature,
    ModelProject,
    NumericFeature,
    SinceLastFeature,
)


@dataclass(frozen=True)
class PastRecord:
    """What the online store keeps of an entity's record."""

    record_id: str
    event_time: datetime
    values: dict[str, Any]


def numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
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
            out.append(_aggregate(feature, earlier, at))
        elif isinstance(feature, SinceLastFeature):
            latest = max((r.event_time for r in earlier), default=None)
            out.append(feature.default if latest is None else (at - latest).total_seconds())
    return out


def _aggregate(feature: AggregateFeature, earlier: Sequence[PastRecord], at: datetime) -> float:
    in_window = [r for r in earlier if (at - r.event_time).total_seconds() <= feature.window_s]
    if feature.agg == "count":
        return float(len(in_window))
    assert feature.field is not None
    xs = [x for r in in_window if (x := numeric(r.values.get(feature.field))) is not None]
    if not xs:
        return feature.default
    if feature.agg == "sum":
        return float(sum(xs))
    if feature.agg == "mean":
        return float(sum(xs) / len(xs))
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


def event_time_of(spec: ModelProject, fields: dict[str, Any], default: datetime) -> datetime:
    if spec.event_time_field and isinstance(fields.get(spec.event_time_field), str):
        return datetime.fromisoformat(fields[spec.event_time_field])
    return default
