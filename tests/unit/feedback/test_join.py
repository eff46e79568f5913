from datetime import UTC, datetime, timedelta

import pytest

from conveyor_contracts.events import FeedbackSubmitted
from conveyor_examples import load_project
from conveyor_feedback.domain.join import InvalidFeedback, Prediction, check, expired, join

SPEC = load_project("fraud")
T = datetime(2026, 1, 1, tzinfo=UTC)
PRED = Prediction("q1", "fraud", "c-1", 3, ["a"], [1.0], "fraud", T)


def test_join_carries_what_the_model_saw():
    e = join(
        PRED,
        FeedbackSubmitted(project="fraud", request_id="q1", label="legit"),
        T + timedelta(seconds=5),
    )
    assert (e.model_version, e.values, e.predicted_label, e.label) == (3, [1.0], "fraud", "legit")
    assert e.correct is False and e.predicted_at == T


def test_labels_must_be_classes_and_projects_must_match():
    with pytest.raises(InvalidFeedback, match="'maybe' is not one of"):
        check(SPEC, FeedbackSubmitted(project="fraud", request_id="q1", label="maybe"))
    with pytest.raises(InvalidFeedback, match="belongs to project 'fraud'"):
        join(PRED, FeedbackSubmitted(project="other", request_id="q1", label="legit"), T)


def test_horizon():
    assert not expired(T, T + timedelta(seconds=10), 10)
    assert expired(T, T + timedelta(seconds=10.1), 10)
