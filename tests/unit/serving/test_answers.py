"""A scored answer goes out as PredictionServed's own JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor_contracts import catalog
from conveyor_contracts.events import PredictionEnriched, PredictionServed
from conveyor_serving.handlers import AnswerJSON


def request(request_id: str, entity_id: str, names: list[str], values: list[float], at: datetime):
    return PredictionEnriched(
        request_id=request_id,
        project="fraud",
        project_version=1,
        entity_id=entity_id,
        requested_at=at,
        enriched_at=at,
        feature_names=names,
        values=values,
    )


def answer_model(asked: PredictionEnriched, label: str, probabilities: dict[str, float], **served):
    """The answer as the model itself: what the shared JSON must equal byte for byte."""
    return PredictionServed(
        request_id=asked.request_id,
        project=asked.project,
        entity_id=asked.entity_id,
        status="ok",
        label=label,
        probabilities=probabilities,
        feature_names=asked.feature_names,
        values=asked.values,
        requested_at=asked.requested_at,
        **served,
    )


def test_a_scored_answer_is_the_models_own_json():
    requested = datetime(2026, 11, 22, 10, 0, 0, 125, tzinfo=UTC)
    served = {"model_version": 3, "served_at": requested + timedelta(milliseconds=3)}
    asked = request("req-1", "c-17", ["amount", "hour"], [12.5, 9.0], requested)
    probabilities = {"legit": 0.25, "fraud": 0.75}

    value = AnswerJSON("fraud", 3, ["amount", "hour"], served["served_at"], 0.4375)(
        asked, "fraud", probabilities
    )

    model = answer_model(asked, "fraud", probabilities, latency_ms=0.4375, **served)
    assert value == model.model_dump_json().encode()
    assert catalog.PREDICTIONS_RESPONSES.adapter.validate_json(value) == model


def test_answers_scored_together_share_what_they_can_and_stay_the_models_own_json():
    served_at = datetime(2026, 11, 22, 10, 0, 0, 3125, tzinfo=UTC)
    shared = AnswerJSON("fraud", 7, ["amount", "hour"], served_at, 1.25)
    answers = [
        # the model's feature names, then others: their own JSON, not the shared one
        ("req-1", "c-17", "fraud", {"legit": 0.25, "fraud": 0.75}, ["amount", "hour"]),
        ("req-2", "c-18", "legit", {"legit": 1.0, "fraud": 0.0}, ["amount", "hour"]),
        ("req-3", "c-19", "fraud", {"legit": 1e-07, "fraud": 0.9999999}, ["amount", "minute"]),
        # text that JSON must escape (control characters never reach an id), and beyond ASCII
        ('r"4\\', 'c"/\\20', "legit", {"legit": 0.5, "fraud": 0.5}, ["amount", "hour"]),
        ("réq-5 ✓", "c-\u2028", "fraud", {"legit": 0.0, "fraud": 1.0}, ["amount", "hour"]),
    ]
    for i, (request_id, entity_id, label, probabilities, names) in enumerate(answers):
        requested = served_at - timedelta(milliseconds=i, microseconds=7)
        asked = request(request_id, entity_id, names, [12.5 + i, -3e-9 * i], requested)

        value = shared(asked, label, probabilities)

        model = answer_model(
            asked, label, probabilities, model_version=7, served_at=served_at, latency_ms=1.25
        )
        assert value == model.model_dump_json().encode(), request_id
        assert catalog.PREDICTIONS_RESPONSES.adapter.validate_json(value) == model
