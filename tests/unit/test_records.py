"""The shared data contract at its edges: every value it accepts is storable, patterns run in
linear time, and prediction requests are checked with the same code as records."""

from __future__ import annotations

import json
import random
import re
import time
from datetime import UTC, datetime
from functools import partial

import pytest
from pydantic import ValidationError

from conveyor_contracts import MAX_ID_LENGTH
from conveyor_contracts.patterns import fast_matcher, full_matcher
from conveyor_contracts.project import FieldSpec, FieldType, pattern_problems
from conveyor_contracts.records import (
    MAX_INTEGER,
    Contract,
    ContractViolation,
    check_request,
    parse_timestamp,
    validate,
)
from conveyor_examples import load_project

SPEC = load_project("fraud")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
GOOD = {
    "customer": "c-1",
    "ts": "2026-01-01T10:00:00+00:00",
    "amount": 12.5,
    "merchant": "fuel",
    "hour": 9,
    "foreign": False,
}


def _with_fields(spec=SPEC, **fields: FieldSpec):
    schema = spec.record_schema.model_copy(
        update={"fields": spec.record_schema.fields | fields, "max_bytes": 65_536}
    )
    return spec.model_copy(update={"record_schema": schema})


# The fraud project with a free-text entity key (no pattern to hold its length), a free string
# and unbounded numbers: what the contract itself must hold beyond a project's constraints.
FREE = _with_fields(
    customer=FieldSpec(type=FieldType.STRING),
    note=FieldSpec(type=FieldType.STRING, required=False),
    count=FieldSpec(type=FieldType.INTEGER, required=False),
    ratio=FieldSpec(type=FieldType.NUMBER, required=False),
)


def _problems(fields, spec=FREE, **kwargs) -> str:
    kwargs = {"record_id": None, "source": "t", "now": NOW} | kwargs
    contract = Contract(spec)
    with pytest.raises(ContractViolation) as info:
        contract.validate(fields, **kwargs)
    # The full checks say the same as the path a record takes first.
    with pytest.raises(ContractViolation) as full:
        contract._checked(fields, size_at_most=None, **kwargs)
    assert full.value.problems == info.value.problems
    text = str(info.value)
    assert "\x00" not in text and len(text) < 2_000, text
    return text


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1e30, "ts: 1e+30 epoch seconds is not a time in the years 1 to 9999"),
        (-1e30, "ts: -1e+30 epoch seconds is not a time in the years 1 to 9999"),
        (1e12, "not a time in the years 1 to 9999"),  # year 33658: ValueError
        (2**70, "not a time in the years 1 to 9999"),  # beyond time_t: OverflowError
        (10**400, "ts: an integer of about 401 digits epoch seconds is not a time"),
        ("0001-01-01T00:00:00+05:00", "is outside the years 1 to 9999 in UTC"),
        ("9999-12-31T23:00:00-05:00", "is outside the years 1 to 9999 in UTC"),
        ("10000-01-01T00:00:00+00:00", "is not an ISO-8601 timestamp"),
    ],
)
def test_timestamps_out_of_range_are_violations_naming_the_field(ts, expected):
    assert expected in _problems(GOOD | {"ts": ts})
    with pytest.raises(ValueError):
        parse_timestamp(ts)


