from datetime import UTC, datetime

import pytest

from conveyor_examples import load_project
from conveyor_ingest.domain.contract import ContractViolation, derive_record_id, validate

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
