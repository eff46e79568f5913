"""A project's data contract, shared by every service that takes records or requests: does
the data meet it, and what exactly is wrong when it does not.

Whatever the contract accepts can be stored and computed with downstream: Postgres (text and
jsonb refuse NUL and lone surrogates, btree index rows are bounded), JSON (no NaN or infinity),
and float64 arithmetic. So beyond the project's own constraints every value is held to these:

- strings hold no NUL character and no lone surrogate;
- numbers are finite, and integers within ±MAX_INTEGER;
- timestamps fall in the years 1 to 9999, also once in UTC;
- ids — the entity key's value, a producer's record id, the source — are at most MAX_ID_LENGTH
  characters and free of control characters.

A record (`Contract.validate`) must meet the whole contract. A prediction request
(`Contract.check_request`) needs its entity key; the other fields may be left out (they come
from the entity's online state) and the label is ignored; every value present is checked as a
record's would be.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import reprlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .patterns import fast_matcher, full_matcher
from .project import FieldSpec, FieldType, ModelProject

MAX_ID_LENGTH = 200
"""Longest id (entity id, record id, source) in characters: ids are keys of btree indexes,
whose rows Postgres bounds, and of Kafka messages."""

MAX_INTEGER = 2**63 - 1
"""Largest integer magnitude a record holds: what a 64-bit integer carries (beyond it a float64
loses the units, and `float()` overflows past 1.8e308)."""

# What an id must not contain: C0 and C1 control characters (NUL among them), DEL, and lone
# surrogates (which no UTF-8 encoder takes). A character class: linear, whatever the input.
_NOT_IN_ID = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class Accepted(NamedTuple):
    """A record that met its contract, normalized. (The value types of the per-record path are
    named tuples: immutable, at a third of a frozen dataclass's cost to build.)"""

    record_id: str
    entity_id: str
    event_time: datetime
    fields: dict[str, Any]
    flags: tuple[str, ...] = ()  # quality findings it was accepted with


class Request(NamedTuple):
    """A prediction request's fields that met the contract, normalized (the label left out)."""

    entity_id: str
    event_time: datetime | None  # its event-time field's, when it has one
    fields: dict[str, Any]


class ContractViolation(ValueError):
    """Every failing field of one record, each with why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlevel = 2


def show(value: Any) -> str:
    """`value` as a problem names it: its repr, shortened (a problem text goes into dead
    letters' headers and the rejects table, whatever the value's size)."""
    if type(value) is int and value.bit_length() > 200:
        # repr() of an integer of more than 4,300 digits raises; the digits say nothing anyway
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    try:
        return _repr.repr(value)
    except ValueError:  # a very long integer inside a list or object
        return f"a {type(value).__name__}"


def _show_name(name: Any) -> str:
    """A field name as a problem names it: as it is, unless it is long or holds what an id may
    not (then its shortened repr)."""
    if isinstance(name, str) and len(name) <= 64 and _NOT_IN_ID.search(name) is None:
        return name
    return show(name)


def id_problem(value: str) -> str | None:
    """Why `value` cannot be an id, or None when it can."""
    if len(value) > MAX_ID_LENGTH:
        return f"{len(value)} characters is over the limit of {MAX_ID_LENGTH} for an id"
    found = _NOT_IN_ID.search(value)
    if found is not None:
        char = found.group()
        what = "a lone surrogate" if _SURROGATE.match(char) else "a control character"
        return f"contains {what} ({char!r}) at position {found.start()}"
    return None


def _string_problem(value: str) -> str | None:
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii() and _SURROGATE.search(value) is not None:
        return "contains a lone surrogate (not valid Unicode)"
    return None


def parse_timestamp(value: Any) -> datetime:
    """An ISO-8601 text with a time zone, or epoch seconds, as a UTC datetime; ValueError when
    it is neither or falls outside the years 1 to 9999."""
    if isinstance(value, bool):
        raise ValueError("is a boolean, not a timestamp")
    if isinstance(value, int | float):
        try:
            if not math.isfinite(value):  # OverflowError for an int beyond float64
                raise ValueError("is not a finite number of epoch seconds")
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            # The platform's time_t, and datetime's years 1 to 9999, bound what converts
            raise ValueError(
                f"{show(value)} epoch seconds is not a time in the years 1 to 9999"
            ) from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{show(value)} is not an ISO-8601 timestamp") from None
        if parsed.tzinfo is None:
            raise ValueError(f"{show(value)} has no time zone")
        try:
            return parsed.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
            raise ValueError(f"{show(value)} is outside the years 1 to 9999 in UTC") from None
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
            NONE if isinstance(value, bool) else [f"{name}: {show(value)} is not a boolean"],
        )
    if kind == FieldType.STRING:
        allowed = None if spec.allowed is None else frozenset(spec.allowed)
        matches = None if spec.pattern is None else full_matcher(spec.pattern)

        def string(value: Any) -> tuple[Any, Sequence[str]]:
            if not isinstance(value, str):
                return value, [f"{name}: {show(value)} is not a string"]
            problems: Sequence[str] = NONE
            if (unstorable := _string_problem(value)) is not None:
                problems = [f"{name}: {unstorable}"]
            if allowed is not None and value not in allowed:
                problems = [*problems, f"{name}: {show(value)} is not one of {spec.allowed}"]
            # RE2 matches UTF-8, which a lone surrogate has no encoding in
            if matches is not None and unstorable is None and not matches(value):
                problems = [*problems, f"{name}: {show(value)} does not match {spec.pattern!r}"]
            return value, problems

        return string
    integer = kind == FieldType.INTEGER
    lowest, highest = spec.min, spec.max

    def number(value: Any) -> tuple[Any, Sequence[str]]:
        if isinstance(value, bool) or not isinstance(value, int | float):
            what = "n integer" if integer else " number"
            return value, [f"{name}: {show(value)} is not a{what}"]
        if integer and isinstance(value, float):
            if not value.is_integer():
                return value, [f"{name}: {show(value)} is not an integer"]
            value = int(value)
        if isinstance(value, float) and not math.isfinite(value):
            return value, [f"{name}: {show(value)} is not a finite number"]
        if isinstance(value, int) and not -MAX_INTEGER <= value <= MAX_INTEGER:
            return value, [f"{name}: {show(value)} is beyond the limit of ±{MAX_INTEGER}"]
        problems: Sequence[str] = NONE
        if lowest is not None and value < lowest:
            problems = [f"{name}: {show(value)} is below the minimum {lowest:g}"]
        if highest is not None and value > highest:
            problems = [*problems, f"{name}: {show(value)} is above the maximum {highest:g}"]
        return value, problems

    return number


def _id_checker(name: str, check: Check) -> Check:
    """`check`, and the value as text must be an id (the entity key's)."""

    def entity(value: Any) -> tuple[Any, Sequence[str]]:
        value, problems = check(value)
        if not problems and (problem := id_problem(str(value))) is not None:
            problems = [f"{name}: {problem}"]
        return value, problems

    return entity


# The fast path: a field's value normalized, or FAIL when anything about it is off — then the
# record goes through the full checks above, which name every problem. A record that meets its
# contract (nearly all of them) pays for neither a (value, problems) pair per field nor the
# problem texts: a third of the time the full checks take.
FAIL: Any = object()
Fast = Callable[[Any], Any]
# Each patterned field remembers up to this many short values that matched (about a megabyte).
_REMEMBERED = 10_000
_REMEMBERED_LENGTH = 64


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
        # `"\x00" in value` and `isascii()` cost a few tens of nanoseconds: only a value with
        # other than ASCII in it is searched for lone surrogates.
        if spec.pattern is None:
            if allowed is None:
                return lambda value: (
                    value
                    if type(value) is str
                    and "\x00" not in value
                    and (value.isascii() or _SURROGATE.search(value) is None)
                    else FAIL
                )
            # A declared value the full checks would refuse is left out: membership says all
            members = frozenset(v for v in allowed if _string_problem(v) is None)
            return lambda value: value if type(value) is str and value in members else FAIL
        match = fast_matcher(spec.pattern)
        # Values seen to match: RE2 takes four times as long as `re` did on a short value, and
        # a patterned field is most often an id that recurs (a customer's records).
        matched: set[str] = set()

        def string(value: Any) -> Any:
            if (
                type(value) is not str
                or (allowed is not None and value not in allowed)
                or "\x00" in value
                or (not value.isascii() and _SURROGATE.search(value) is not None)
            ):
                return FAIL
            if value in matched:
                return value
            if not match(value):
                return FAIL
            if len(value) <= _REMEMBERED_LENGTH:
                if len(matched) >= _REMEMBERED:
                    matched.clear()
                matched.add(value)
            return value

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
                if not -MAX_INTEGER <= value <= MAX_INTEGER:
                    return FAIL
            elif not math.isfinite(value):
                return FAIL
        elif kind is not int or not -MAX_INTEGER <= value <= MAX_INTEGER:
            return FAIL
        return value if lowest <= value <= highest else FAIL

    return number


def _fast_id(fast: Fast) -> Fast:
    """`fast`, and the value as text must be an id (the entity key's)."""

    def entity(value: Any) -> Any:
        value = fast(value)
        if value is FAIL:
            return FAIL
        text = value if type(value) is str else str(value)
        return value if len(text) <= MAX_ID_LENGTH and text.isprintable() else FAIL

    return entity


def _is_id(value: Any) -> bool:
    """The fast path's id check. `isprintable()` is false for every control character and lone
    surrogate (and for a few more, such as a no-break space: those the full checks accept), at
    a fifth of a regular expression search's cost."""
    return type(value) is str and len(value) <= MAX_ID_LENGTH and value.isprintable()


def derive_record_id(project: str, source: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps(
        [project, source, fields], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


# At most this many unknown fields are named in a violation (the rest are counted): a problem
# text must stay small whatever a record holds.
_NAMED_UNKNOWN = 20

Normalized = tuple[dict[str, Any], datetime | None]


class Contract:
    """A project's record schema compiled once (see `contract_of`): a check per field, in the
    schema's order, for records (every required field) and for prediction requests (only the
    entity key required, the label ignored)."""

    def __init__(self, spec: ModelProject) -> None:
        schema = spec.record_schema
        self.project = spec.name
        self.max_bytes = schema.max_bytes
        self.known = frozenset(schema.fields)
        self.entity_key = spec.entity_key
        self.event_time_field = spec.event_time_field
        self.label_field = spec.label.field
        self._sources: set[str] = set()  # sources seen to be ids
        checks: dict[str, Check] = {}
        fasts: dict[str, Fast] = {}
        for name, f in schema.fields.items():
            checks[name], fasts[name] = _checker(name, f), _fast(f)
            if name == spec.entity_key:
                checks[name], fasts[name] = _id_checker(name, checks[name]), _fast_id(fasts[name])
        fields = schema.fields.items()
        self.fields = [(name, f.required, checks[name]) for name, f in fields]
        self.fast = [(name, f.required, fasts[name]) for name, f in fields]
        self.request_fields = [
            (name, name == spec.entity_key, checks[name])
            for name, _ in fields
            if name != self.label_field
        ]
        self.request_fast = [
            (name, name == spec.entity_key, fasts[name])
            for name, _ in fields
            if name != self.label_field
        ]

    def validate(
        self,
        fields: Any,
        *,
        record_id: str | None,
        source: str,
        now: datetime,
        size_at_most: int | None = None,
    ) -> Accepted:
        if (
            type(fields) is dict
            and self._small(fields, size_at_most)
            and (record_id is None or _is_id(record_id))
            and (source in self._sources or self._new_source(source))
        ):
            if (accepted := self._fast(fields, record_id, source, now)) is not None:
                return accepted
        return self._checked(
            fields, record_id=record_id, source=source, now=now, size_at_most=size_at_most
        )

    def check_request(self, fields: Any, *, size_at_most: int | None = None) -> Request:
        """A prediction request's fields checked; raises ContractViolation naming every
        problem. The label field, if sent, is dropped unchecked: nothing reads it (no feature
        may), and an application may build its requests and records from one object."""
        if type(fields) is dict and self.label_field in fields:
            fields = {k: v for k, v in fields.items() if k != self.label_field}
        if type(fields) is dict and self._small(fields, size_at_most):
            fast = self._fast_fields(fields, self.request_fast, None)
            if fast is not None:
                normalized, event_time = fast
                return Request(str(normalized[self.entity_key]), event_time, normalized)
        problems, normalized, event_time = self._problems(
            fields, self.request_fields, None, size_at_most
        )
        if problems:
            raise ContractViolation(problems)
        return Request(str(normalized[self.entity_key]), event_time, normalized)

    def _new_source(self, source: str) -> bool:
        """Whether `source` is an id, remembered when it is: a project's records come from a
        few sources."""
        if not _is_id(source):
            return False
        if len(self._sources) < 64:
            self._sources.add(source)
        return True

    def _small(self, fields: dict[str, Any], size_at_most: int | None) -> bool:
        if size_at_most is not None and size_at_most <= self.max_bytes:
            return True
        try:
            return len(json.dumps(fields, default=str).encode()) <= self.max_bytes
        except ValueError:  # an integer of more than 4,300 digits: the full checks say so
            return False

    def _fast(
        self, fields: dict[str, Any], record_id: str | None, source: str, now: datetime
    ) -> Accepted | None:
        """The record normalized when every value meets the contract, else None."""
        # The loop of _fast_fields, inlined: this is the path every good record takes.
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

    def _fast_fields(
        self,
        fields: dict[str, Any],
        checks: list[tuple[str, bool, Fast]],
        event_time: datetime | None,
    ) -> Normalized | None:
        if not self.known.issuperset(fields):
            return None
        normalized: dict[str, Any] = {}
        for name, required, fast in checks:
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
        return normalized, event_time

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
        problems, normalized, event_time = self._problems(fields, self.fields, now, size_at_most)
        for what, value in (("record_id", record_id), ("source", source)):
            if value is None:
                continue
            if not isinstance(value, str):
                problems.append(f"{what}: {show(value)} is not a string")
            elif (problem := id_problem(value)) is not None:
                problems.append(f"{what}: {problem}")
        if problems:
            raise ContractViolation(problems)
        assert event_time is not None
        return Accepted(
            record_id=record_id or derive_record_id(self.project, source, normalized),
            entity_id=str(normalized[self.entity_key]),
            event_time=event_time,
            fields=normalized,
        )

    def _problems(
        self,
        fields: Any,
        checks: list[tuple[str, bool, Check]],
        event_time: datetime | None,
        size_at_most: int | None,
    ) -> tuple[list[str], dict[str, Any], datetime | None]:
        if not isinstance(fields, dict):
            return [f"record: expected a JSON object, got {type(fields).__name__}"], {}, None
        problems: list[str] = []
        if size_at_most is None or size_at_most > self.max_bytes:
            try:
                size = len(json.dumps(fields, default=str).encode())
            except ValueError:
                problems.append("record: holds an integer too long to encode")
            else:
                if size > self.max_bytes:
                    problems.append(f"record: {size} bytes is over the limit of {self.max_bytes}")
        if not self.known.issuperset(fields):
            unknown = sorted((n for n in fields if n not in self.known), key=str)
            for name in unknown[:_NAMED_UNKNOWN]:
                problems.append(f"{_show_name(name)}: not a field of project {self.project!r}")
            if len(unknown) > _NAMED_UNKNOWN:
                problems.append(f"and {len(unknown) - _NAMED_UNKNOWN} more unknown fields")
        normalized: dict[str, Any] = {}
        for name, required, check in checks:
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
        return problems, normalized, event_time


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


def check_request(spec: ModelProject, fields: Any, *, size_at_most: int | None = None) -> Request:
    """Check a prediction request's fields against the contract (see Contract.check_request)."""
    return contract_of(spec).check_request(fields, size_at_most=size_at_most)
