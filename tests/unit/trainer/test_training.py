from datetime import UTC, datetime, timedelta

import numpy as np
import onnx
import pytest

from conveyor_contracts.project import (
    ALLOWED_ESTIMATORS,
    EstimatorSpec,
    PromotionPolicy,
    RetrainPolicy,
)
from conveyor_examples import load_project
from conveyor_trainer.domain import training
from conveyor_trainer.domain.policy import Paired, may_start, promotion, schedule_due
from tests.models import example_dataset

SPEC = load_project("fraud")


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    k = len(SPEC.feature_names())
    x = rng.normal(size=(n, k)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 3] > 0).astype(np.int64)
    return training.Dataset(x, y)


@pytest.mark.parametrize("class_path", ALLOWED_ESTIMATORS)
def test_every_allowed_estimator_exports_with_matching_probabilities(class_path):
    params = {"n_estimators": 20} if "Forest" in class_path or "Boosting" in class_path else {}
    spec = SPEC.model_copy(
        update={
            "estimator": SPEC.estimator.model_copy(
                update={"class_path": class_path, "params": params}
            )
        }
    )
    candidate = training.train(spec, _data(), 0.25)
    assert candidate.failure is None and candidate.onnx_max_diff <= training.ONNX_TOLERANCE
    assert candidate.metrics["accuracy"] > 0.8
    model = onnx.load_from_string(candidate.onnx)
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    assert candidate.signature["classes"] == ["legit", "fraud"]
    assert len(candidate.profile["sample"]) == 600


@pytest.mark.parametrize("class_path", ALLOWED_ESTIMATORS)
@pytest.mark.parametrize("example", ["wine", "fraud"])
def test_every_allowed_estimator_passes_parity_on_an_examples_data_with_default_settings(
    example, class_path
):
    # As an experiment's variant names it (`conveyor experiment wine -v '{"class_path": ...}'`):
    # default parameters, a StandardScaler before the estimator. Counts and integer-valued
    # measurements put values on the trees' thresholds: the export must scale them exactly as
    # scikit-learn does, or the ONNX model answers differently.
    spec, data = example_dataset(example)
    variant = EstimatorSpec(class_path=class_path, seed=spec.estimator.seed)
    spec = spec.model_copy(update={"estimator": variant})
    holdout_fraction = spec.policies.retrain.holdout_fraction
    candidate = training.train(spec, data, holdout_fraction)
    assert candidate.failure is None, candidate.failure
    assert candidate.onnx_max_diff <= training.ONNX_TOLERANCE
    assert candidate.metrics["accuracy"] > 0.8
    # On every row, not only the holdout: the same fit (same seed) answers as its export does.
    fit_set, _ = data.split(holdout_fraction)
    pipeline = training.build_pipeline(spec).fit(fit_set.x, fit_set.y)
    exported = training.onnx_probabilities(candidate.onnx, data.x)
    assert np.abs(exported - pipeline.predict_proba(data.x)).max() <= training.ONNX_TOLERANCE


def test_the_split_is_by_time_and_the_holdout_is_newest():
    data = training.Dataset(np.arange(10, dtype=np.float32).reshape(10, 1), np.arange(10))
    fit, holdout = data.split(0.3)
    assert fit.y.tolist() == list(range(7)) and holdout.y.tolist() == [7, 8, 9]


def test_a_perturbed_onnx_model_fails_the_gate():
    candidate = training.train(SPEC, _data(), 0.25)
    model = onnx.load_from_string(candidate.onnx)
    classifier = next(n for n in model.graph.node if n.op_type == "LinearClassifier")
    coefficients = next(a for a in classifier.attribute if a.name == "coefficients")
    coefficients.floats[0] += 0.5  # nudge one coefficient of the exported model
    tampered = model.SerializeToString()
    x = candidate.holdout.x
    diff = float(
        np.abs(
            training.onnx_probabilities(tampered, x)
            - training.onnx_probabilities(candidate.onnx, x)
        ).max()
    )
    assert training.parity_failure(diff) is not None
    assert "differ from scikit-learn's" in training.parity_failure(diff)
    assert training.parity_failure(1e-7) is None


def test_too_few_rows_or_one_class_is_refused():
    with pytest.raises(training.TrainingRefused):
        training.dataset(SPEC, [([0.0] * 11, "legit")] * 10)
    one_class = training.Dataset(np.zeros((100, 11), np.float32), np.zeros(100, np.int64))
    with pytest.raises(training.TrainingRefused):
        training.train(SPEC, one_class, 0.25)


