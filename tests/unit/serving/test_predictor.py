import gc
import hashlib
import weakref

import numpy as np
import pytest

from conveyor_contracts.project import EstimatorSpec
from conveyor_examples import load_project
from conveyor_serving.adapters.onnx import OnnxSession
from conveyor_serving.domain.predictor import (
    InvalidInput,
    LoadedModel,
    NoModel,
    Predictor,
    in_canary,
)
from conveyor_serving.entrypoints.api import InferenceRequest, decode
from conveyor_trainer.domain import training
from tests.models import example_dataset, make_model

SPEC = load_project("fraud")
NAMES = SPEC.feature_names()


def _loaded(version=1, flip=False):
    m = make_model(SPEC, flip=flip)
    return LoadedModel("fraud", version, m.sha256, NAMES, ["legit", "fraud"], OnnxSession(m.onnx))


def test_predicts_class_names_and_probabilities():
    model = _loaded()
    x = np.zeros((2, len(NAMES)), np.float32)
    x[0, 0], x[1, 0] = 3.0, -3.0
    labels, probs = model.predict(x)
    assert labels == ["fraud", "legit"]
    assert probs[0]["fraud"] > 0.9 and abs(sum(probs[1].values()) - 1) < 1e-5


def test_inputs_are_checked_against_the_signature():
    model = _loaded()
    assert model.check(NAMES, [0.0] * len(NAMES)) is None
    assert "do not match" in model.check(NAMES[::-1], [0.0] * len(NAMES))
    assert "finite" in model.check(NAMES, [float("nan")] + [0.0] * (len(NAMES) - 1))
    with pytest.raises(InvalidInput):
        model.predict(np.zeros((1, 3), np.float32))


def test_swap_replaces_the_model_and_versions_are_checked():
    predictor = Predictor()
    with pytest.raises(NoModel):
        predictor.model("fraud")
    predictor.swap(_loaded(1))
    old = predictor.model("fraud")
    assert predictor.swap(_loaded(2, flip=True)) is old
    assert predictor.model("fraud").version == 2
    with pytest.raises(NoModel, match="version 1 is not loaded"):
        predictor.model("fraud", 1)


def test_oip_decoding():
    model = _loaded()
    n = len(NAMES)
    ok = InferenceRequest(
        inputs=[
            {"name": "input", "shape": [2, n], "datatype": "FP32", "data": [[0.0] * n, [1.0] * n]}
        ]
    )
    assert decode(ok, model).shape == (2, n)
    for bad, why in [
        ({"name": "x", "shape": [1, n], "datatype": "FP32", "data": [0.0] * n}, "named 'input'"),
        ({"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [0.0] * 3}, "shape"),
        ({"name": "input", "shape": [1, n], "datatype": "BYTES", "data": ["a"] * n}, "datatype"),
        ({"name": "input", "shape": [2, n], "datatype": "FP32", "data": [0.0] * n}, "values"),
    ]:
        with pytest.raises(InvalidInput, match=why):
            decode(InferenceRequest(inputs=[bad]), model)


def test_a_batch_is_scored_once_and_each_misfit_says_why():
    model = _loaded()
    good = [0.0] * len(NAMES)
    results = model.score(
        [
            (NAMES, good),
            (NAMES[::-1], good),
            (NAMES, [float("inf"), *good[1:]]),
            (NAMES, [1e39, *good[1:]]),  # beyond float32
            (NAMES, good[1:]),
            (NAMES, good),
        ]
    )
    assert isinstance(results[0], tuple) and results[0] == results[5]
    label, probabilities = results[0]
    assert label in model.classes and abs(sum(probabilities.values()) - 1) < 1e-5
    assert "do not match" in results[1]
    assert results[2] == results[3] == "values must be finite numbers"
    assert "values for" in results[4]


def test_a_swapped_out_model_is_released():
    predictor = Predictor()
    old = _loaded(1)
    predictor.swap(old)
    session = weakref.ref(old.session)
    in_flight = predictor.model("fraud")  # a batch that took v1 before the swap
    predictor.swap(_loaded(2, flip=True))
    assert in_flight.version == 1 and predictor.model("fraud").version == 2
    del old, in_flight
    gc.collect()
    assert session() is None  # nothing holds the old onnxruntime session any more


def test_the_canary_is_sticky_monotone_and_near_its_share():
    keys = [f"c-{i}" for i in range(10_000)]
    tenth = {k for k in keys if in_canary(k, 0.1)}
    assert 900 <= len(tenth) <= 1100
    assert tenth == {k for k in keys if in_canary(k, 0.1)}  # the same keys every time
    assert tenth <= {k for k in keys if in_canary(k, 0.3)}  # growing the share keeps them
    assert not any(in_canary(k, 0.0) for k in keys) and all(in_canary(k, 1.0) for k in keys)


def test_a_tree_ensemble_the_trainer_exports_answers_in_serving_as_scikit_learn_did():
    """Serving feeds the feature service's values as float32, as the trainer fit and checked the
    export: a forest behind a StandardScaler (an experiment's default) answers the same."""
    spec, data = example_dataset("wine")
    variant = EstimatorSpec(class_path="sklearn.ensemble.RandomForestClassifier", seed=11)
    spec = spec.model_copy(update={"estimator": variant})
    candidate = training.train(spec, data, 0.3)
    assert candidate.failure is None, candidate.failure
    fit_set, _ = data.split(0.3)
    expected = training.build_pipeline(spec).fit(fit_set.x, fit_set.y).predict_proba(data.x)

    names = spec.feature_names()
    classes = list(spec.label.classes)
    session = OnnxSession(candidate.onnx)
    model = LoadedModel(
        "wine", 1, hashlib.sha256(candidate.onnx).hexdigest(), names, classes, session
    )
    answers = model.score([(names, row) for row in data.x.tolist()])
    probabilities = np.asarray([[p[c] for c in classes] for _, p in answers])
    assert np.abs(probabilities - expected).max() <= training.ONNX_TOLERANCE
    assert [label for label, _ in answers] == [classes[i] for i in expected.argmax(axis=1)]
