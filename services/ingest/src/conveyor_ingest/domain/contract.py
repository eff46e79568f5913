"""A project's data contract: does a record meet it, and what exactly is wrong when it does not."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor_contracts.project import FieldSpec, FieldType, ModelProject


@dataclass(frozen=True)
class Accepted:
    record_id: str
    entity_id: str
    event_time: datetime
    fields: dict[str, Any]
    flags: tuple[str, ...] = ()  # quality findings it was accepted with


class ContractViolation(ValueError):
    """Every failing field of one record, each with why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_timestamp(value: Any) -> datetime:
    if isinstance(value, bool):
        raise ValueError("is a boolean, not a timestamp")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("is not a finite number of epoch seconds")
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
        if parsed.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone")
        return parsed.astimezone(UTC)
    raise ValueError(f"is a {type(value).__name__}, not a timestamp")


def _check(name: str, spec: FieldSpec, value: Any) -> tuple[Any, list[str]]:
    """The normalized value and the problems with it."""
    kind = spec.type
    if kind == FieldType.TIMESTAMP:
        try:
            return parse_timestamp(value).isoformat(), []
        except ValueError as exc:
            return value, [f"{name}: {exc}"]
    if kind == FieldType.BOOLEAN:
        ok = isinstance(value, bool)
        return value, [] if ok else [f"{name}: {value!r} is not a boolean"]
    if kind == FieldType.STRING:
        if not isinstance(value, str):
            return value, [f"{name}: {value!r} is not a string"]
        problems = []
        if spec.allowed is not None and value not in spec.allowed:
            problems.append(f"{name}: {value!r} is not one of {spec.allowed}")
        if spec.pattern is not None and re.fullmatch(spec.pattern, value) is None:
            problems.append(f"{name}: {value!r} does not match {spec.pattern!r}")
        return value, problems
    # numbers
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value, [
            f"{name}: {value!r} is not a{'n integer' if kind == FieldType.INTEGER else ' number'}"
        ]
    if kind == FieldType.INTEGER and isinstance(value, float):
        if not value.is_integer():
            return value, [f"{name}: {value!r} is not an integer"]
        value = int(value)
    if not math.isfinite(value):
        return value, [f"{name}: {value!r} is not a finite number"]
    problems = []
    if spec.min is not None and value < spec.min:
        problems.append(f"{name}: {value!r} is below the minimum {spec.min:g}")
    if spec.max is not None and value > spec.max:
        problems.append(f"{name}: {value!r} is above the maximum {spec.max:g}")
    return value, problems


def derive_record_id(project: str, source: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps(
        [project, source, fields], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def validate(
    spec: ModelProject,
    fields: Any,
    *,
    record_id: str | None,
    source: str,
    now: datetime,
    size_at_most: int | None = None,
) -> Accepted:
    """Check a record against the contract; raises ContractViolation naming every problem.
    `size_at_most` bounds the record's encoded size (the message that carried it): within the
    limit, the record need not be encoded again to be measured."""
    if not isinstance(fields, dict):
        raise ContractViolation([f"record: expected a JSON object, got {type(fields).__name__}"])
    schema = spec.record_schema
    problems: list[str] = []
    if size_at_most is None or size_at_most > schema.max_bytes:
        size = len(json.dumps(fields, default=str).encode())
        if size > schema.max_bytes:
            problems.append(f"record: {size} bytes is over the limit of {schema.max_bytes}")
    for name in sorted(set(fields) - set(schema.fields)):
        problems.append(f"{name}: not a field of project {spec.name!r}")
    normalized: dict[str, Any] = {}
    for name, field_spec in schema.fields.items():
        value = fields.get(name)
        if value is None:
            if field_spec.required:
                problems.append(f"{name}: required")
            continue
        normalized[name], found = _check(name, field_spec, value)
        problems.extend(found)
    if problems:
        raise ContractViolation(problems)
    event_time = (
        parse_timestamp(normalized[spec.event_time_field])
        if spec.event_time_field and spec.event_time_field in normalized
        else now
    )
    return Accepted(
        record_id=record_id or derive_record_id(spec.name, source, normalized),
        entity_id=str(normalized[spec.entity_key]),
        event_time=event_time,
        fields=normalized,
    )