def test_the_edges_of_the_range_are_accepted():
    for ts in ("0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00", 0, -62135596800):
        accepted = validate(FREE, GOOD | {"ts": ts}, record_id=None, source="t", now=NOW)
        assert 1 <= accepted.event_time.year <= 9999


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"amount": float("nan")}, "amount: nan is not a finite number"),
        ({"ratio": float("inf")}, "ratio: inf is not a finite number"),
        ({"ratio": float("-nan")}, "ratio: nan is not a finite number"),
        ({"note": "a\x00b"}, "note: contains a NUL character"),
        ({"note": "a\ud800b"}, "note: contains a lone surrogate"),
        ({"merchant": "fuel\x00"}, "merchant: contains a NUL character"),
        ({"customer": "c-1\x00"}, "customer: contains a NUL character"),
        ({"amount": 10**400}, "amount: an integer of about 401 digits is beyond the limit"),
        ({"count": 2**63}, f"count: 9223372036854775808 is beyond the limit of ±{MAX_INTEGER}"),
        ({"count": -(2**63)}, "is beyond the limit"),
        ({"count": 1e19}, "count: 10000000000000000000 is beyond the limit"),
        ({"hour": 10**30}, "hour: 1000000000000000000000000000000 is beyond the limit"),
        ({"customer": "c" * 16_384}, "customer: 16384 characters is over the limit of 200"),
        ({"customer": "c-1\n"}, "customer: contains a control character ('\\n') at position 3"),
        ({"customer": "c-\x7f"}, "contains a control character"),
        ({"customer": "c-\x85"}, "contains a control character"),
    ],
)
def test_values_that_cannot_be_stored_are_violations(change, expected):
    assert expected in _problems(GOOD | change)


def test_integers_up_to_the_limit_and_ids_up_to_the_limit_are_accepted():
    fields = GOOD | {"count": MAX_INTEGER, "customer": "é" * MAX_ID_LENGTH, "note": "tab\there"}
    accepted = validate(FREE, fields, record_id="r" * MAX_ID_LENGTH, source="t", now=NOW)
    assert accepted.entity_id == "é" * MAX_ID_LENGTH and accepted.fields["count"] == MAX_INTEGER
    assert validate(FREE, GOOD | {"count": -MAX_INTEGER}, record_id=None, source="t", now=NOW)
    # A no-break space is not a control character (the fast path leaves it to the full checks).
    spaced = validate(FREE, GOOD | {"customer": "c\xa01"}, record_id="a\xa0b", source="t", now=NOW)
    assert spaced.entity_id == "c\xa01" and spaced.record_id == "a\xa0b"


def test_a_nul_in_a_field_name_is_named_without_it():
    text = _problems(GOOD | {"cust\x00omer": 1, "k" * 10_000: 2})
    assert "'cust\\x00omer': not a field of project 'fraud'" in text
    many = _problems(GOOD | {f"x{i}": i for i in range(100)})
    assert "and 80 more unknown fields" in many


def test_a_record_id_or_source_that_is_not_an_id_is_a_violation():
    too_long = _problems(GOOD, record_id="r" * 201)
    assert "record_id: 201 characters is over the limit of 200 for an id" in too_long
    assert "record_id: contains a control character ('\\x00')" in _problems(GOOD, record_id="r\x00")
    assert "source: contains a control character" in _problems(GOOD, source="kafka\x00")


def test_huge_integers_anywhere_do_not_crash_the_checks():
    # json.dumps and repr() raise on integers of more than 4,300 digits
    huge = 10**5000
    assert "record: holds an integer too long to encode" in _problems(GOOD | {"amount": huge})
    assert "not a field" in _problems(GOOD | {"x": [huge]})


# --- patterns ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [r"^(a+)\1$", r"^(?=c-)c-[0-9]+$", r"^(?!x)[a-z]+$", r"(?<=a)b", r"(?P<x>a)(?P=x)"],
)
def test_a_pattern_re2_cannot_match_is_refused_at_apply(pattern):
    (problem,) = pattern_problems({"note": FieldSpec(type=FieldType.STRING, pattern=pattern)})
    assert "is not one RE2 can match" in problem and "backreferences or lookarounds" in problem
    # Read back from the changelog (applied before patterns were held to RE2), the spec still
    # reads, and its pattern matches nothing rather than run on a backtracking engine.
    spec = _with_fields(note=FieldSpec(type=FieldType.STRING, pattern=pattern))
    with pytest.raises(ContractViolation, match="does not match"):
        Contract(spec).validate(GOOD | {"note": "aa"}, record_id=None, source="t", now=NOW)