def test_promotion_gate():
    auto = PromotionPolicy(mode="auto", metric="accuracy", min_metric=0.6)
    assert promotion(auto, {"accuracy": 0.9}, None, None).promote
    assert not promotion(auto, {"accuracy": 0.5}, None, None).promote
    assert promotion(auto, {"accuracy": 0.9}, {"accuracy": 0.7}, 1).promote
    worse = promotion(auto, {"accuracy": 0.7}, {"accuracy": 0.7}, 1)
    assert not worse.promote and "not better" in worse.reason
    margin = PromotionPolicy(min_improvement=0.05)
    assert not promotion(margin, {"accuracy": 0.74}, {"accuracy": 0.7}, 1).promote
    approval = PromotionPolicy(mode="approval")
    held = promotion(approval, {"accuracy": 0.9}, {"accuracy": 0.7}, 1)
    assert not held.promote and held.needs_approval and "requires approval" in held.reason
    refused = promotion(approval, {"accuracy": 0.6}, {"accuracy": 0.7}, 1)
    assert not refused.needs_approval  # a candidate that fails the gate is not put to anyone


def test_a_candidate_must_be_significantly_better_row_for_row():
    policy = PromotionPolicy(max_p_value=0.05)
    # 100 holdout rows: the candidate alone right on 10, the champion alone right on 6.
    candidate = [True] * 10 + [False] * 6 + [True] * 70 + [False] * 14
    champion = [False] * 10 + [True] * 6 + [True] * 70 + [False] * 14
    close = promotion(policy, {"accuracy": 0.8}, {"accuracy": 0.76}, 1, Paired(candidate, champion))
    assert not close.promote and "not significantly better" in close.reason
    assert "p=0.23 (10 rows only it got right, 6 only the champion)" in close.reason
    # A holdout where the champion is never right alone: eight wins are significant.
    candidate = [True] * 8 + [True] * 74 + [False] * 18
    champion = [False] * 8 + [True] * 74 + [False] * 18
    clear = promotion(
        policy, {"accuracy": 0.82}, {"accuracy": 0.74}, 1, Paired(candidate, champion)
    )
    assert clear.promote and "McNemar p=0.0039" in clear.reason  # 0.5 ** 8
    # The test can be turned off.
    off = PromotionPolicy(max_p_value=1)
    loose = promotion(off, {"accuracy": 0.82}, {"accuracy": 0.74}, 1, Paired(candidate, champion))
    assert loose.promote and "McNemar" not in loose.reason
    assert Paired([True, False], [True, False]).mcnemar() == (0, 0, 1.0)


def test_a_regression_on_the_fixed_set_blocks_only_when_the_policy_says_so():
    candidate, champion = {"accuracy": 0.9}, {"accuracy": 0.8}
    on_set = ({"accuracy": 0.70}, {"accuracy": 0.75})
    recorded = promotion(PromotionPolicy(max_p_value=1), candidate, champion, 1, None, on_set)
    assert recorded.promote and "0.7000 vs 0.7500 on the regression set" in recorded.reason
    gated = PromotionPolicy(max_p_value=1, max_regression=0.02)
    blocked = promotion(gated, candidate, champion, 1, None, on_set)
    assert not blocked.promote and "regresses" in blocked.reason
    within = promotion(gated, candidate, champion, 1, None, ({"accuracy": 0.74}, on_set[1]))
    assert within.promote


def test_an_episode_waits_for_rows_cool_down_and_the_daily_budget():
    policy = RetrainPolicy(min_new_rows=100, cooldown_s=30, max_runs_per_day=3)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert not may_start(policy, 99, None, now, False).ready
    assert may_start(policy, 100, None, now, False).ready
    assert not may_start(policy, 500, now - timedelta(seconds=10), now, False).ready
    assert may_start(policy, 500, now - timedelta(seconds=31), now, False).ready
    assert not may_start(policy, 500, None, now, True).ready
    assert may_start(policy, 500, None, now, False, runs_last_day=2).ready
    spent = may_start(policy, 500, None, now, False, runs_last_day=3)
    assert not spent.ready and "daily budget: 3 of 3" in spent.reason


def test_a_schedule_is_due_once_no_run_started_for_every_s():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert not schedule_due(RetrainPolicy(), None, now)  # no schedule unless every_s is set
    hourly = RetrainPolicy(every_s=3600)
    assert schedule_due(hourly, None, now)
    assert not schedule_due(hourly, now - timedelta(seconds=3599), now)
    assert schedule_due(hourly, now - timedelta(seconds=3600), now)
