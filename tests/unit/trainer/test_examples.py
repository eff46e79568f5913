from datetime import UTC, datetime, timedelta

from conveyor_contracts.events import FeatureRowComputed
from conveyor_trainer.domain.examples import materialize, select

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _row(record_id: str, minutes: int, value: float, revision: int = 0) -> FeatureRowComputed:
    return FeatureRowComputed(
        project="p",
        project_version=1,
        record_id=record_id,
        entity_id="e",
        event_time=T0 + timedelta(minutes=minutes),
        feature_names=["x"],
        values=[value],
        label="a",
        revision=revision,
    )


def test_a_revised_row_replaces_the_first_and_an_older_revision_does_not():
    events = [
        _row("r1", 0, 1.0),
        _row("r2", 1, 2.0),
        _row("r2", 1, 2.5, revision=2),
        _row("r2", 1, 2.2, revision=1),  # an older revision read later changes nothing
        _row("r1", 0, 1.0),  # a second copy of the first
    ]
    examples = [materialize(e, "features.rows.v1", 0, i) for i, e in enumerate(events)]
    chosen = select([e for e in examples if e], "p", ["x"], (T0, ""))
    assert [(e.example_id, e.values, e.revision, e.offset) for e in chosen] == [
        ("r1", [1.0], 0, 0),
        ("r2", [2.5], 2, 2),
    ]
