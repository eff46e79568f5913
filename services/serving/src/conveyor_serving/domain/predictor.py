"""One predictor for every transport: a loaded model per project, swapped atomically."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class ServingError(Exception):
    """Root of serving's errors.

    ServingError
    ├── NoModel        no champion loaded for the project (or not that version)
    └── InvalidInput   the inputs do not fit the model's signature
    """


class NoModel(ServingError):
    pass


class InvalidInput(ServingError):
    pass


class Session(Protocol):
    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class LoadedModel:
    project: str
    version: int
    sha256: str
    feature_names: list[str]
    classes: list[str]
    session: Session

    def check(self, feature_names: Sequence[str], values: Sequence[float]) -> str | None:
        """Why these inputs cannot be scored by this model, or None."""
        if list(feature_names) != self.feature_names:
            return (
                f"feature names {list(feature_names)[:4]}… do not match model v{self.version}"
                f"'s signature {self.feature_names[:4]}…"
            )
        if len(values) != len(self.feature_names):
            return f"{len(values)} values for {len(self.feature_names)} features"
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return "values must be finite numbers"
        return None

    def predict(self, rows: np.ndarray) -> tuple[list[str], list[dict[str, float]]]:
        if rows.ndim != 2 or rows.shape[1] != len(self.feature_names):
            raise InvalidInput(
                f"expected shape [n, {len(self.feature_names)}], got {list(rows.shape)}"
            )
        labels, probabilities = self.session.predict(rows.astype(np.float32, copy=False))
        names = [self.classes[int(i)] for i in labels]
        probs = [
            {c: float(p) for c, p in zip(self.classes, row, strict=True)} for row in probabilities
        ]
        return names, probs


class Predictor:
    """The champion model per project. Swapping replaces one reference; a batch that already
    took the old model finishes on it."""

    def __init__(self) -> None:
        self._models: dict[str, LoadedModel] = {}

    def model(self, project: str, version: int | None = None) -> LoadedModel:
        model = self._models.get(project)
        if model is None:
            raise NoModel(f"no model is loaded for project {project!r}")
        if version is not None and version != model.version:
            raise NoModel(
                f"project {project!r} serves version {model.version}; "
                f"version {version} is not loaded"
            )
        return model

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        old = self._models.get(model.project)
        self._models[model.project] = model
        return old

    def loaded(self) -> dict[str, dict[str, Any]]:
        return {
            p: {"version": m.version, "sha256": m.sha256} for p, m in sorted(self._models.items())
        }
