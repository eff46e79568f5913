"""A scored answer goes out as PredictionServed's own JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor_contracts import catalog
from conveyor_contracts.events import PredictionServed
from conveyor_serving.handlers import AnswerJSON, Served


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


def test_answers_scored_together_share_what_they_can_and_stay_the_models_own_json():
    served_at = datetime(2026, 11, 22, 10, 0, 0, 3125, tzinfo=UTC)
    shared = AnswerJSON("fraud", 7, ["amount", "hour"], served_at, 1.25)
    answers = [
        # the model's feature names, then others: their own JSON, not the shared one
        ("req-1", "c-17", "fraud", {"legit": 0.25, "fraud": 0.75}, ["amount", "hour"]),
        ("req-2", "c-18", "legit", {"legit": 1.0, "fraud": 0.0}, ["amount", "hour"]),
        ("req-3", "c-19", "fraud", {"legit": 1e-07, "fraud": 0.9999999}, ["amount", "minute"]),
        # text that JSON must escape, and text beyond ASCII
        ('r"4\\', "c\n\t20", "legit", {"legit": 0.5, "fraud": 0.5}, ["amount", "hour"]),
        ("réq-5 ✓", "c-\u2028", "fraud", {"legit": 0.0, "fraud": 1.0}, ["amount", "hour"]),
    ]
    for i, (request_id, entity_id, label, probabilities, names) in enumerate(answers):
        fields = {
            "request_id": request_id,
            "project": "fraud",
            "entity_id": entity_id,
            "model_version": 7,
            "label": label,
            "probabilities": probabilities,
            "feature_names": names,
            "values": [12.5 + i, -3e-9 * i],
            "requested_at": served_at - timedelta(milliseconds=i, microseconds=7),
            "served_at": served_at,
            "latency_ms": 1.25,
        }
        encoded = Served(**fields, json=shared).encoded()
        model = PredictionServed(status="ok", **fields)
        assert encoded.value == model.model_dump_json().encode(), request_id
        assert catalog.PREDICTIONS_RESPONSES.adapter.validate_json(encoded.value) == model