@pytest.mark.parametrize("pattern", ["[a", "\\", "a{99999999999}", "(" * 5000 + ")" * 5000])
def test_a_pattern_python_cannot_compile_is_a_validation_error(pattern):
    # Found by the OpenAPI fuzzer: each of these was a 500 from the registry's POST /projects,
    # as `re.compile` raised something other than ValueError inside the validator.
    with pytest.raises(ValidationError, match="does not compile"):
        FieldSpec(type=FieldType.STRING, pattern=pattern)


def test_a_catastrophic_pattern_is_matched_in_linear_time():
    """Patterns on which a backtracking engine takes exponential time in the value's length
    (the second blocked an event loop for 0.9 s on a value of 30 characters)."""
    for pattern in (r"^(a+)+$", r"^(([a-z])+.)+[A-Z]([a-z])+$", r"^(a|a)*$", r"^(a|aa)+$"):
        spec = _with_fields(note=FieldSpec(type=FieldType.STRING, pattern=pattern))
        contract = Contract(spec)
        value = "a" * 20_000 + "!"
        started = time.perf_counter()
        with pytest.raises(ContractViolation, match="does not match"):
            contract.validate(GOOD | {"note": value}, record_id=None, source="t", now=NOW)
        assert time.perf_counter() - started < 0.5, pattern


def test_re2_matches_whole_values_as_python_re_did():
    patterns = [
        "^c-[0-9]{1,8}$",
        "c-[0-9]+",
        "a|ab",
        "(ab)*",
        "x?y",
        "[a-z]+(-[a-z]+)*",
        "^cellar-[0-9]+$",
        r"\d{3}",
        ".*",
        "[^/]+",
        "(?i)abc",
    ]
    values = ["", "c-1", "c-12345678", "c-123456789", "c-1\n", "a", "ab", "abab", "aba", "y"]
    values += ["xy", "x", "abc-def", "ABC", "cellar-7", "123", "12a", "a/b", "é", "ab\n", "\n"]
    for pattern in patterns:
        full, fast = full_matcher(pattern), fast_matcher(pattern)
        for value in values:
            expected = re.fullmatch(pattern, value) is not None
            assert full(value) is expected, (pattern, value)
            assert bool(fast(value)) is expected, (pattern, value)


# --- requests -----------------------------------------------------------------------------------


def _request_problems(fields, spec=FREE) -> str:
    contract = Contract(spec)
    with pytest.raises(ContractViolation) as info:
        contract.check_request(fields)
    text = str(info.value)
    assert "\x00" not in text
    return text


def test_a_request_needs_only_its_entity_key():
    request = check_request(SPEC, {"customer": "c-7"})
    assert request.entity_id == "c-7" and request.event_time is None
    assert request.fields == {"customer": "c-7"}
    full = check_request(SPEC, GOOD | {"ts": "2026-01-01T10:00:00+01:00", "hour": 9.0})
    assert full.event_time == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert full.fields["ts"] == "2026-01-01T09:00:00+00:00"
    assert full.fields["hour"] == 9 and isinstance(full.fields["hour"], int)


def test_a_request_without_its_entity_key_is_refused():
    assert _request_problems({"amount": 1.0}) == "customer: required"
    assert "customer: required" in _request_problems({"customer": None})


def test_the_label_of_a_request_is_ignored():
    request = check_request(SPEC, GOOD | {"outcome": "fraud"})
    assert "outcome" not in request.fields
    # whatever it holds: nothing reads it, nothing stores it
    assert "outcome" not in check_request(SPEC, GOOD | {"outcome": "x\x00" * 9}).fields


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"extra": 1}, "extra: not a field of project 'fraud'"),
        ({"amount": "12"}, "amount: '12' is not a number"),
        ({"amount": 10**400}, "amount: an integer of about 401 digits is beyond the limit"),
        ({"amount": float("nan")}, "amount: nan is not a finite number"),
        ({"amount": -1}, "amount: -1 is below the minimum 0"),
        ({"merchant": "casino"}, "merchant: 'casino' is not one of"),
        ({"foreign": "no"}, "foreign: 'no' is not a boolean"),
        ({"ts": 1e30}, "ts: 1e+30 epoch seconds is not a time"),
        ({"ts": "2026-01-01T10:00:00"}, "ts: '2026-01-01T10:00:00' has no time zone"),
        ({"note": "a\x00"}, "note: contains a NUL character"),
        ({"customer": "c\x00"}, "customer: contains a NUL character"),
        ({"customer": "c" * 16_384}, "customer: 16384 characters is over the limit of 200"),
        ({"customer": 7}, "customer: 7 is not a string"),
    ],
)
def test_every_value_a_request_holds_is_checked(change, expected):
    assert expected in _request_problems({"customer": "c-1"} | change)


