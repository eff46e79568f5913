"""Values typed on a command line or read from a CSV cell become the types the project's record
schema declares; one that cannot is a usage error naming the field."""

from __future__ import annotations

import pytest

from conveyor_cli.app import CliError, ExitCode
from conveyor_cli.values import assignments, field_types, row, typed
from conveyor_examples import load_project

TYPES = field_types(load_project("fraud").model_dump(mode="json"))


def test_the_schemas_types_are_read_from_a_spec_as_the_registry_answers():
    assert TYPES["amount"] == "number" and TYPES["hour"] == "integer"
    assert TYPES["foreign"] == "boolean" and TYPES["customer"] == "string"
    assert TYPES["ts"] == "timestamp"


def test_name_value_words_take_their_fields_types_without_quoting():
    words = ["amount=12.5", "hour=9", "foreign=false", "merchant=fuel", "ts=2026-12-07T10:00:00Z"]
    assert assignments(words, TYPES) == {
        "amount": 12.5,
        "hour": 9,
        "foreign": False,
        "merchant": "fuel",
        "ts": "2026-12-07T10:00:00Z",
    }
    # A field the schema does not know stays text: the service refuses it, saying why.
    assert assignments(["colour=red"], TYPES) == {"colour": "red"}
    # Text that merely looks like another type stays text where the field is text.
    assert assignments(["merchant=123", "customer=true"], TYPES) == {
        "merchant": "123",
        "customer": "true",
    }


@pytest.mark.parametrize(
    "kind, raw, expected",
    [
        ("boolean", "Yes", True),
        ("boolean", "0", False),
        ("boolean", "TRUE", True),
        ("integer", "-3", -3),
        ("number", "1e3", 1000.0),
    ],
)
def test_typed_values(kind, raw, expected):
    assert typed(kind, "x", raw) == expected


@pytest.mark.parametrize(
    "word, problem",
    [
        ("hour=noon", "hour: 'noon' is not an integer"),
        ("amount=lots", "amount: 'lots' is not a number"),
        ("foreign=maybe", "foreign: 'maybe' is not true or false"),
        ("amount", "'amount' is not name=value"),
        ("=3", "'=3' is not name=value"),
    ],
)
def test_a_value_that_is_not_of_its_type_is_a_usage_error(word, problem):
    with pytest.raises(CliError) as raised:
        assignments([word], TYPES)
    assert str(raised.value) == problem and raised.value.code == ExitCode.USAGE


def test_an_empty_csv_cell_is_a_value_left_out():
    assert row({"amount": "3", "outcome": "", "hour": None, "": "x"}, TYPES) == {"amount": 3.0}
