"""A record's announcement is RecordAccepted as the model itself would write it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor_contracts import catalog
from conveyor_contracts.events import RecordAccepted, derived_id
from conveyor_ingest.adapters.repository import SOURCE, announcements

FIELDS = {
    "customer": "c-17",
    "amount": 42.5,
    "merchant": "fuel",
    "hour": 9,
    "foreign": False,
    "ts": "2026-11-22T10:00:00+00:00",
    "note": 'a "quoted" ünïcode \\ line\nbreak',
}


@pytest.mark.parametrize(
    "event_time",
    [
        datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 22, 10, 0, 1, 250, tzinfo=UTC),
    ],
)
@pytest.mark.parametrize("flags", [(), ("amount: outliers: |z| 5.1 > 4",)])
def test_the_value_is_the_models_own_json(event_time, flags):
    ingested_at = datetime.now(UTC) - timedelta(microseconds=7)
    [(key, value, headers)] = announcements(
        [("r-1", "c-17", event_time, FIELDS, flags)], "fraud", 3, ingested_at, {}
    )
    model = RecordAccepted(
        project="fraud",
        project_version=3,
        record_id="r-1",
        entity_id="c-17",
        event_time=event_time,
        ingested_at=ingested_at,
        fields=FIELDS,
        flags=list(flags),
    )
    assert value == model.model_dump_json().encode()
    assert catalog.RECORDS_ACCEPTED.adapter.validate_json(value) == model
    assert key == "c-17"
    named = {k: v.decode() for k, v in headers}
    assert named["ce_id"] == derived_id(SOURCE, "fraud", "r-1")
    assert named["ce_type"] == RecordAccepted.type_name
