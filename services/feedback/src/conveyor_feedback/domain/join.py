"""Joining a label to the prediction it judges."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from conveyor_contracts.events import FeedbackRecorded, FeedbackSubmitted
from conveyor_contracts.project import ModelProject


class InvalidFeedback(ValueError):
    pass


@dataclass(frozen=True)
class Prediction:
    request_id: str
    project: str
    entity_id: str
    model_version: int | None
    feature_names: list[str]
    values: list[float]
    predicted: str | None
    served_at: datetime
    traceparent: str | None = None  # the span that served it


def check(spec: ModelProject, feedback: FeedbackSubmitted) -> None:
    if feedback.label not in spec.label.classes:
        raise InvalidFeedback(f"label: {feedback.label!r} is not one of {spec.label.classes}")


def join(
    prediction: Prediction, feedback: FeedbackSubmitted, labeled_at: datetime
) -> FeedbackRecorded:
    if prediction.project != feedback.project:
        raise InvalidFeedback(
            f"request {feedback.request_id} belongs to project "
            f"{prediction.project!r}, not {feedback.project!r}"
        )
    return FeedbackRecorded(
        feedback_id=feedback.feedback_id,
        request_id=feedback.request_id,
        project=feedback.project,
        entity_id=prediction.entity_id,
        model_version=prediction.model_version,
        feature_names=prediction.feature_names,
        values=prediction.values,
        predicted_label=prediction.predicted,
        label=feedback.label,
        correct=prediction.predicted == feedback.label,
        predicted_at=prediction.served_at,
        labeled_at=labeled_at,
    )


def expired(received_at: datetime, now: datetime, horizon_s: float) -> bool:
    return (now - received_at).total_seconds() > horizon_s
