"""Train a project's estimator, export it to ONNX, and check the export — no I/O here."""

from __future__ import annotations

import importlib
import inspect
import platform
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import sklearn
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from conveyor_contracts.project import ModelProject

ONNX_TOLERANCE = 1e-5
PROFILE_SAMPLE = 1000
MIN_ROWS = 50


class TrainingRefused(ValueError):
    """The data cannot make a model (too few rows, a single class, ...)."""


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # float32 [rows, features], oldest first
    y: np.ndarray  # int64 class indices

    def split(self, holdout_fraction: float) -> tuple[Dataset, Dataset]:
        """Time-based: the oldest rows train, the newest are held out."""
        cut = round(len(self.y) * (1 - holdout_fraction))
        return Dataset(self.x[:cut], self.y[:cut]), Dataset(self.x[cut:], self.y[cut:])


@dataclass
class Candidate:
    onnx: bytes
    metrics: dict[str, float]
    signature: dict[str, Any]
    profile: dict[str, Any]
    params: dict[str, Any]
    onnx_max_diff: float
    failure: str | None = None
    holdout: Dataset | None = field(default=None, repr=False)


def dataset(spec: ModelProject, rows: list[tuple[list[float], str]]) -> Dataset:
    classes = spec.label.classes
    known = [(v, classes.index(label)) for v, label in rows if label in classes]
    if len(known) < MIN_ROWS:
        raise TrainingRefused(f"{len(known)} labeled rows; at least {MIN_ROWS} are needed")
    x = np.asarray([v for v, _ in known], dtype=np.float32)
    y = np.asarray([c for _, c in known], dtype=np.int64)
    return Dataset(x, y)


def build_pipeline(spec: ModelProject) -> Pipeline:
    module, _, name = spec.estimator.class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    params = dict(spec.estimator.params)
    if "random_state" in inspect.signature(cls).parameters:
        params.setdefault("random_state", spec.estimator.seed)
    steps: list[tuple[str, Any]] = []
    if spec.estimator.standardize:
        steps.append(("scale", StandardScaler()))
    steps.append(("model", cls(**params)))
    return Pipeline(steps)


def evaluate(probabilities: np.ndarray, y: np.ndarray) -> dict[str, float]:
    predicted = probabilities.argmax(axis=1)
    metrics = {
        "accuracy": float(accuracy_score(y, predicted)),
        "f1": float(f1_score(y, predicted, pos_label=1, average="binary", zero_division=0))
        if probabilities.shape[1] == 2
        else float(f1_score(y, predicted, average="macro", zero_division=0)),
    }
    if probabilities.shape[1] == 2 and len(np.unique(y)) == 2:
        metrics["roc_auc"] = float(roc_auc_score(y, probabilities[:, 1]))
    return metrics


def onnx_probabilities(model: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["probabilities"], {"input": x.astype(np.float32)})[0])


def train(spec: ModelProject, data: Dataset, holdout_fraction: float) -> Candidate:
    """Fit on the older rows, judge on the newer ones, export, and compare the export."""
    fit_set, holdout = data.split(holdout_fraction)
    k = len(spec.label.classes)
    if len(np.unique(fit_set.y)) < 2:
        raise TrainingRefused("the training rows hold a single class")
    if len(holdout.y) == 0:
        raise TrainingRefused("no rows left for the holdout")
    pipeline = build_pipeline(spec).fit(fit_set.x, fit_set.y)
    estimator = pipeline.steps[-1][1]
    if len(estimator.classes_) != k:
        raise TrainingRefused(f"the training rows hold {len(estimator.classes_)} of {k} classes")
    n = data.x.shape[1]
    onnx_bytes = export(pipeline, n)
    sk = pipeline.predict_proba(holdout.x)
    ort_probs = onnx_probabilities(onnx_bytes, holdout.x)
    diff = float(np.abs(sk - ort_probs).max())
    metrics = evaluate(sk, holdout.y)
    return Candidate(
        onnx=onnx_bytes,
        metrics=metrics,
        signature=signature(spec, n),
        profile=profile(spec, data, sk, metrics["accuracy"]),
        params=_jsonable(estimator.get_params()),
        onnx_max_diff=diff,
        failure=parity_failure(diff),
        holdout=holdout,
    )


def export(pipeline: Pipeline, n: int) -> bytes:
    """The fitted pipeline as ONNX: float32 input `input` [None, n], outputs `label` and
    `probabilities` (no ZipMap), computing what scikit-learn computes bit for bit up to the
    estimator's own arithmetic."""
    estimator = pipeline.steps[-1][1]
    options: dict[int, dict[str, Any]] = {id(estimator): {"zipmap": False}}
    for _, step in pipeline.steps[:-1]:
        if isinstance(step, StandardScaler):
            # scikit-learn scales float32 features as (x - mean) / scale in float32; skl2onnx's
            # default Scaler node multiplies by the float32 reciprocal of the scale instead,
            # which is one unit in the last place off for about a third of the values. A tree
            # compares those values with thresholds that, where a feature takes evenly spaced
            # values (counts, integers, rounded measurements), often lie on a value itself, so
            # one unit sends a row down the other branch. `div` exports the same two operations.
            options[id(step)] = {"div": "div"}
    model = to_onnx(
        pipeline,
        initial_types=[("input", FloatTensorType([None, n]))],
        options=options,
        target_opset=18,
    )
    return bytes(model.SerializeToString())


def parity_failure(diff: float) -> str | None:
    if diff > ONNX_TOLERANCE:
        return (
            f"ONNX probabilities differ from scikit-learn's by {diff:.2e} on the holdout "
            f"(tolerance {ONNX_TOLERANCE:.0e})"
        )
    return None


def signature(spec: ModelProject, n: int) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "type": "float32", "shape": [None, n]}],
        "outputs": [
            {"name": "label", "type": "int64"},
            {"name": "probabilities", "type": "float32"},
        ],
        "feature_names": spec.feature_names(),
        "classes": list(spec.label.classes),
    }


def profile(
    spec: ModelProject, data: Dataset, holdout_probs: np.ndarray, accuracy: float
) -> dict[str, Any]:
    """What the monitor compares live traffic with: a sample of the training rows, the predicted
    class shares on the holdout, the holdout accuracy and the holdout's size (how sure that
    accuracy is).

    The rows are the float32 values the model was trained on, kept exactly (`precision`): the
    monitor brings live values to the same precision, so a discrete feature's value and its
    reference twin compare equal."""
    rng = np.random.default_rng(spec.estimator.seed)
    take = min(PROFILE_SAMPLE, len(data.y))
    idx = np.sort(rng.choice(len(data.y), size=take, replace=False))
    predicted = holdout_probs.argmax(axis=1)
    shares = {c: float((predicted == i).mean()) for i, c in enumerate(spec.label.classes)}
    return {
        "feature_names": spec.feature_names(),
        "sample": data.x[idx].astype(np.float64).tolist(),
        "precision": "float32",
        "predictions": shares,
        "holdout_accuracy": accuracy,
        "holdout_rows": len(predicted),
        "rows": len(data.y),
    }


def environment() -> dict[str, str]:
    import onnx
    import skl2onnx

    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "onnx": onnx.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | type(None)) else repr(v)
        for k, v in params.items()
    }
