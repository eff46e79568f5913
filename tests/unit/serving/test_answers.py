"""A scored answer goes out as PredictionServed's own JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor_contracts import catalog
from conveyor_contracts.events import PredictionServed
from conveyor_serving.handlers import Served


def test_a_scored_answer_is_the_models_own_json():
    requested = datetime(2026, 11, 22, 10, 0, 0, 125, tzinfo=UTC)
    answer = {
        "request_id": "req-1",
        "project": "fraud",
        "entity_id": "c-17",
        "model_version": 3,
        "label": "fraud",
        "probabilities": {"legit": 0.25, "fraud": 0.75},
        "feature_names": ["amount", "hour"],
        "values": [12.5, 9.0],
        "requested_at": requested,
        "served_at": requested + timedelta(milliseconds=3),
        "latency_ms": 0.4375,
    }
    model = PredictionServed(status="ok", **answer)

    encoded = Served(**answer).encoded()

    assert encoded.value == model.model_dump_json().encode()
    assert encoded.type_name == PredictionServed.type_name
    assert catalog.PREDICTIONS_RESPONSES.adapter.validate_json(encoded.value) == model
