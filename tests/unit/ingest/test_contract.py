from datetime import UTC, datetime

import pytest

from conveyor_contracts.project import FieldSpec, FieldType
from conveyor_contracts.records import (
    Contract,
    ContractViolation,
    canonical_utc,
    derive_record_id,
    parse_timestamp,
    validate,
)
from conveyor_examples import load_project

SPEC = load_project("fraud")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
GOOD = {
    "customer": "c-1",
    "ts": "2026-01-01T10:00:00+01:00",
    "amount": 12.5,
    "merchant": "fuel",
    "hour": 9,
    "foreign": False,
}


def _problems(fields):
    with pytest.raises(ContractViolation) as info:
        validate(SPEC, fields, record_id=None, source="t", now=NOW)
    return info.value.problems


def test_a_good_record_is_normalized():
    accepted = validate(SPEC, GOOD | {"hour": 9.0}, record_id=None, source="t", now=NOW)
    assert accepted.entity_id == "c-1"
    assert accepted.event_time == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert accepted.fields["ts"] == "2026-01-01T09:00:00+00:00"
    assert accepted.fields["hour"] == 9 and isinstance(accepted.fields["hour"], int)


def test_every_failing_field_is_named_with_its_reason():
    problems = _problems(
        GOOD
        | {
            "amount": 120000,
            "merchant": "casino",
            "hour": 1.5,
            "foreign": "no",
            "customer": "x-1",
            "extra": 1,
        }
    )
    text = "; ".join(problems)
    assert "amount: 120000 is above the maximum 100000" in text
    assert "merchant: 'casino' is not one of" in text
    assert "hour: 1.5 is not an integer" in text
    assert "foreign: 'no' is not a boolean" in text
    assert "customer: 'x-1' does not match" in text
    assert "extra: not a field of project 'fraud'" in text
    assert len(problems) == 6


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"amount": -1}, "amount: -1 is below the minimum 0"),
        ({"amount": True}, "amount: True is not a number"),
        ({"amount": float("nan")}, "amount: nan is not a finite number"),
        ({"hour": True}, "hour: True is not an integer"),
        ({"ts": "yesterday"}, "ts: 'yesterday' is not an ISO-8601 timestamp"),
        ({"ts": "2026-01-01T10:00:00"}, "has no time zone"),
        ({"customer": None}, "customer: required"),
        ({"outcome": "maybe"}, "outcome: 'maybe' is not one of"),
    ],
)
def test_each_constraint(change, expected):
    assert expected in "; ".join(_problems(GOOD | change))


def test_the_record_size_limit():
    big = GOOD | {"foreign": "x" * 5000}
    problems = _problems(big)
    assert any("bytes is over the limit of 4096" in p for p in problems)
    # The carrying message's size, when over the limit, makes the record measured all the same.
    with pytest.raises(ContractViolation, match="bytes is over the limit of 4096"):
        validate(SPEC, big, record_id=None, source="t", now=NOW, size_at_most=6000)
    ok = validate(SPEC, GOOD, record_id=None, source="t", now=NOW, size_at_most=300)
    assert ok.entity_id == "c-1"


def test_not_an_object():
    assert _problems(["a"]) == ["record: expected a JSON object, got list"]


def test_record_ids_are_given_or_derived_stably():
    a = validate(SPEC, GOOD, record_id=None, source="s", now=NOW)
    b = validate(SPEC, dict(reversed(GOOD.items())), record_id=None, source="s", now=NOW)
    assert a.record_id == b.record_id == derive_record_id("fraud", "s", a.fields)
    assert validate(SPEC, GOOD, record_id=None, source="other", now=NOW).record_id != a.record_id
    assert validate(SPEC, GOOD, record_id="mine", source="s", now=NOW).record_id == "mine"


