"""One predictor for every transport: a loaded model per project, swapped atomically."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np


class ServingError(Exception):
    """Root of serving's errors.

    ServingError
    ├── NoModel        no champion loaded for the project (or not that version)
    ├── InvalidInput   the inputs do not fit the model's signature
    └── UnusableModel  a version whose signature is missing or does not fit its model
    """


class NoModel(ServingError):
    pass


class InvalidInput(ServingError):
    pass


class UnusableModel(ServingError):
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
        return self._misfit(feature_names, len(values)) or (
            None
            if all(isinstance(v, int | float) and math.isfinite(v) for v in values)
            else "values must be finite numbers"
        )

    def _misfit(self, feature_names: Sequence[str], n_values: int) -> str | None:
        if feature_names != self.feature_names and list(feature_names) != self.feature_names:
            return (
                f"feature names {list(feature_names)[:4]}… do not match model v{self.version}"
                f"'s signature {self.feature_names[:4]}…"
            )
        if n_values != len(self.feature_names):
            return f"{n_values} values for {len(self.feature_names)} features"
        return None

    def score(
        self, inputs: Sequence[tuple[Sequence[str], Sequence[float]]]
    ) -> list[tuple[str, dict[str, float]] | str]:
        """Each input's (label, probabilities), or the reason it cannot be scored; one
        onnxruntime call for all that can."""
        out: list[tuple[str, dict[str, float]] | str] = [
            self._misfit(names, len(values)) or "" for names, values in inputs
        ]
        fit = [i for i, reason in enumerate(out) if not reason]
        if not fit:
            return out
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: refused below
            x = np.asarray([inputs[i][1] for i in fit], dtype=np.float32)
        finite = cast(np.ndarray, np.isfinite(x).all(axis=1))
        if not finite.all():
            flags = [bool(f) for f in finite]
            for i, ok in zip(fit, flags, strict=True):
                if not ok:
                    out[i] = "values must be finite numbers"
            fit = [i for i, ok in zip(fit, flags, strict=True) if ok]
            x = x[finite]
        if fit:
            labels, probabilities = self.predict(x)
            for i, label, p in zip(fit, labels, probabilities, strict=True):
                out[i] = (label, p)
        return out

    def predict(self, rows: np.ndarray) -> tuple[list[str], list[dict[str, float]]]:
        if rows.ndim != 2 or rows.shape[1] != len(self.feature_names):
            raise InvalidInput(
                f"expected shape [n, {len(self.feature_names)}], got {list(rows.shape)}"
            )
        labels, probabilities = self.session.predict(rows.astype(np.float32, copy=False))
        classes = self.classes
        names = [classes[i] for i in labels.astype(np.int64, copy=False).tolist()]
        probs = [dict(zip(classes, row, strict=True)) for row in probabilities.tolist()]
        return names, probs


CHAMPION = "champion"
CHALLENGER = "challenger"


def in_canary(key: str, share: float) -> bool:
    """Whether `key` falls in a canary of `share`: sticky (the same key, the same side, in
    every replica and after restarts) and monotone (a larger share keeps every key it had)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * 2**64


class Predictor:
    """The champion (and a challenger, when one is loaded) per project. Swapping replaces one
    reference; a batch that already took the old model finishes on it."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], LoadedModel] = {}

    def model(self, project: str, version: int | None = None) -> LoadedModel:
        """The champion, or the loaded model (champion or challenger) of `version`."""
        champion = self._models.get((project, CHAMPION))
        if champion is None:
            raise NoModel(f"no model is loaded for project {project!r}")
        if version is None or version == champion.version:
            return champion
        challenger = self._models.get((project, CHALLENGER))
        if challenger is not None and challenger.version == version:
            return challenger
        raise NoModel(
            f"project {project!r} serves version {champion.version}; "
            f"version {version} is not loaded"
        )

    def challenger(self, project: str) -> LoadedModel | None:
        return self._models.get((project, CHALLENGER))

    def swap(self, model: LoadedModel, alias: str = CHAMPION) -> LoadedModel | None:
        old = self._models.get((model.project, alias))
        self._models[(model.project, alias)] = model
        return old

    def current(self, project: str, alias: str) -> int | None:
        model = self._models.get((project, alias))
        return None if model is None else model.version

    def loaded(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for (project, alias), m in sorted(self._models.items()):
            if alias == CHAMPION:
                out.setdefault(project, {}).update(version=m.version, sha256=m.sha256)
            else:
                out.setdefault(project, {})[alias] = {"version": m.version, "sha256": m.sha256}
        return out