def test_a_requests_pattern_and_size_are_checked():
    assert "customer: 'x-1' does not match" in _request_problems({"customer": "x-1"}, SPEC)
    big = {"customer": "c-1", "merchant": "m" * 5_000}
    assert "bytes is over the limit of 4096" in _request_problems(big, SPEC)
    assert _request_problems(["c-1"]) == "record: expected a JSON object, got list"


POOLS = {
    "customer": ["c-1", "c-2", "c-1\x00", "c" * 201, "c\n", "c\xa0", 7, None, "\ud800"],
    "ts": [
        "2026-01-01T10:00:00+00:00",
        1767261600,
        1e30,
        -1e30,
        10**400,
        "0001-01-01T00:00:00+05:00",
        "2026-01-01T10:00:00",
        float("nan"),
        None,
    ],
    "amount": [12.5, 0, 10**400, 2**63, float("inf"), float("nan"), True, "1", None],
    "merchant": ["fuel", "online", "fuel\x00", "casino", 3, None],
    "hour": [9, 9.0, 1e19, 2**63, 10**400, 1.5, None],
    "foreign": [False, True, "no", None],
    "outcome": ["legit", None, "x\x00", 10**400],
    "note": ["x", "", "a\x00b", "a\ud800", "tab\t", "é", None],
    "count": [3, MAX_INTEGER, MAX_INTEGER + 1, -MAX_INTEGER - 1, 1e19, None],
    "ratio": [0.5, -1e308, float("nan"), 10**400, None],
}


def _outcome(call):
    try:
        return call()
    except ContractViolation as exc:
        return exc.problems


def test_the_fast_path_agrees_with_the_full_checks_on_poison():
    """Whatever the fast path accepts, and how, is what the full checks make of it — records
    and requests, over values at and beyond every edge."""
    rng = random.Random(11)
    contract = Contract(_with_fields(FREE, customer=FieldSpec(type=FieldType.STRING)))
    patterned = Contract(
        _with_fields(FREE, note=FieldSpec(type=FieldType.STRING, pattern="[a-z]*", required=False))
    )
    fast_taken = 0
    for _ in range(3000):
        fields = {
            name: rng.choice(pool[:2] if rng.random() < 0.8 else pool)
            for name, pool in POOLS.items()
        }
        fields = {k: v for k, v in fields.items() if v is not None or rng.random() < 0.5}
        record_id = rng.choice([None, "r-1", "r\x00", "r" * 201, "r\xa0"])
        for c in (contract, patterned):
            args = {"record_id": record_id, "source": "t", "now": NOW}
            ours = _outcome(partial(c.validate, fields, **args))
            assert ours == _outcome(partial(c._checked, fields, size_at_most=None, **args)), fields
            request = _outcome(partial(c.check_request, fields))
            full = c._problems(
                {k: v for k, v in fields.items() if k != "outcome"}, c.request_fields, None, None
            )
            if isinstance(request, list):
                assert request == full[0], fields
            else:
                assert full[0] == [] and request.fields == full[1], fields
            fast_taken += c._fast(fields, record_id, "t", NOW) is not None
            # Whatever is accepted encodes as strict JSON (what jsonb takes)
            if not isinstance(ours, list):
                json.dumps(ours.fields, allow_nan=False).encode()
    assert fast_taken > 100
