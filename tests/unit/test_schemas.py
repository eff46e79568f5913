"""The committed schemas match the code, and incompatible changes are caught."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from conveyor_contracts import CATALOG
from conveyor_contracts.compat import backward_problems
from conveyor_contracts.events import RecordSubmitted
from conveyor_contracts.schemas import check, render

ROOT = Path(__file__).resolve().parents[2] / "schemas"


def _schema(model: type[BaseModel]) -> dict:
    return model.model_json_schema(mode="serialization")


def test_the_committed_schemas_are_the_export_of_the_code():
    assert check(ROOT) == []


def test_every_topic_has_a_schema_and_a_channel():
    files = render()
    channels = json.loads(files["asyncapi.json"])["channels"]
    for spec in CATALOG:
        assert f"{spec.subject}/v{spec.version}.json" in files
        assert any(c["address"] == spec.name for c in channels.values())
        assert f"`{spec.name}`" in files["topics.md"]


class Old(BaseModel):
    project: str
    amount: float
    note: str | None = None
    kind: Literal["a", "b"] = "a"
    size: int = Field(0, le=100)


def _problems(new_model: type[BaseModel]) -> list[str]:
    return backward_problems(_schema(Old), _schema(new_model))


def test_compatible_changes_pass():
    class NewOptional(Old):
        extra: str | None = None

    class Widened(BaseModel):
        project: str
        amount: float | str
        note: str | None = None
        kind: Literal["a", "b", "c"] = "a"
        size: int = Field(0, le=1000)

    class Removed(BaseModel):
        project: str
        amount: float

    for model in (Old, NewOptional, Widened, Removed):
        assert _problems(model) == [], model.__name__


def test_incompatible_changes_are_caught():
    class NewRequired(Old):
        region: str

    class Narrowed(BaseModel):
        project: str
        amount: int
        note: str | None = None

    class NullDropped(BaseModel):
        project: str
        amount: float
        note: str = ""

    class EnumShrunk(BaseModel):
        project: str
        amount: float
        kind: Literal["a"] = "a"

    class Tightened(BaseModel):
        project: str
        amount: float
        size: int = Field(0, le=10)

    cases = {
        NewRequired: "a new required field",
        Narrowed: "type narrowed",
        NullDropped: "union variant",
        EnumShrunk: "enum values removed",
        Tightened: "maximum tightened",
    }
    for model, expected in cases.items():
        problems = _problems(model)
        assert any(expected in p for p in problems), (model.__name__, problems)


def test_a_removed_union_variant_is_caught():
    class A(BaseModel):
        type: Literal["a"] = "a"

    class B(BaseModel):
        type: Literal["b"] = "b"

    class Both(BaseModel):
        event: A | B = Field(discriminator="type")

    class OnlyA(BaseModel):
        event: A

    assert any("union variant" in p for p in backward_problems(_schema(Both), _schema(OnlyA)))


def test_check_refuses_a_new_minor_version_that_cannot_read_the_old(tmp_path):
    shutil.copytree(ROOT, tmp_path / "schemas")
    root = tmp_path / "schemas"

    class RecordSubmittedV11(RecordSubmitted):
        region: str  # required: old messages do not have it

    (root / "records.submitted" / "v1.1.json").write_text(json.dumps(_schema(RecordSubmittedV11)))
    problems = check(root)
    assert any(
        "records.submitted" in p and "v1.0.json" in p and "new required field" in p
        for p in problems
    ), problems


def test_the_topics_reference_shows_the_generated_topic_table():
    page = (ROOT.parent / "docs" / "reference" / "topics.md").read_text()
    table = render()["topics.md"].split("\n\nEvery topic")[0]
    # The same rows, each schema linked to its payload in the rendered AsyncAPI document.
    linked = re.sub(
        r"\]\(([a-z.]+)/v[0-9.]+\.json\)",
        lambda m: f"](asyncapi.md#{m[1].replace('.', '-')})",
        table,
    )
    assert linked in page


def test_union_variants_are_matched_by_whatever_field_tags_them():
    class Numeric(BaseModel):
        kind: Literal["numeric"] = "numeric"
        field: str

    class Categorical(BaseModel):
        kind: Literal["categorical"] = "categorical"
        field: str
        categories: list[str]

    class Spec(BaseModel):
        features: list[Annotated[Numeric | Categorical, Field(discriminator="kind")]]

    class SpecWithPolicy(Spec):
        policy: str = "off"

    class OnlyNumeric(BaseModel):
        features: list[Numeric]

    assert backward_problems(_schema(Spec), _schema(SpecWithPolicy)) == []
    removed = backward_problems(_schema(Spec), _schema(OnlyNumeric))
    assert any("kind=categorical" in p and "removed" in p for p in removed), removed
