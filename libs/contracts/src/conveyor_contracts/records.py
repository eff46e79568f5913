"""A project's data contract, shared by every service that takes records or requests: does
the data meet it, and what exactly is wrong when it does not."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .project import FieldSpec, FieldType, ModelProject


class Accepted(NamedTuple):
    """A record that met its contract, normalized. (The value types of the per-record path are
    named tuples: immutable, at a third of a frozen dataclass's cost to build.)"""

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


def canonical_utc(text: Any) -> bool:
    """Whether `text`, a timestamp that parsed, is already what `isoformat()` makes of it in UTC
    (what applications send, mostly): then it is kept as it came, not formatted again."""
    return (
        type(text) is str
        and text.endswith("+00:00")
        and text[10] == "T"
        and (len(text) == 25 or (len(text) == 32 and text[19] == "." and text[20:26] != "000000"))
    )


Check = Callable[[Any], tuple[Any, Sequence[str]]]
NONE: tuple[str, ...] = ()


def _checker(name: str, spec: FieldSpec) -> Check:
    """The check of one field: its normalized value and the problems with it. Built once per
    project version, so a record pays for its own values only, not for reading the spec."""
    kind = spec.type
    if kind == FieldType.TIMESTAMP:

        def timestamp(value: Any) -> tuple[Any, Sequence[str]]:
            try:
                return parse_timestamp(value), NONE  # a datetime: see Contract.validate
            except ValueError as exc:
                return value, [f"{name}: {exc}"]

        return timestamp
    if kind == FieldType.BOOLEAN:
        return lambda value: (
            value,
            NONE if isinstance(value, bool) else [f"{name}: {value!r} is not a boolean"],
        )
    if kind == FieldType.STRING:
        allowed = None if spec.allowed is None else frozenset(spec.allowed)
        pattern = None if spec.pattern is None else re.compile(spec.pattern)

        def string(value: Any) -> tuple[Any, Sequence[str]]:
            if not isinstance(value, str):
                return value, [f"{name}: {value!r} is not a string"]
            problems: Sequence[str] = NONE
            if allowed is not None and value not in allowed:
                problems = [f"{name}: {value!r} is not one of {spec.allowed}"]
            if pattern is not None and pattern.fullmatch(value) is None:
                problems = [*problems, f"{name}: {value!r} does not match {spec.pattern!r}"]
            return value, problems

        return string
    integer = kind == FieldType.INTEGER
    lowest, highest = spec.min, spec.max

    def number(value: Any) -> tuple[Any, Sequence[str]]:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value, [f"{name}: {value!r} is not a{'n integer' if integer else ' number'}"]
        if integer and isinstance(value, float):
            if not value.is_integer():
                return value, [f"{name}: {value!r} is not an integer"]
            value = int(value)
        if not math.isfinite(value):
            return value, [f"{name}: {value!r} is not a finite number"]
        problems: Sequence[str] = NONE
        if lowest is not None and value < lowest:
            problems = [f"{name}: {value!r} is below the minimum {lowest:g}"]
        if highest is not None and value > highest:
            problems = [*problems, f"{name}: {value!r} is above the maximum {highest:g}"]
        return value, problems

    return number


# The fast path: a field's value normalized, or FAIL when anything about it is off — then the
# record goes through the full checks above, which name every problem. A record that meets its
# contract (nearly all of them) pays for neither a (value, problems) pair per field nor the
# problem texts: a third of the time the full checks take.
FAIL: Any = object()
Fast = Callable[[Any], Any]


def _fast(spec: FieldSpec) -> Fast:
    kind = spec.type
    if kind == FieldType.TIMESTAMP:

        def timestamp(value: Any) -> Any:
            try:
                return parse_timestamp(value)
            except ValueError:
                return FAIL

        return timestamp
    if kind == FieldType.BOOLEAN:
        return lambda value: value if type(value) is bool else FAIL
    if kind == FieldType.STRING:
        allowed = None if spec.allowed is None else frozenset(spec.allowed)
        match = None if spec.pattern is None else re.compile(spec.pattern).fullmatch
        if match is None:
            if allowed is None:
                return lambda value: value if type(value) is str else FAIL
            members = allowed
            return lambda value: value if type(value) is str and value in members else FAIL

        def string(value: Any) -> Any:
            if type(value) is not str or (allowed is not None and value not in allowed):
                return FAIL
            return value if match(value) is not None else FAIL

        return string
    integer = kind == FieldType.INTEGER
    lowest = -math.inf if spec.min is None else spec.min
    highest = math.inf if spec.max is None else spec.max

    def number(value: Any) -> Any:
        kind = type(value)  # exactly int or float: a bool is neither
        if kind is float:
            if integer:
                if not value.is_integer():  # also false for inf and nan
                    return FAIL
                value = int(value)
            elif not math.isfinite(value):
                return FAIL
        elif kind is not int:
            return FAIL
        return value if lowest <= value <= highest else FAIL

    return number


def derive_record_id(project: str, source: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps(
        [project, source, fields], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class Contract:
    """A project's record schema compiled once (see `contract_of`): a check per field, in the
    schema's order."""

    def __init__(self, spec: ModelProject) -> None:
        schema = spec.record_schema
        self.project = spec.name
        self.max_bytes = schema.max_bytes
        self.known = frozenset(schema.fields)
        self.fields = [(name, f.required, _checker(name, f)) for name, f in schema.fields.items()]
        self.fast = [(name, f.required, _fast(f)) for name, f in schema.fields.items()]
        self.entity_key = spec.entity_key
        self.event_time_field = spec.event_time_field

    def validate(
        self,
        fields: Any,
        *,
        record_id: str | None,
        source: str,
        now: datetime,
        size_at_most: int | None = None,
    ) -> Accepted:
        if type(fields) is dict and (
            (size_at_most is not None and size_at_most <= self.max_bytes)
            or len(json.dumps(fields, default=str).encode()) <= self.max_bytes
        ):
            if (accepted := self._fast(fields, record_id, source, now)) is not None:
                return accepted
        return self._checked(
            fields, record_id=record_id, source=source, now=now, size_at_most=size_at_most
        )

    def _fast(
        self, fields: dict[str, Any], record_id: str | None, source: str, now: datetime
    ) -> Accepted | None:
        """The record normalized when every value meets the contract, else None."""
        if not self.known.issuperset(fields):
            return None
        normalized: dict[str, Any] = {}
        event_time = now
        for name, required, fast in self.fast:
            raw = fields.get(name)
            if raw is None:
                if required:
                    return None
                continue
            value = fast(raw)
            if value is FAIL:
                return None
            if type(value) is datetime:  # a timestamp, stored as ISO 8601 in UTC
                if name == self.event_time_field:
                    event_time = value
                value = raw if canonical_utc(raw) else value.isoformat()
            normalized[name] = value
        return Accepted(
            record_id=record_id or derive_record_id(self.project, source, normalized),
            entity_id=str(normalized[self.entity_key]),
            event_time=event_time,
            fields=normalized,
        )

    def _checked(
        self,
        fields: Any,
        *,
        record_id: str | None,
        source: str,
        now: datetime,
        size_at_most: int | None,
    ) -> Accepted:
        """Every check, each problem named (the fast path's answer for a record that meets
        the contract, without it)."""
        if not isinstance(fields, dict):
            raise ContractViolation(
                [f"record: expected a JSON object, got {type(fields).__name__}"]
            )
        problems: list[str] = []
        if size_at_most is None or size_at_most > self.max_bytes:
            size = len(json.dumps(fields, default=str).encode())
            if size > self.max_bytes:
                problems.append(f"record: {size} bytes is over the limit of {self.max_bytes}")
        if not self.known.issuperset(fields):
            for name in sorted(set(fields) - self.known):
                problems.append(f"{name}: not a field of project {self.project!r}")
        normalized: dict[str, Any] = {}
        event_time = now
        for name, required, check in self.fields:
            value = fields.get(name)
            if value is None:
                if required:
                    problems.append(f"{name}: required")
                continue
            value, found = check(value)
            if found:
                problems.extend(found)
            elif isinstance(value, datetime):  # a timestamp, stored as ISO 8601 in UTC
                if name == self.event_time_field:
                    event_time = value
                value = value.isoformat()
            normalized[name] = value
        if problems:
            raise ContractViolation(problems)
        return Accepted(
            record_id=record_id or derive_record_id(self.project, source, normalized),
            entity_id=str(normalized[self.entity_key]),
            event_time=event_time,
            fields=normalized,
        )


_compiled: dict[int, tuple[ModelProject, Contract]] = {}


def contract_of(spec: ModelProject) -> Contract:
    """`spec`'s compiled contract, kept while the spec object is the one in use."""
    cached = _compiled.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    if len(_compiled) > 256:  # specs replaced by newer versions: start over
        _compiled.clear()
    contract = Contract(spec)
    _compiled[id(spec)] = (spec, contract)
    return contract


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
    return contract_of(spec).validate(
        fields, record_id=record_id, source=source, now=now, size_at_most=size_at_most
    )