VALUES = {
    "customer": ["c-1", "c-12345678", "c-", "x-1", "C-1", 7, None, ["c-1"]],
    "ts": [
        "2026-01-01T10:00:00+00:00",
        "2026-01-01T10:00:00.123456+00:00",
        "2026-01-01T10:00:00.000000+00:00",  # parses, but isoformat() drops the zeros
        "2026-01-01T10:00:00.5+00:00",
        "2026-01-01 10:00:00+00:00",
        "2026-01-01X10:00:00+00:00",
        "2026-01-01T10:00:00,123456+00:00",
        "2026-01-01T10:00:00+01:00",
        "2026-01-01T10:00:00Z",
        "2026-01-01T10:00:00",
        "yesterday",
        1767261600,
        1767261600.25,
        float("inf"),
        True,
        None,
    ],
    "amount": [0, 0.0, 12.5, 100000, 100000.5, -0.01, float("nan"), float("inf"), True, "1"],
    "merchant": ["fuel", "online", "casino", "", 3, None],
    "hour": [0, 23, 9.0, 1.5, 24, -1, float("inf"), False, "9", None],
    "foreign": [True, False, 0, 1, "yes", None],
    "outcome": ["legit", "fraud", "maybe", None],
}


def _outcome(check, fields, size):
    try:
        return check(fields, record_id=None, source="t", now=NOW, size_at_most=size)
    except ContractViolation as exc:
        return exc.problems


# Beside the fraud contract's fields, one of each kind it lacks: a free string, a string with
# both a pattern and allowed values, and numbers without bounds.
EXTRA_FIELDS = {
    "note": FieldSpec(type=FieldType.STRING, required=False),
    "code": FieldSpec(type=FieldType.STRING, allowed=["ab1", "zz"], pattern="^[a-z]+[0-9]$"),
    "count": FieldSpec(type=FieldType.INTEGER),
    "ratio": FieldSpec(type=FieldType.NUMBER, required=False),
}
EXTRA_VALUES = {
    "note": ["", "anything", 5, None],
    "code": ["ab1", "ab1", "zz", "cd2", 1],
    "count": [10**30, -7, 2.0, 2.5, float("nan"), True],
    "ratio": [-1e308, 3, float("-inf"), False, "0.5"],
}


def test_the_fast_path_agrees_with_the_full_checks():
    """Records that meet their contract take a fast path; whatever it accepts, and how, must be
    what the full checks make of the same record — over every value kind a field can get."""
    import json
    import random

    schema = SPEC.record_schema.model_copy(
        update={"fields": SPEC.record_schema.fields | EXTRA_FIELDS}
    )
    contract = Contract(SPEC.model_copy(update={"record_schema": schema}))
    pools = VALUES | EXTRA_VALUES
    rng = random.Random(7)
    fast_taken = 0
    for _ in range(4000):
        # Each pool starts with two good values: mostly one of them, so that many records are
        # good and the rest fail in one or a few fields.
        fields = {
            name: rng.choice(pool[:2] if rng.random() < 0.85 else pool)
            for name, pool in pools.items()
        }
        fields = {k: v for k, v in fields.items() if v is not None or rng.random() < 0.5}
        if rng.random() < 0.05:
            fields["extra"] = 1
        size = len(json.dumps(fields, default=str).encode())
        ours = _outcome(contract.validate, fields, size)
        assert ours == _outcome(contract._checked, fields, size), fields
        fast_taken += contract._fast(fields, None, "t", NOW) is not None
    assert fast_taken > 300


def test_timestamps_kept_as_sent_are_what_isoformat_makes():
    from datetime import timedelta

    start = datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)
    texts = [(start + timedelta(seconds=7919.123457 * i)).isoformat() for i in range(2000)]
    texts += [(start + timedelta(hours=i)).isoformat() for i in range(200)]  # no fraction
    texts += [VALUES["ts"][i] for i in range(10)]
    kept = 0
    for text in texts:
        if canonical_utc(text):
            kept += 1
            assert parse_timestamp(text).isoformat() == text
    assert kept >= 2200
    assert not canonical_utc("2026-01-01T10:00:00.000000+00:00")
