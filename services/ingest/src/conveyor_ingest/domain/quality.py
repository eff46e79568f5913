"""Data quality beyond the contract: findings per record, their shares per batch and window.

A record that meets its contract can still be suspicious: a number far outside what the field
usually holds, a category nobody has seen, an empty optional field that is usually filled. The
checks compare a record with its field specs and with the project's *profile* — statistics of
accepted records, built from the project's first records (or rebuilt on request).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor_contracts.events import FieldQuality, QualityReported
from conveyor_contracts.project import CategoricalFeature, FieldType, ModelProject

CHECKS = ("nulls", "out_of_range", "unseen", "outliers")
_NUMBERS = (FieldType.NUMBER, FieldType.INTEGER)


@dataclass(frozen=True)
class FieldProfile:
    mean: float | None = None
    std: float | None = None
    categories: frozenset[str] | None = None  # None: too many values to be a category


@dataclass(frozen=True)
class Profile:
    records: int
    built_at: datetime
    fields: dict[str, FieldProfile]

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "built_at": self.built_at.isoformat(),
            "fields": {
                name: {
                    "mean": p.mean,
                    "std": p.std,
                    "categories": None if p.categories is None else sorted(p.categories),
                }
                for name, p in self.fields.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        return cls(
            records=int(data["records"]),
            built_at=datetime.fromisoformat(data["built_at"]),
            fields={
                name: FieldProfile(
                    p.get("mean"),
                    p.get("std"),
                    None if p.get("categories") is None else frozenset(p["categories"]),
                )
                for name, p in data["fields"].items()
            },
        )


def build_profile(spec: ModelProject, records: list[dict[str, Any]], at: datetime) -> Profile:
    """Mean and standard deviation of each number, the values of each string field (when there
    are at most `max_categories` of them)."""
    limit = spec.policies.quality.max_categories
    fields: dict[str, FieldProfile] = {}
    for name, field_spec in spec.record_schema.fields.items():
        values = [r[name] for r in records if r.get(name) is not None]
        if field_spec.type in _NUMBERS:
            xs = [float(x) for x in values if isinstance(x, int | float)]
            if len(xs) >= 2:
                fields[name] = FieldProfile(statistics.fmean(xs), statistics.stdev(xs))
        elif field_spec.type == FieldType.STRING and name != spec.entity_key:
            seen = frozenset(str(v) for v in values)
            fields[name] = FieldProfile(categories=seen if len(seen) <= limit else None)
    return Profile(len(records), at, fields)


@dataclass(frozen=True)
class Finding:
    field: str
    check: str
    why: str

    def __str__(self) -> str:
        return f"{self.field}: {self.check}: {self.why}"


class Checker:
    """The record-level checks of one project version and profile, prepared once."""

    def __init__(self, spec: ModelProject, profile: Profile | None) -> None:
        self.spec = spec
        self.policy = spec.policies.quality
        self.profile = profile
        fields = spec.record_schema.fields
        self.ranges = {
            name: (f.expected_min, f.expected_max)
            for name, f in fields.items()
            if f.type in _NUMBERS and (f.expected_min is not None or f.expected_max is not None)
        }
        # A categorical feature's field: a value it does not declare reaches the model as "none
        # of the categories". Other free string fields: against the values in the profile.
        self.categories: dict[str, frozenset[str]] = {
            f.field: frozenset(f.categories)
            for f in spec.features
            if isinstance(f, CategoricalFeature) and fields[f.field].allowed is None
        }
        self.moments: dict[str, tuple[float, float]] = {}
        for name, p in (profile.fields if profile else {}).items():
            if p.categories is not None and name not in self.categories:
                if fields[name].allowed is None and name != spec.label.field:
                    self.categories[name] = p.categories
            if p.mean is not None and p.std:
                self.moments[name] = (p.mean, p.std)
        # Empty optional fields count towards the null share; a missing label is normal.
        self.nullable = [
            name for name, f in fields.items() if not f.required and name != spec.label.field
        ]

    def findings(self, fields: Mapping[str, Any]) -> list[Finding]:
        out: list[Finding] = []
        for name, (low, high) in self.ranges.items():
            x = fields.get(name)
            if x is None:
                continue
            if low is not None and x < low:
                out.append(Finding(name, "out_of_range", f"{x!r} is below the usual {low:g}"))
            elif high is not None and x > high:
                out.append(Finding(name, "out_of_range", f"{x!r} is above the usual {high:g}"))
        for name, known in self.categories.items():
            value = fields.get(name)
            if value is not None and value not in known:
                out.append(Finding(name, "unseen", f"{value!r} is not a known category"))
        z_max = self.policy.outlier_z
        for name, (mean, std) in self.moments.items():
            x = fields.get(name)
            if x is None:
                continue
            z = (float(x) - mean) / std
            if math.fabs(z) > z_max:
                out.append(
                    Finding(name, "outliers", f"{x!r} is {z:+.1f} sd from the profile's mean")
                )
        return out


@dataclass
class Tally:
    """Counts over a batch or window of records."""

    records: int = 0
    flagged: int = 0
    rejected: int = 0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_at: datetime | None = None
    last_at: datetime | None = None

    def add(
        self,
        checker: Checker,
        fields: Mapping[str, Any],
        findings: Sequence[Finding],
        at: datetime,
        *,
        rejected: bool = False,
    ) -> None:
        self.records += 1
        self.first_at = self.first_at or at
        self.last_at = at
        if findings:
            counts = self.counts
            for kind in {(f.field, f.check) for f in findings}:
                counts[kind] += 1
            self.flagged += 1
        self.rejected += rejected
        for name in checker.nullable:
            if fields.get(name) is None:
                self.counts[(name, "nulls")] += 1

    def breaches(self, checker: Checker) -> list[str]:
        policy = checker.policy
        limits = {
            "nulls": policy.max_null_rate,
            "out_of_range": policy.max_out_of_range,
            "unseen": policy.max_unseen,
            "outliers": policy.max_outliers,
        }
        out = []
        for (name, check), n in sorted(self.counts.items()):
            share = n / self.records
            if share > limits[check]:
                out.append(f"{name}: {check} {share:.1%} > {limits[check]:.1%}")
        return out

    def report(self, checker: Checker, version: int, scope: str) -> QualityReported:
        assert self.first_at is not None and self.last_at is not None
        per_field: dict[str, FieldQuality] = {}
        for (name, check), n in self.counts.items():
            per_field.setdefault(name, FieldQuality())
            setattr(per_field[name], check, n)
        return QualityReported(
            project=checker.spec.name,
            project_version=version,
            scope=scope,
            records=self.records,
            flagged=self.flagged,
            rejected=self.rejected,
            fields=dict(sorted(per_field.items())),
            breaches=self.breaches(checker),
            profiled=checker.profile is not None,
            first_at=self.first_at,
            last_at=self.last_at,
        )
