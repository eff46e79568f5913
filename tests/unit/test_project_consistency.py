"""A project whose parts disagree is refused when applied, each problem named by its JSON path:
what the record contract, the features, the label and the estimator say must fit together, or
something would go wrong without an error. A spec already applied still reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from conveyor_contracts.project import (
    ALLOWED_ESTIMATORS,
    ModelProject,
    SpecProblem,
    consistency_problems,
)
from conveyor_examples import load_project, project_names
from conveyor_feature.domain.features import featurize


def _spec(edit: Callable[[dict[str, Any]], None]) -> ModelProject:
    """The fraud example changed by `edit` (on its JSON, as a project file is written)."""
    body = load_project("fraud").model_dump(mode="json")
    edit(body)
    return ModelProject.model_validate(body)


def _problems(edit: Callable[[dict[str, Any]], None]) -> list[SpecProblem]:
    return consistency_problems(_spec(edit))


def _found(problems: list[SpecProblem], expected: list[tuple[tuple, str]]) -> None:
    """The problems are at these paths, in order, each message saying the fragment given."""
    assert [p.path for p in problems] == [path for path, _ in expected]
    for problem, (_, fragment) in zip(problems, expected, strict=True):
        assert fragment in problem.message, problem.message


def _categorical_hour(body: dict[str, Any]) -> None:
    body["features"][2] = {
        "kind": "categorical",
        "name": "hour_of_day",
        "field": "hour",
        "categories": [str(h) for h in range(24)],
    }


@pytest.mark.parametrize("name", project_names())
def test_the_examples_have_no_problem(name):
    assert consistency_problems(load_project(name)) == []


def test_a_categorical_feature_over_an_integer_field_is_refused_with_what_to_do():
    # Why: a record's integer stays an int, the categories are strings, and 9 != "9": every
    # one-hot column of every record and request would be 0.
    spec = _spec(_categorical_hour)
    values = featurize(spec, {"hour": 9, "merchant": "fuel"}, datetime.now(UTC), [])
    names = spec.feature_names()
    assert [values[names.index(f"hour_of_day={h}")] for h in range(24)] == [0.0] * 24

    (problem,) = consistency_problems(spec)
    assert problem.path == ("features", 2, "field")
    assert problem.message.startswith("features[2].field: categorical feature 'hour_of_day'")
    assert "declared integer" in problem.message
    assert "declare the field `string`" in problem.message
    assert "`numeric` feature" in problem.message


@pytest.mark.parametrize("kind", ["number", "boolean", "timestamp"])
def test_a_categorical_feature_over_any_field_but_a_string_is_refused(kind):
    def edit(body):
        body["record_schema"]["fields"]["hour"] = {"type": kind}
        _categorical_hour(body)

    (problem,) = _problems(edit)
    assert problem.path == ("features", 2, "field") and f"declared {kind}" in problem.message


def test_categories_a_record_cannot_carry_or_listed_twice_are_refused():
    def edit(body):
        body["features"][1]["categories"] = ["grocery", "toys", "fuel", "grocery"]
        body["record_schema"]["fields"]["customer"]["pattern"] = "^c-[0-9]+$"
        body["features"].append(
            {"kind": "categorical", "name": "who", "field": "customer", "categories": ["c-1", "x"]}
        )

    assert [(p.path, p.message) for p in _problems(edit)] == [
        (
            ("features", 1, "categories", 1),
            "features[1].categories[1]: 'toys' is not an allowed value of field 'merchant' "
            "('grocery', 'fuel', 'travel', 'electronics', 'online'): no record could carry "
            "it, so its one-hot column would always be 0",
        ),
        (
            ("features", 1, "categories", 3),
            "features[1].categories[3]: value 'grocery' is listed twice",
        ),
        (
            ("features", 7, "categories", 1),
            "features[7].categories[1]: 'x' does not match the pattern of field 'customer': no "
            "record could carry it, so its one-hot column would always be 0",
        ),
    ]


def test_label_classes_must_be_the_label_fields_allowed_values():
    def edit(body):
        body["label"]["classes"] = ["legit", "fraudulent", "legit"]

    problems = _problems(edit)
    _found(
        problems,
        [
            (("label", "classes", 1), "'fraudulent' is not an allowed value of label field"),
            (("label", "classes", 2), "'legit' is listed twice"),
            (("record_schema", "fields", "outcome", "allowed"), "label value 'fraud'"),
        ],
    )
    assert "so it could never be learned" in problems[0].message
    assert problems[2].message.startswith(
        "record_schema.fields.outcome.allowed: label value 'fraud' is allowed but is not one "
        "of label.classes: records labeled with it would be stored and never trained on"
    )


def test_an_allowed_label_value_that_is_no_class_is_refused():
    def edit(body):
        body["record_schema"]["fields"]["outcome"]["allowed"] = ["legit", "fraud", "unsure"]

    (problem,) = _problems(edit)
    assert problem.path == ("record_schema", "fields", "outcome", "allowed")
    assert "'unsure' is allowed but is not one of label.classes" in problem.message


def test_an_integer_label_takes_classes_as_its_values_read():
    def edit(body):
        body["record_schema"]["fields"]["outcome"] = {
            "type": "integer",
            "required": False,
            "min": 0,
            "max": 1,
        }
        body["label"]["classes"] = ["0", "01", "yes", "2", "1"]

    _found(
        _problems(edit),
        [
            (("label", "classes", 1), "'01' is not an integer as a record's label reads"),
            (("label", "classes", 2), "'yes' is not an integer"),
            (("label", "classes", 3), "'2' is outside the min/max"),
        ],
    )

    def fine(body):
        body["record_schema"]["fields"]["outcome"] = {"type": "integer", "required": False}
        body["label"]["classes"] = ["0", "1", "-1"]

    assert _problems(fine) == []


@pytest.mark.parametrize("kind", ["boolean", "number", "timestamp"])
def test_a_label_field_neither_string_nor_integer_is_refused(kind):
    def edit(body):
        body["record_schema"]["fields"]["outcome"] = {"type": kind, "required": False}

    (problem,) = _problems(edit)
    assert problem.path == ("record_schema", "fields", "outcome", "type")
    assert f"declared {kind}" in problem.message and "declare it `string`" in problem.message


def test_a_numeric_or_aggregate_feature_over_a_string_or_timestamp_is_refused():
    def edit(body):
        body["features"][0]["field"] = "merchant"
        body["features"][4]["field"] = "ts"

    _found(
        _problems(edit),
        [
            (("features", 0, "field"), "declared string: no string reads as a number"),
            (("features", 4, "field"), "aggregate feature 'amount_mean_1h' reads field 'ts'"),
        ],
    )
    assert "or one-hot encode it with a `categorical` feature" in _problems(edit)[0].message


def test_field_constraints_its_type_never_checks_are_refused():
    def edit(body):
        fields = body["record_schema"]["fields"]
        fields["hour"]["allowed"] = ["1", "2"]
        fields["merchant"]["min"] = 0
        fields["amount"]["expected_min"] = 10
        fields["amount"]["expected_max"] = 5
        fields["customer"]["allowed"] = []

    fields = ("record_schema", "fields")
    _found(
        _problems(edit),
        [
            ((*fields, "customer", "allowed"), "no value is allowed"),
            ((*fields, "amount", "expected_min"), "expected_min 10 is above expected_max 5"),
            (
                (*fields, "merchant", "min"),
                "`min` bounds numbers, but the field is declared string",
            ),
            (
                (*fields, "hour", "allowed"),
                "`allowed` constrains strings, but the field is declared integer",
            ),
        ],
    )


def test_an_estimator_that_is_not_allowed_is_refused_with_the_allowed_ones():
    def edit(body):
        body["estimator"]["class_path"] = "sklearn.svm.SVC"

    with pytest.raises(ValidationError) as caught:
        _spec(edit)
    (error,) = caught.value.errors()
    assert error["loc"] == ("estimator", "class_path")
    assert "'sklearn.svm.SVC' is not allowed" in error["msg"]
    assert all(path in error["msg"] for path in ALLOWED_ESTIMATORS)


def test_a_spec_with_problems_still_reads_as_the_changelog_holds_it():
    # Rules checked at apply only: a spec applied before them must still be readable.
    spec = _spec(_categorical_hour)
    again = ModelProject.model_validate(spec.model_dump(mode="json"))
    assert again == spec and consistency_problems(again)
